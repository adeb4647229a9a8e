"""What the rendered pf.conf files let in, read rule by rule (the lab's strict pfctl stand-in
parses every variant, so each also loads).

pf facts relied on (FreeBSD 14, sbin/pfctl and sys/netpfil/pf): plain ``self`` is expanded to
the addresses the host has when the rules load (pfctl_parser.c, host_if/ifa_lookup), ``(self)``
follows addresses added later (pf_if.c, pfi_dynaddr_setup: "self" is the "all" group);
``route-to`` on a ``pass out`` rule reroutes the host's own packets (pf.c, pf_route6), while
``rtable`` acts only before the route lookup, on inbound packets (pf.conf(5)).
"""

from __future__ import annotations

import re

from tasks.lab.pf import parse
from tasks.render import render_host
from tests.inventories import host


def pf_conf(plan, name: str) -> list[str]:
    text = render_host(plan, name)["/etc/pf.conf"]
    parse(text, "/etc/pf.conf", fibs=plan.host(name).fibs)  # pfctl would load it
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def rules(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"(pass|block|antispoof|match) ", line)]


def test_self_is_always_the_dynamic_form(ref, plan_for):
    plan = plan_for(ref)
    for name in ("router01", "vps01"):
        for line in pf_conf(plan, name):
            assert not re.search(r"(?<!\()\bself\b(?!\))", line), line


def test_router_icmp6_is_for_itself_or_the_link_and_forwarded_icmp6_is_source_checked(
    ref, plan_for
):
    """BCP 38: a downstream's forwarded ICMPv6 must meet the same source check as the rest of
    its traffic, so no ICMPv6 pass rule may match forwarded packets (RFC 4890, 4.4 for what
    the router itself needs)."""
    lines = rules(pf_conf(plan_for(ref), "router01"))
    icmp6 = [line for line in lines if "icmp6" in line]
    assert icmp6 == [
        "pass in quick inet6 proto icmp6 to (self) icmp6-type { unreach, toobig, timex, "
        "paramprob, echoreq, neighbrsol, neighbradv } keep state",
        "pass in quick inet6 proto icmp6 to ff02::/16 icmp6-type { neighbrsol, neighbradv, "
        "listqry } keep state",
    ]
    first_tunnel_rule = next(i for i, line in enumerate(lines) if "reply-to ($vps01_tun" in line)
    assert "from { $vps01_net, $vps01_inner } to any" in lines[first_tunnel_rule]
    # Nothing before a downstream's own rule passes traffic in from its tunnel to elsewhere.
    for line in lines[:first_tunnel_rule]:
        if line.startswith("pass in"):
            assert re.search(r"to (\(self\)|ff02::/16|\(\$\w+\))", line) or (
                "on { $ext_if, $ifog_tun }" in line
            ), line


def test_a_downstream_denies_inbound_by_default(ref, plan_for):
    lines = rules(pf_conf(plan_for(ref), "vps01"))
    assert "block in log all" in lines
    assert not [line for line in lines if re.match(r"pass in (log )?all", line)]
    passes = [line for line in lines if line.startswith("pass in")]
    assert passes == [
        "pass in quick on $tun_if reply-to ($tun_if $router_inner) inet6 proto icmp6 to $bgp_net "
        "icmp6-type { unreach, toobig, timex, paramprob, echoreq } keep state",
        "pass in quick on $tun_if reply-to ($tun_if $router_inner) inet6 proto tcp from "
        "<trusted_ipv6> to $host_v6 port 22 keep state",
        "pass in quick inet6 proto icmp6 to (self) icmp6-type { unreach, toobig, timex, "
        "paramprob, echoreq, neighbrsol, neighbradv } keep state",
        "pass in quick inet6 proto icmp6 to ff02::/16 icmp6-type { neighbrsol, neighbradv, "
        "listqry } keep state",
        "pass in quick inet proto icmp to (self) icmp-type { echoreq, unreach, timex } keep state",
        "pass in quick inet proto tcp from <trusted_ipv4> to (self) port 22 no state",
        "pass in quick inet6 proto tcp from <trusted_ipv6> to (self) port 22 no state",
        "pass in quick on $ext_if inet proto 41 from $router_v4 to $public_v4 keep state",
        "pass in quick on $lan_if inet6 from $bgp_net to any rtable 1 keep state",
        "pass in quick on $lan_if inet6 from $provider_net to any keep state",
        "pass in quick on $lan_if inet from $jail_net_v4 to any keep state",
    ]


