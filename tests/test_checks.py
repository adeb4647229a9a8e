"""Convergence checks from plain facts: one line per failure, naming host and check."""

from __future__ import annotations

from typing import Any

from tasks.checks import evaluate, pings, proven
from tasks.facts import Interface
from tasks.plan import Plan
from tasks.preflight import Preflight
from tests.inventories import upstream

UP = ["UP", "POINTOPOINT", "RUNNING", "MULTICAST"]


def converged(plan: Plan, name: str) -> dict[str, Any]:
    hp = plan.host(name)
    interfaces = {
        t.interface: Interface(
            t.interface,
            flags=UP,
            tunnel=(str(t.source), str(t.destination)),
            inet6=[(str(t.address), str(t.peer), 128)],
            fib=t.fib,
            mtu=t.mtu,
            description=t.description,
            up=True,
        )
        for t in hp.tunnels
    }
    routes = {}
    for r in (*hp.routes, *hp.fib_routes):
        found = {"flags": "UP,DONE,STATIC"}
        if r.reject:
            found["flags"] += ",REJECT"
        elif r.gateway:
            found.update(gateway=str(r.gateway), flags="UP,GATEWAY,DONE,STATIC")
        else:
            found["interface"] = r.interface
        routes[(r.destination, r.fib)] = found
    for t in hp.tunnels:
        # The far end's host route, as the kernel adds it with the inner pair (no GATEWAY).
        routes[(f"{t.peer}/128", t.fib)] = {"interface": t.interface, "flags": "UP,HOST,DONE"}
        if t.fib:
            routes[(f"{t.peer}/128", 0)] = None
    peers = [str(u.peer) for u in plan.router.upstreams]
    return {
        "ifconfig": interfaces,
        "routes": routes,
        "pf_status": "Enabled",
        "pf_rules": ["pass out quick all flags S/SA keep state"],
        "pf_file_rules": ["pass out quick all flags S/SA keep state"],
        "pf_pending": False,
        "pings": {ping.key: True for ping in pings(plan, hp, Preflight())},
        "bgp": {p: {"state": "Established", "connections": 1} for p in peers},
        "advertised": {p: [str(plan.network.prefix)] for p in peers},
        "rpki": {"caches": {"127.0.0.1 3323": True}, "roas": 5},
        "rpki_invalid": [],
    }


def lines(plan: Plan, name: str, pre: Preflight | None = None, **changes: Any) -> list[str]:
    found = {**converged(plan, name), **changes}
    return [f.line for f in evaluate(plan, plan.host(name), pre or Preflight(), found)]


def test_converged_hosts_report_nothing(plan):
    assert lines(plan, "router01") == []
    assert lines(plan, "vps01") == []


def test_tunnel_with_old_endpoint(plan):
    found = converged(plan, "router01")
    found["ifconfig"]["gif0"].tunnel = ("198.51.100.10", "203.0.113.99")
    assert lines(plan, "router01", ifconfig=found["ifconfig"]) == [
        "router01: tunnel gif0 to vps01: endpoints are 198.51.100.10 -> 203.0.113.99, "
        "planned 198.51.100.10 -> 203.0.113.10"
    ]


def test_missing_and_down_tunnels(plan):
    found = converged(plan, "router01")
    del found["ifconfig"]["gre0"]
    found["ifconfig"]["gif1"].up = False
    assert lines(plan, "router01", ifconfig=found["ifconfig"]) == [
        "router01: tunnel gif1 to dcgw01: is down",
        "router01: tunnel gre0 to ifog: does not exist",
    ]


def test_downstream_tunnel_in_the_wrong_fib(plan):
    found = converged(plan, "vps01")
    found["ifconfig"]["gif0"].fib = 0
    found["ifconfig"]["gif0"].tunnelfib = 1
    assert lines(plan, "vps01", ifconfig=found["ifconfig"]) == [
        "vps01: tunnel gif0 to router01: is in FIB 0, planned FIB 1",
        "vps01: tunnel gif0 to router01: tunnelfib 1, planned 0",
    ]


def test_mtu_and_description_drift_is_reported_as_the_deploy_corrects_it(plan):
    found = converged(plan, "router01")
    found["ifconfig"]["gif0"].mtu = 1500
    found["ifconfig"]["gif0"].description = ""
    assert lines(plan, "router01", ifconfig=found["ifconfig"]) == [
        "router01: tunnel gif0 to vps01: MTU 1500, planned 1280",
        "router01: tunnel gif0 to vps01: description '', planned 'Tunnel-to-VPS'",
    ]


def test_a_grown_fib_needs_what_rc_d_routing_adds_at_boot(plan):
    """sysctl net.fibs=2 adds no route to FIB 1: without ::1 and the reject routes, a FIB whose
    default route is the tunnel sends link-local and multicast destinations into it."""
    found = converged(plan, "vps01")
    found["routes"][("::1/128", 1)] = None
    found["routes"][("fe80::/10", 1)] = None
    assert lines(plan, "vps01", routes=found["routes"]) == [
        "vps01: route ::1/128 -interface lo0 -fib 1: not in FIB 1 as planned",
        "vps01: route fe80::/10 -reject -fib 1: not in FIB 1 as planned",
    ]


