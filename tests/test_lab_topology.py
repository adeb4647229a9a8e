"""The lab's topology as built from the inventory (no namespaces: tasks.lab.topology only)."""

from __future__ import annotations

from tasks.lab.topology import build
from tests.inventories import host


def test_uplinks_take_the_inventory_interface_names(ref, plan_for):
    host(ref, "router01")["wan"]["interface"] = "igb0"
    host(ref, "vps01")["wan_interface"] = "em1"
    topology = build(plan_for(ref))
    assert topology.uplinks == {"router01": "igb0", "vps01": "em1"}
    assert topology.wan["vps01"] == ["203.0.113.10/29"]


def test_the_reference_topology(ref, plan_for):
    topology = build(plan_for(ref))
    assert topology.router == "router01"
    assert topology.managed == ("router01", "vps01")
    assert [(u.name, u.asn, u.tunnel) for u in topology.upstreams] == [
        ("ifog", 34927, True),
        ("lagrange", 209735, False),
    ]
    links = {(t.a.interface, t.site, t.b.host if t.b else None) for t in topology.tunnels}
    assert links == {("gre0", "ifog", "ifog"), ("gif0", "vps01", "vps01"), ("gif1", "dcgw01", None)}
    assert topology.controller == "198.51.100.100"  # the first trusted source
    assert topology.sample["own"] == ["2a06:9801:1c::/48"]
    assert topology.paths["2a0c:b640::/29"] == [3356, 23456]
    # Paths for bogon ASNs, and the real origins behind the RPKI kinds.
    kinds = ("bogon_asn", "valid", "not_found", "rpki_invalid_origin", "rpki_invalid_length")
    assert set(topology.paths) == {p for kind in kinds for p in topology.sample[kind]}