def test_services_open_exactly_their_ports(ref, plan_for):
    host(ref, "vps01")["services"] = [
        {"proto": "tcp", "port": [443, 80]},
        {"proto": "tcp", "port": 25, "to": "2a06:9801:1c:1000::25", "from": ["2001:db8::/32"]},
        {"proto": "udp", "port": 53, "to": "2001:db8:200:0:1000::53"},
        {"proto": "tcp", "port": 8080, "to": "203.0.113.10", "from": ["192.0.2.1", "192.0.2.2"]},
    ]
    lines = rules(pf_conf(plan_for(ref), "vps01"))
    services = [line for line in lines if " port " in line and "port 22 " not in line]
    assert services == [
        # through the tunnel first, with reply-to: the host's own delegation address, a jail's
        "pass in quick on $tun_if reply-to ($tun_if $router_inner) inet6 proto tcp to $host_v6 "
        "port { 80, 443 } keep state",
        "pass in quick on $tun_if reply-to ($tun_if $router_inner) inet6 proto tcp from "
        "2001:db8::/32 to 2a06:9801:1c:1000::25 port 25 keep state",
        # then every other address of the host, a jail's provider address, the public IPv4
        "pass in quick proto tcp to (self) port { 80, 443 } keep state",
        "pass in quick on $ext_if inet6 proto udp to 2001:db8:200:0:1000::53 port 53 keep state",
        "pass in quick inet proto tcp from { 192.0.2.1, 192.0.2.2 } to $public_v4 port 8080 "
        "keep state",
    ]


def test_shared_ip_jails_leave_through_the_tunnel_by_route_to(ref, plan_for):
    """A shared-IP jail's packets are the host's own: they never arrive on the bridge, so the
    inbound ``rtable`` rule cannot see them; ``route-to`` on the way out does."""
    host(ref, "vps01")["lan"]["jails"] = "shared"
    plan = plan_for(ref)
    lines = rules(pf_conf(plan, "vps01"))
    assert not [line for line in lines if "$lan_if" in line]
    assert (
        "pass out quick on $ext_if route-to ($tun_if $router_inner) inet6 from $bgp_net to any "
        "keep state" in lines
    )
    assert lines.index("pass out quick all keep state") == len(lines) - 1
    assert "if_bridge" not in plan.host("vps01").modules  # VNET's modules only for VNET jails


def test_router_advertisements_pass_only_where_the_uplink_uses_them(ref, plan_for):
    assert not [line for line in pf_conf(plan_for(ref), "vps01") if "routeradv" in line]
    host(ref, "vps01")["wan_ipv6_gateway"] = "ra"
    icmp6 = [line for line in pf_conf(plan_for(ref), "vps01") if "routeradv" in line]
    assert len(icmp6) == 2  # unicast to the host, and to all-nodes (ff02::1)


def test_the_boot_fallback_lets_in_ssh_from_the_trusted_sources_and_nothing_else(ref, plan_for):
    """rc.d/pf loads /etc/pf-fallback.conf when /etc/pf.conf fails at boot; without it pf
    would run with no rules at all (pass everything) after its flush."""
    plan = plan_for(ref)
    for name in ("router01", "vps01"):
        files = render_host(plan, name)
        assert 'pf_fallback_rules_enable="YES"' in files["/etc/rc.conf.d/pf"]
        assert 'pf_fallback_rules_file="/etc/pf-fallback.conf"' in files["/etc/rc.conf.d/pf"]
        text = files["/etc/pf-fallback.conf"]
        lines = rules([line for line in text.splitlines() if line and line[0] != "#"])
        parse(text, "/etc/pf-fallback.conf", fibs=1)
        passes = [line for line in lines if line.startswith("pass in")]
        assert lines[0] == "block in log all"
        assert all("icmp" in line or "port 22 no state" in line for line in passes), passes
        assert [line for line in passes if "port 22" in line] == [
            "pass in quick inet proto tcp from <trusted_ipv4> to (self) port 22 no state",
            "pass in quick inet6 proto tcp from <trusted_ipv6> to (self) port 22 no state",
        ]
