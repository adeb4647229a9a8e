"""Pre-flight verdicts from plain facts: what stops the run before anything changes."""

from __future__ import annotations

from typing import Any

from tasks.facts import Interface, Socket
from tasks.plan import Plan
from tasks.preflight import evaluate, rc_conf_conflicts, rendered_variables
from tasks.render import render_host


def healthy(plan: Plan, name: str) -> dict[str, Any]:
    """The facts of a FreeBSD 14 host that ownas may deploy (nothing of ownas's on it yet)."""
    wan = (
        Interface("vtnet0", inet=["198.51.100.10"], inet6=[("2001:db8:100::96", None, 64)])
        if name == "router01"
        else Interface("vtnet0", inet=["203.0.113.10"])
    )
    return {
        "uname": {"system": "FreeBSD", "release": "14.3-RELEASE", "major": 14, "minor": 3},
        "sysctl": {"kern.securelevel": "-1", "net.fibs": "1"},
        "shell": "/bin/sh",
        "ssh_client": "198.51.100.100",
        "modules": list(plan.host(name).modules),
        "rc_conf_local": None,
        "rc_conf": {"hostname": name, "sshd_enable": "YES"},
        "netif": None,
        "routing": None,
        "ifconfig": {"vtnet0": wan, "lo0": Interface("lo0"), "bastille0": Interface("bastille0")},
        **(
            {}
            if name == "router01"
            else {
                "ipv6_default": None,
                "pf_status": None,
                "pf_rules": [],
                "sockets": [Socket("tcp", "*", 22, "sshd")],
            }
        ),
    }


def verdict(plan: Plan, name: str, **changes: Any):
    found = {**healthy(plan, name), **changes}
    return evaluate(plan, plan.host(name), render_host(plan, name), found)


def test_a_healthy_host_passes(plan):
    default = {"gateway": "fe80::1%vtnet0", "interface": "vtnet0", "flags": "UP,GATEWAY,DONE"}
    for name in ("router01", "vps01"):
        result = verdict(plan, name, **({"ipv6_default": default} if name == "vps01" else {}))
        assert result.problems == () and result.notes == ()


def test_a_downstream_without_an_ipv6_default_route_is_warned(plan):
    assert verdict(plan, "vps01").notes == (
        "vps01: no IPv6 default route in FIB 0: answers to what reaches the delegation through "
        "the tunnel are routed by FIB 0 before pf's reply-to sends them back through it, so "
        "they are dropped (pings from the host still work)",
    )


def test_freebsd_13_is_refused(plan):
    old = {"system": "FreeBSD", "release": "13.2-RELEASE", "major": 13, "minor": 2}
    assert verdict(plan, "router01", uname=old).problems == (
        "router01: FreeBSD 13.2-RELEASE: ownas needs FreeBSD 14.0 or later (pf.conf syntax, "
        "route(8) over netlink)",
    )


def test_securelevel_3_is_refused(plan):
    problems = verdict(plan, "router01", sysctl={"kern.securelevel": "3"}).problems
    assert problems[0].startswith("router01: securelevel 3 forbids changing pf rules")


def test_a_csh_login_is_refused(plan):
    problems = verdict(plan, "vps01", shell="/bin/csh").problems
    assert problems[0].startswith("vps01: the deploy user's login shell is /bin/csh")


def test_a_session_from_an_untrusted_address_is_refused(plan):
    assert verdict(plan, "router01", ssh_client="192.0.2.99").problems == (
        "router01: this SSH session comes from 192.0.2.99, which is not in trusted_sources: "
        "the new pf.conf would refuse your next connection",
    )
    assert verdict(plan, "router01", ssh_client="2001:db8:ffff:2::7").problems == ()


def test_a_foreign_rc_conf_local_is_not_overwritten(plan):
    problems = verdict(plan, "router01", rc_conf_local=['gateway_enable="YES"']).problems
    assert problems[0].startswith(
        "router01: /etc/rc.conf.local exists and was not written by ownas"
    )
    ours = ["# Managed by ownas: rendered from the inventory.", 'ipv6_gateway_enable="YES"']
    assert verdict(plan, "router01", rc_conf_local=ours).problems == ()