def test_the_provider_s_ipv6_default_route_is_checked_when_the_inventory_names_it(ref, plan_for):
    from tests.inventories import host

    host(ref, "vps01")["wan_ipv6_gateway"] = "fe80::1"
    static = plan_for(ref)
    found = converged(static, "vps01")
    found["routes"][("default", 0)] = {"gateway": "fe80::1%vtnet0", "interface": "vtnet0"}
    assert lines(static, "vps01", routes=found["routes"]) == []
    found["routes"][("default", 0)] = None
    assert lines(static, "vps01", routes=found["routes"]) == [
        "vps01: the IPv6 default route in FIB 0 (via fe80::1 on vtnet0): missing"
    ]
    host(ref, "vps01")["wan_ipv6_gateway"] = "ra"
    learned = plan_for(ref)
    findings = evaluate(learned, learned.host("vps01"), Preflight(), found)
    assert [(f.line, f.waitable) for f in findings] == [
        (
            "vps01: the IPv6 default route in FIB 0 (from router advertisements on vtnet0): "
            "missing",
            True,
        )
    ]


def test_a_tunnel_moved_into_its_fib_without_its_routes(plan):
    """`ifconfig gif0 fib 1` on a live tunnel leaves its far end's route in FIB 0: the ping
    through FIB 1's default route (the tunnel) still answers, so only the lookup tells."""
    found = converged(plan, "vps01")
    found["routes"][("2a06:9801:1c:ffff::1/128", 1)] = None
    found["routes"][("2a06:9801:1c:ffff::1/128", 0)] = {"interface": "gif0", "flags": "UP,HOST"}
    assert lines(plan, "vps01", routes=found["routes"]) == [
        "vps01: tunnel gif0 to router01: no route to 2a06:9801:1c:ffff::1 in FIB 1",
        "vps01: tunnel gif0 to router01: its route to 2a06:9801:1c:ffff::1 is in FIB 0, planned "
        "FIB 1 (the tunnel was moved without re-creating it: the deploy re-creates it)",
    ]


def test_traffic_from_the_bgp_address_must_leave_through_the_tunnel(plan):
    found = converged(plan, "vps01")
    found["pings"][("2a06:9801:1c:ffff::1", "2a06:9801:1c:1000::1", 1)] = False
    assert lines(plan, "vps01", pings=found["pings"]) == [
        "vps01: traffic from 2a06:9801:1c:1000::1 does not leave through gif0 "
        "(ping 2a06:9801:1c:ffff::1 from it in FIB 1): no reply"
    ]


def test_routes_missing_or_wrong(plan):
    found = converged(plan, "router01")
    found["routes"][("2a06:9801:1c::/48", 0)] = None
    found["routes"][("2a06:9801:1c:1000::/64", 0)]["gateway"] = "2a06:9801:1c:ffff::4"
    assert lines(plan, "router01", routes=found["routes"]) == [
        "router01: route 2a06:9801:1c::/48 -reject: not in FIB 0 as planned",
        "router01: route 2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2: not in FIB 0 as planned",
    ]


def test_pf_disabled_or_different_rules(plan):
    assert lines(plan, "vps01", pf_status="Disabled") == ["vps01: pf is not enabled"]
    assert lines(plan, "vps01", pf_rules=[]) == [
        "vps01: pf has 0 rules loaded, /etc/pf.conf expands to 1 that differ"
    ]


def test_bgp_sessions_and_the_announcement(plan):
    found = converged(plan, "router01")
    found["bgp"]["2001:db8:100::ff"]["state"] = "Active"
    found["advertised"]["2001:db8:300::1"] = []
    findings = evaluate(plan, plan.host("router01"), Preflight(), found)
    assert [(f.line, f.waitable) for f in findings] == [
        (
            "router01: BGP ifog (2001:db8:300::1, AS34927): 2a06:9801:1c::/48 is not advertised",
            True,
        ),
        ("router01: BGP lagrange (2001:db8:100::ff, AS209735): Active, not Established", True),
    ]


def test_a_session_down_says_why_and_one_over_its_limit_is_not_waited_for(ref, plan_for):
    upstream(ref, "lagrange")["max_prefixes"] = 3
    plan = plan_for(ref)
    found = converged(plan, "router01")
    found["bgp"]["2001:db8:300::1"].update(
        state="Active", last_reset="BGP Notification received: Cease/Administrative Shutdown"
    )
    found["bgp"]["2001:db8:100::ff"].update(state="Idle", over_limit=True)
    findings = evaluate(plan, plan.host("router01"), Preflight(), found)
    assert [(f.line, f.waitable) for f in findings] == [
        (
            "router01: BGP ifog (2001:db8:300::1, AS34927): Active, not Established (last reset: "
            "BGP Notification received: Cease/Administrative Shutdown)",
            True,
        ),
        (
            "router01: BGP lagrange (2001:db8:100::ff, AS209735): Idle, not Established: it sent "
            "more than max_prefixes (3) routes that passed the filters; FRR reconnects every "
            "15 minutes until it sends fewer",
            False,
        ),
    ]


