"""Tunnel numbering is stable: adding or removing a downstream never renumbers another."""

from __future__ import annotations

from tasks.render import render_host
from tests.inventories import host


def _tunnels(plan):
    return {t.far_end: t for t in plan.host("router01").tunnels}


def _tunnel_lines(text: str, interface: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"ifconfig_{interface}")]


def test_adding_a_downstream_keeps_every_existing_tunnel(ref, plan_for):
    before = plan_for(ref)
    ref["inventory"]["downstreams"].append(
        (
            "vps02",
            {
                "ssh_hostname": "203.0.113.20",
                "tunnel": 2,
                "delegate": "2a06:9801:1c:1100::/64",
                "wan_interface": "vtnet0",
            },
        )
    )
    after = plan_for(ref)
    old, new = _tunnels(before), _tunnels(after)
    assert set(new) == set(old) | {"vps02"}
    for name in old:
        assert new[name] == old[name]
    assert (new["vps02"].interface, str(new["vps02"].address), str(new["vps02"].peer)) == (
        "gif2",
        "2a06:9801:1c:ffff::5",
        "2a06:9801:1c:ffff::6",
    )
    # vps01's own end is untouched too.
    assert after.host("vps01") == before.host("vps01")
    before_netif = render_host(before, "router01")["/etc/rc.conf.d/netif"]
    after_netif = render_host(after, "router01")["/etc/rc.conf.d/netif"]
    for interface in ("gif0", "gif1", "gre0"):
        assert _tunnel_lines(after_netif, interface) == _tunnel_lines(before_netif, interface)


def test_removing_a_downstream_keeps_the_others(ref, plan_for):
    before = plan_for(ref)
    ref["all"]["unmanaged_downstreams"] = []  # dcgw01 (gif1) leaves
    after = plan_for(ref)
    assert set(_tunnels(after)) == {"vps01", "ifog"}
    assert _tunnels(after)["vps01"] == _tunnels(before)["vps01"]
    assert after.host("vps01") == before.host("vps01")


def test_a_downstream_added_in_a_gap_takes_the_number_it_is_given(ref, plan_for):
    ref["all"]["unmanaged_downstreams"][0]["tunnel"] = 5  # dcgw01 moves to gif5 on purpose
    plan = plan_for(ref)
    dcgw = _tunnels(plan)["dcgw01"]
    assert (dcgw.interface, str(dcgw.address), str(dcgw.peer)) == (
        "gif5",
        "2a06:9801:1c:ffff::b",
        "2a06:9801:1c:ffff::c",
    )
    assert _tunnels(plan)["vps01"].interface == "gif0"


def test_inventory_order_does_not_matter(ref, plan_for):
    first = plan_for(ref)
    ref["inventory"]["downstreams"].reverse()
    ref["routers"]["upstreams"].reverse()
    host(ref, "router01")["extra_bgp_peers"] = list(
        reversed(host(ref, "router01")["extra_bgp_peers"])
    )
    second = plan_for(ref)
    assert render_host(first, "router01") == render_host(second, "router01")