def test_the_hand_built_reference_router_must_be_migrated_first(plan):
    """The article's /etc/rc.conf holds what ownas's fragments now hold: named, not clobbered."""
    article = {
        "cloned_interfaces": "gif0 gif1 gre0",
        "ifconfig_gif0": "tunnel 198.51.100.10 203.0.113.10",
        "ifconfig_vtnet0": "inet 198.51.100.10/24 -rxcsum -txcsum -rxcsum6 -txcsum6 -lro -tso",
        "ipv6_static_routes": "myblock cloud dc",
        "ipv6_route_myblock": "2a06:9801:1c::/48 -reject",
        "ipv6_route_cloud": "2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2",
        "ipv6_route_dc": "2a06:9801:1c:2000::/62 2a06:9801:1c:ffff::4",
        "kld_list": "if_gif if_gre",
        "ipv6_gateway_enable": "YES",
    }
    ours = rendered_variables(render_host(plan, "router01"))
    assert rc_conf_conflicts(article, ours) == [
        "cloned_interfaces (both list gif0, gif1, gre0)",
        "ipv6_static_routes (both list myblock)",
        "kld_list (both list if_gre)",
        "ipv6_route_cloud (the same route as ownas's)",
        "ipv6_route_dc (the same route as ownas's)",
    ]
    # Same values are not conflicts (ifconfig_gif0, ifconfig_vtnet0, ipv6_route_myblock).
    problem = verdict(plan, "router01", rc_conf=article).problems[0]
    assert problem.startswith("router01: /etc/rc.conf also sets cloned_interfaces")
    assert problem.endswith("remove them from /etc/rc.conf (sysrc -x NAME) and rerun")


def test_a_live_uplink_is_never_renumbered(plan):
    moved_wan = Interface("vtnet0", inet=["203.0.113.77"])
    moved = {"vtnet0": moved_wan, "bastille0": Interface("bastille0")}
    assert verdict(plan, "vps01", ifconfig=moved).problems == (
        "vps01: vtnet0 (the uplink) does not have 203.0.113.10: ownas does not renumber a live "
        "uplink; correct the inventory or the host",
    )
    assert verdict(plan, "router01", ifconfig={}).problems == (
        "router01: vtnet0 (the WAN) does not exist",
    )


def test_missing_modules_at_securelevel_2_wait_for_a_reboot(plan):
    result = verdict(
        plan, "router01", sysctl={"kern.securelevel": "2"}, modules=["if_gif", "pf", "pflog"]
    )
    assert result.problems == ()
    assert result.deferred_tunnels == ("gre0",)
    assert result.needs_reboot == ("if_gre",)
    assert not result.pf_deferred
    assert result.notes[0].startswith(
        "router01: if_gre not in the kernel, and securelevel 2 forbids loading modules"
    )


def test_missing_modules_at_securelevel_minus_1_are_just_loaded(plan):
    result = verdict(plan, "router01", modules=["if_gif"])
    assert result.problems == () and result.needs_reboot == () and result.deferred_tunnels == ()
    assert result.missing_modules == ("if_gre", "pf", "pflog")


def test_what_the_previous_configuration_had_is_retired(plan):
    header = "# Managed by ownas: rendered from the inventory."
    netif = [
        header,
        'cloned_interfaces="${cloned_interfaces} gif0 gif1 gif2 gre0"',
        'ifconfig_lo0_alias0="inet6 2a06:9801:1c::9 prefixlen 64"',
    ]
    routing = [
        header,
        'ipv6_static_routes="${ipv6_static_routes} myblock vps01:gif0 old:gif2"',
        'ipv6_route_myblock="2a06:9801:1c::/48 -reject"',
        'ipv6_route_vps01="2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2"',
        'ipv6_route_old="2a06:9801:1c:3000::/64 2a06:9801:1c:ffff::6"',
    ]
    result = verdict(plan, "router01", netif=netif, routing=routing)
    assert result.retired_tunnels == ("gif2",)
    assert result.retired_routes == (("2a06:9801:1c:3000::/64", 0),)
    assert result.old_loopback == "2a06:9801:1c::9"


def test_a_fragment_ownas_did_not_write_retires_nothing(plan):
    result = verdict(plan, "router01", netif=['cloned_interfaces="gif7"'])
    assert result.retired_tunnels == ()


# --- what a default-deny pf.conf would close, and the uplink's IPv6 default route ------------