def test_an_admin_down_upstream_must_be_down_and_a_drained_one_established(ref, plan_for):
    upstream(ref, "lagrange")["shutdown"] = "admin"
    upstream(ref, "ifog")["shutdown"] = "graceful"
    plan = plan_for(ref)
    found = converged(plan, "router01")
    found["bgp"]["2001:db8:100::ff"].update(state="Idle", admin_shutdown=True)
    found["advertised"]["2001:db8:100::ff"] = []
    assert evaluate(plan, plan.host("router01"), Preflight(), found) == []
    found["bgp"]["2001:db8:100::ff"].update(state="Established", admin_shutdown=False)
    found["bgp"]["2001:db8:300::1"]["state"] = "Active"
    assert [f.line for f in evaluate(plan, plan.host("router01"), Preflight(), found)] == [
        "router01: BGP ifog (2001:db8:300::1, AS34927): Active, not Established",
        "router01: BGP lagrange (2001:db8:100::ff, AS209735): Established, not "
        "administratively shut down",
    ]


def test_an_unconfigured_unmanaged_site_is_a_warning(plan):
    found = converged(plan, "router01")
    found["pings"][("2a06:9801:1c:ffff::4", None, 0)] = False
    findings = evaluate(plan, plan.host("router01"), Preflight(), found)
    assert len(findings) == 1 and findings[0].warning and not findings[0].waitable
    assert "unmanaged dcgw01: is its side configured? see its settings.txt" in findings[0].line


def test_a_pending_reboot_is_reported_and_what_waits_for_it_is_not_checked(plan):
    found = converged(plan, "router01")
    del found["ifconfig"]["gre0"]
    pre = Preflight(securelevel=2, deferred_tunnels=("gre0",), needs_reboot=("if_gre",))
    assert lines(plan, "router01", pre, ifconfig=found["ifconfig"]) == [
        "router01: reboot: if_gre can only load at boot at securelevel 2"
    ]


def test_a_pending_unmanaged_site_is_not_pinged(ref, plan_for):
    ref["all"]["unmanaged_downstreams"][0]["pending"] = True
    plan = plan_for(ref)
    router = plan.host("router01")
    assert [p.key[0] for p in pings(plan, router, Preflight())] == ["2001:db8:300::1"]
    found = converged(plan, "router01")
    found["pings"].pop(("2a06:9801:1c:ffff::4", None, 0), None)
    assert evaluate(plan, router, Preflight(), found) == []


def test_what_a_converged_host_proved_is_said_in_one_line(ref, plan_for):
    plan = plan_for(ref)
    router01, vps01 = plan.host("router01"), plan.host("vps01")
    found = converged(plan, "router01")
    assert proven(plan, router01, Preflight(), evaluate(plan, router01, Preflight(), found)) == (
        "tunnels gif0, gif1, gre0 configured and up; dcgw01 answers through gif1, ifog answers "
        "through gre0; 3 routes in place; pf rules loaded; BGP ifog, lagrange Established, "
        "advertising 2a06:9801:1c::/48"
    )
    # An unmanaged site that does not answer is a warning, and not said to answer.
    found["pings"][("2a06:9801:1c:ffff::4", None, 0)] = False
    warnings = evaluate(plan, router01, Preflight(), found)
    assert [f.warning for f in warnings] == [True]
    assert "dcgw01" not in proven(plan, router01, Preflight(), warnings)
    assert proven(plan, vps01, Preflight(), []) == (
        "tunnel gif0 configured and up; router01 answers through gif0 in FIB 1, also from "
        "2a06:9801:1c:1000::1; 8 routes in place; pf rules loaded"
    )
    # What evaluate judges in maintenance: a drained session Established, a closed one down.
    upstream(ref, "ifog")["shutdown"] = "graceful"
    upstream(ref, "lagrange")["shutdown"] = "admin"
    ref["inventory"]["downstreams"] = []
    ref["inventory"]["retired"] = [
        (
            "vps01",
            {
                "ssh_hostname": "203.0.113.10",
                "wan_interface": "vtnet0",
                "wan_ipv6_gateway": "2001:db8:200::1",
            },
        )
    ]
    plan = plan_for(ref)
    assert proven(plan, plan.host("router01"), Preflight(), []) == (
        "tunnels gif1, gre0 configured and up; dcgw01 answers through gif1, ifog answers through "
        "gre0; 2 routes in place; pf rules loaded; BGP ifog Established, advertising "
        "2a06:9801:1c::/48; ifog in graceful shutdown; lagrange shut down as asked"
    )
    assert proven(plan, plan.host("vps01"), Preflight(retired_tunnels=("gif0",)), []) == (
        "retired; gif0 gone; IPv6 default route on vtnet0; pf rules loaded"
    )
