"""Pre-flight verdicts from plain facts: what stops the run before anything changes."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.facts import Interface
from tasks.inventory import load_inventory
from tasks.plan import Plan, load
from tasks.preflight import evaluate, rc_conf_conflicts, rendered_variables
from tasks.render import render_host
from tests.inventories import ROOT


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load(load_inventory(ROOT / "inventory.py", cwd=ROOT))


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
        "ifconfig": {"vtnet0": wan, "lo0": Interface("lo0")},
    }


def verdict(plan: Plan, name: str, **changes: Any):
    found = {**healthy(plan, name), **changes}
    return evaluate(plan, plan.host(name), render_host(plan, name), found)


def test_a_healthy_host_passes(plan):
    for name in ("router01", "vps01"):
        result = verdict(plan, name)
        assert result.problems == () and result.notes == ()


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
    assert verdict(plan, "vps01", ifconfig={"vtnet0": moved_wan}).problems == (
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