SOCKETS = [
    Socket("tcp", "*", 22, "sshd"),
    Socket("udp", "*", 123, "ntpd"),
    Socket("udp", "fe80::5054:ff:fe12:3456", 123, "ntpd"),
    Socket("tcp", "*", 8080, "nginx"),
    Socket("tcp", "2001:db8:200:0:1000::10", 8080, "nginx"),
]


def test_a_first_default_deny_that_would_close_listening_ports_is_refused(plan):
    assert verdict(plan, "vps01", sockets=SOCKETS).problems == (
        "vps01: pf would close tcp/8080, which listens today (nginx on *:8080, nginx on "
        "[2001:db8:200:0:1000::10]:8080): open it in services, or list 'tcp/8080' in may_close",
        "vps01: pf would close udp/123, which listens today (ntpd on *:123): open it in "
        "services, or list 'udp/123' in may_close",
    )


def test_listed_ports_may_close_or_stay_open(ref, plan_for):
    from tests.inventories import host

    host(ref, "vps01")["services"] = [{"proto": "tcp", "port": 8080}]
    host(ref, "vps01")["may_close"] = ["udp/123"]
    listed = plan_for(ref)
    assert verdict(listed, "vps01", sockets=SOCKETS).problems == ()


def test_once_default_deny_is_in_force_listening_ports_are_not_judged(plan):
    loaded = ["block drop in log all", "pass out quick all flags S/SA keep state"]
    assert (
        verdict(plan, "vps01", sockets=SOCKETS, pf_status="Enabled", pf_rules=loaded).problems == ()
    )
    # pf loaded but without a default deny (an older pf.conf that passed everything in)
    assert verdict(plan, "vps01", sockets=SOCKETS, pf_status="Enabled", pf_rules=[]).problems


RA_UPLINK = Interface(
    "vtnet0",
    inet=["203.0.113.10"],
    inet6=[("fe80::5054:ff:fe12:3456", None, 64)],
    nd6=["PERFORMNUD", "ACCEPT_RTADV", "AUTO_LINKLOCAL"],
)
BRIDGE = Interface("bastille0")
RA_DEFAULT = {"gateway": "fe80::1%vtnet0", "interface": "vtnet0", "flags": "UP,GATEWAY,DONE"}


def test_an_uplink_that_learns_its_default_route_from_ras_must_say_so(plan):
    found = {"ifconfig": {"vtnet0": RA_UPLINK, "bastille0": BRIDGE}, "ipv6_default": RA_DEFAULT}
    assert verdict(plan, "vps01", **found).problems == (
        "vps01: vtnet0 learns the IPv6 default route from router advertisements (via "
        "fe80::1%vtnet0), which IPv6 forwarding would drop: set wan_ipv6_gateway to 'ra' to "
        "keep them, or to the gateway's address",
    )


def test_the_inventory_s_ipv6_uplink_must_match_the_host(ref, plan_for):
    from tests.inventories import host

    ra_uplink = {"ifconfig": {"vtnet0": RA_UPLINK, "bastille0": BRIDGE}}
    host(ref, "vps01")["wan_ipv6_gateway"] = "ra"
    with_ra = plan_for(ref)
    assert verdict(with_ra, "vps01", **ra_uplink, ipv6_default=RA_DEFAULT).problems == ()
    assert verdict(with_ra, "vps01").problems == (
        "vps01: wan_ipv6_gateway is 'ra', but vtnet0 does not accept router advertisements "
        "today (no ACCEPT_RTADV in its nd6 options): set the gateway's address instead, or "
        "remove the field",
    )
    host(ref, "vps01")["wan_ipv6_gateway"] = "fe80::1"
    static = plan_for(ref)
    assert verdict(static, "vps01", ipv6_default=RA_DEFAULT).problems == ()
    assert verdict(static, "vps01").problems == (
        "vps01: the IPv6 default route in FIB 0 is missing, the inventory says wan_ipv6_gateway "
        "fe80::1: ownas does not change a live uplink's route; correct the inventory or the host",
    )


def test_the_jails_lan_must_exist(plan):
    found = healthy(plan, "vps01")
    del found["ifconfig"]["bastille0"]
    assert verdict(plan, "vps01", ifconfig=found["ifconfig"]).problems == (
        "vps01: bastille0 (the jails' LAN) does not exist: ownas routes to it but does not "
        'create it; set it up as README, "Jails", says and rerun',
    )
