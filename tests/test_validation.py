"""Every input ownas rejects: one clear line naming host and field, all problems at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.inventories import ROOT, host, upstream, write


def test_reference_inventory_is_valid(ref, plan_for):
    plan = plan_for(ref)
    assert sorted(plan.hosts) == ["router01", "vps01"]


# --- AS numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asn", "message"),
    [
        (0, "0 is reserved (RFC 7607)"),
        (23456, "23456 is AS_TRANS (RFC 6793)"),
        (64500, "64500 is in 64496-64511, for documentation (RFC 5398)"),
        (65001, "65001 is in 64512-65534, for private use (RFC 6996)"),
        (4200000001, "4200000001 is in 4200000000-4294967294, for private use (RFC 6996)"),
        (4294967296, "4294967296 is not between 0 and 4294967295"),
        ("201379", "'201379' is not a whole number"),
    ],
)
def test_own_asn_must_be_public(ref, problems_for, asn, message):
    ref["all"]["asn"] = asn
    assert any(p.startswith(f"group_data/all.py: asn: {message}") for p in problems_for(ref))


def test_upstream_asn_must_be_public(ref, problems_for):
    upstream(ref, "ifog")["asn"] = 64512
    assert (
        "router01.upstreams[ifog].asn: 64512 is in 64512-65534, for private use (RFC 6996); "
        "an AS on the Internet needs a public AS number" in problems_for(ref)
    )


def test_upstream_asn_must_not_be_our_own(ref, problems_for):
    upstream(ref, "lagrange")["asn"] = 201379
    assert (
        "router01.upstreams[lagrange].asn: 201379 is our own AS; upstreams are eBGP neighbors"
        in problems_for(ref)
    )


# --- the prefix -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (
            "2a06:9801:1c::1/48",
            "'2a06:9801:1c::1/48' has host bits set (the network is 2a06:9801:1c::/48)",
        ),
        ("2a06:9801:1c::", "'2a06:9801:1c::' is not an address with a prefix length"),
        ("2a06:9801:1c::/ 48", "'2a06:9801:1c::/ 48' is not an address with a prefix length"),
        ("198.51.100.0/24", "'198.51.100.0/24' is not an IPv6 network"),
        ("2001:db8:1::/48", "2001:db8:1::/48 is a bogon (overlaps 2001:db8::/32)"),
        ("fd00:1::/48", "fd00:1::/48 is not global unicast (outside 2000::/3)"),
        ("2a06:9801:1c::/56", "2a06:9801:1c::/56 is longer than /48: upstreams filter it"),
    ],
)
def test_own_prefix_must_be_a_routable_network(ref, problems_for, prefix, message):
    ref["all"]["prefix"] = prefix
    problems = problems_for(ref)
    assert any(p.startswith(f"group_data/all.py: prefix: {message}") for p in problems), problems


# --- delegations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delegate", "message"),
    [
        ("2a06:9801:1d::/64", "2a06:9801:1d::/64 is not inside 2a06:9801:1c::/48"),
        (
            "2a06:9801:1c:ffff::/64",
            "2a06:9801:1c:ffff::/64 overlaps the link subnet 2a06:9801:1c:ffff::/64",
        ),
        ("2a06:9801:1c::/60", "2a06:9801:1c::/60 overlaps router01.loopback 2a06:9801:1c::/64"),
        (
            "2a06:9801:1c:1000::/80",
            "2a06:9801:1c:1000::/80 is longer than /64; delegate a /64 or more",
        ),
        ("2a06:9801:1c::/48", "2a06:9801:1c::/48 is the whole prefix 2a06:9801:1c::/48"),
    ],
)
def test_delegation_must_fit_the_plan(ref, problems_for, delegate, message):
    host(ref, "vps01")["delegate"] = delegate
    assert f"vps01.delegate: {message}" in problems_for(ref)


def test_delegations_must_not_overlap(ref, problems_for):
    host(ref, "vps01")["delegate"] = "2a06:9801:1c:2001::/64"  # inside dcgw01's /62
    # Checked in tunnel order: vps01 (gif0) claims first, dcgw01 (gif1) is named.
    assert problems_for(ref) == [
        "dcgw01.delegate: 2a06:9801:1c:2000::/62 overlaps vps01.delegate 2a06:9801:1c:2001::/64"
    ]


# --- tunnels --------------------------------------------------------------------------------


def test_tunnel_numbers_are_unique(ref, problems_for):
    host(ref, "vps01")["tunnel"] = 1
    problems = problems_for(ref)
    assert "vps01.tunnel: 1 is also dcgw01's tunnel" in problems
    assert len([p for p in problems if "tunnel" in p]) == 1  # reported once, not per symptom


def test_tunnel_pair_must_lie_in_the_link_subnet(ref, problems_for):
    ref["all"]["link_subnet"] = "2a06:9801:1c:ffff::/126"  # room for ::1/::2 only
    problems = problems_for(ref)
    assert (
        "dcgw01.tunnel: 1 puts the inner pair outside the link subnet 2a06:9801:1c:ffff::/126"
        in problems
    )
    assert not any(p.startswith("vps01.tunnel") for p in problems)


def test_link_subnet_inside_the_prefix(ref, problems_for):
    ref["all"]["link_subnet"] = "2a06:9801:1d:ffff::/64"
    assert (
        "group_data/all.py: link_subnet: 2a06:9801:1d:ffff::/64 is not inside 2a06:9801:1c::/48"
        in problems_for(ref)
    )


def test_tunnel_number_range(ref, problems_for):
    host(ref, "vps01")["tunnel"] = 40000
    assert "vps01.tunnel: 40000 is not between 0 and 32767" in problems_for(ref)


def test_tunnel_mtu_range(ref, problems_for):
    host(ref, "vps01")["mtu"] = 1500
    assert "vps01.mtu: 1500 is not between 1280 and 1480" in problems_for(ref)


def test_gre_mtu_limit(ref, problems_for):
    upstream(ref, "ifog")["tunnel"]["mtu"] = 1480
    assert "router01.upstreams[ifog].tunnel.mtu: 1480 is above 1476 for gre" in problems_for(ref)


def test_endpoints_are_unique(ref, problems_for):
    ref["all"]["unmanaged_downstreams"][0]["endpoint"] = "203.0.113.10"
    assert problems_for(ref) == ["dcgw01.endpoint: 203.0.113.10 is also vps01's endpoint"]


def test_endpoint_from_a_host_name_needs_an_explicit_endpoint(ref, problems_for):
    host(ref, "vps01")["ssh_hostname"] = "vps01.example.net"
    assert (
        "vps01.endpoint: not set, and ssh_hostname is not usable as the tunnel endpoint: "
        "'vps01.example.net' is not an IP address" in problems_for(ref)
    )


# --- addresses and families -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "ipv4",
            "2001:db8:100::96/64",
            "'2001:db8:100::96/64' is not an IPv4 address with a prefix length",
        ),
        ("ipv4", "198.51.100.300/24", "'198.51.100.300/24' is not a valid network"),
        ("ipv4", "198.51.100.10", "'198.51.100.10' is not an address with a prefix length"),
        (
            "ipv6",
            "198.51.100.10/24",
            "'198.51.100.10/24' is not an IPv6 address with a prefix length",
        ),
        ("ipv4_gateway", "2001:db8:100::1", "'2001:db8:100::1' is not an IPv4 address"),
        ("ipv6_gateway", "198.51.100.1", "'198.51.100.1' is not an IPv6 address"),
        ("ipv4_gateway", "10.0.0.1", "10.0.0.1 is not on the WAN subnet 198.51.100.0/24"),
    ],
)
def test_wan_addresses(ref, problems_for, field, value, message):
    host(ref, "router01")["wan"][field] = value
    problems = problems_for(ref)
    assert problems[0].startswith(f"router01.wan.{field}: {message}")
    assert len(problems) == 1  # no follow-on noise from checks that use the field


def test_peer_must_be_ipv6(ref, problems_for):
    upstream(ref, "lagrange")["peer"] = "198.51.100.20"
    assert "router01.upstreams[lagrange].peer: '198.51.100.20' is not an IPv6 address" in (
        problems_for(ref)
    )


def test_peer_not_an_address(ref, problems_for):
    upstream(ref, "lagrange")["peer"] = "lagrange-rs1"
    assert "router01.upstreams[lagrange].peer: 'lagrange-rs1' is not an IP address" in (
        problems_for(ref)
    )


def test_upstream_peer_must_be_on_a_configured_link(ref, problems_for):
    upstream(ref, "lagrange")["peer"] = "2001:db8:999::1"
    assert (
        "router01.upstreams[lagrange].peer: 2001:db8:999::1 is not on a configured link "
        "(wan.ipv6 2001:db8:100::/64, and no tunnel)" in problems_for(ref)
    )


def test_upstream_inner_pair_stays_out_of_our_planned_space(ref, problems_for):
    """The upstream assigns its tunnel's inner pair; landing on a /128 pair ownas hands out
    (here vps01's) would put the same address on two tunnels."""
    ifog = upstream(ref, "ifog")
    ifog["peer"], ifog["tunnel"]["address"] = "2a06:9801:1c:ffff::2", "2a06:9801:1c:ffff::1"
    problems = problems_for(ref)
    subnet = "the link subnet 2a06:9801:1c:ffff::/64"
    assert f"router01.upstreams[ifog].peer: 2a06:9801:1c:ffff::2 is inside {subnet}" in problems
    assert (
        f"router01.upstreams[ifog].tunnel.address: 2a06:9801:1c:ffff::1 is inside {subnet}"
        in problems
    )
    ifog["peer"], ifog["tunnel"]["address"] = "2a06:9801:1c:1000::1", "2a06:9801:1c:1000::2"
    assert (
        "router01.upstreams[ifog].peer: 2a06:9801:1c:1000::1 is inside vps01's delegation "
        "2a06:9801:1c:1000::/64" in problems_for(ref)
    )


def test_upstream_tunnel_addresses_are_unique(ref, problems_for):
    tunnel = {"interface": "gif9", "endpoint": "198.51.100.77", "address": "2001:db8:300::2"}
    second = {"name": "route64", "asn": 212895, "peer": "2001:db8:400::1", "tunnel": tunnel}
    ref["routers"]["upstreams"].append(second)
    assert (
        "router01.upstreams[route64].tunnel.address: 2001:db8:300::2 is also our address on "
        "ifog's tunnel" in problems_for(ref)
    )


def test_extra_bgp_peer_must_be_on_the_wan(ref, problems_for):
    host(ref, "router01")["extra_bgp_peers"] = ["192.0.2.20"]
    assert "router01.extra_bgp_peers: 192.0.2.20 is not a neighbor on the WAN subnet" in (
        problems_for(ref)
    )


def test_downstream_loopback_inside_its_delegation(ref, problems_for):
    host(ref, "vps01")["loopback"] = "2a06:9801:1c:2000::1"
    assert "vps01.loopback: 2a06:9801:1c:2000::1 is not inside 2a06:9801:1c:1000::/64" in (
        problems_for(ref)
    )


# --- routing policy -------------------------------------------------------------------------


@pytest.mark.parametrize("community", ["34927:99999", "34927", "AS34927:9501", "34927:9501:1"])
def test_malformed_community(ref, problems_for, community):
    upstream(ref, "ifog")["communities"] = [community]
    assert (
        f"router01.upstreams[ifog].communities: {community!r} is not a community "
        "(ASN:value, each 0-65535)" in problems_for(ref)
    )


@pytest.mark.parametrize("community", ["209735:666", "70000:1"])
def test_a_community_of_a_32_bit_asn_points_to_large_communities(ref, problems_for, community):
    upstream(ref, "lagrange")["communities"] = [community]
    asn = community.split(":")[0]
    assert (
        f"router01.upstreams[lagrange].communities: {community!r} is not a community (ASN:value, "
        f"each 0-65535): AS{asn} needs 32 bits, so its communities are large ones: put "
        "ASN:value:value in large_communities" in problems_for(ref)
    )


def test_an_upstream_name_says_what_it_allows(ref, problems_for):
    upstream(ref, "lagrange")["name"] = "laGrange"
    assert (
        "router01.upstreams[laGrange].name: 'laGrange' is not a valid name (a lowercase letter, "
        "then lowercase letters, digits or '-', at most 31 characters)" in problems_for(ref)
    )


@pytest.mark.parametrize("community", ["65535:0", "65535:65281"])
def test_well_known_community(ref, problems_for, community):
    upstream(ref, "ifog")["communities"] = [community]
    assert (
        f"router01.upstreams[ifog].communities: {community!r} is a well-known community (RFC "
        "1997): for GRACEFUL_SHUTDOWN (65535:0) set shutdown: 'graceful' on the upstream"
        in problems_for(ref)
    )


def test_an_action_community_of_as_0_is_taken(ref, plan_for):
    """0:ASN ("do not announce to ASN") is common action-community practice; FRR prints it as
    numbers."""
    upstream(ref, "ifog")["communities"] = ["0:174"]
    ifog = next(u for u in plan_for(ref).router.upstreams if u.name == "ifog")
    assert ifog.communities == ((0, 174),)


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"shutdown": "drain"},
            "router01.upstreams[lagrange].shutdown: 'drain' is not one of 'graceful', 'admin'",
        ),
        (
            {"shutdown": "graceful", "shutdown_message": "back soon"},
            "router01.upstreams[lagrange].shutdown_message: is sent only when the session is "
            "closed: it needs shutdown: 'admin'",
        ),
        (
            {"shutdown": "admin", "shutdown_message": "two  spaces"},
            "router01.upstreams[lagrange].shutdown_message: 'two  spaces' is not a shutdown "
            "message (at most 128 letters, digits, spaces between words and . , : ; _ + / ( ) @ -)",
        ),
    ],
)
def test_upstream_maintenance_fields(ref, problems_for, fields, line):
    upstream(ref, "lagrange").update(fields)
    assert line in problems_for(ref)


def test_an_admin_shutdown_without_a_message_says_planned_maintenance(ref, plan_for):
    upstream(ref, "lagrange")["shutdown"] = "admin"
    lagrange = next(u for u in plan_for(ref).router.upstreams if u.name == "lagrange")
    assert lagrange.shutdown_message == "planned maintenance"


@pytest.mark.parametrize("community", ["34927:1", "34927:1:2:3", "4294967296:1:1"])
def test_malformed_large_community(ref, problems_for, community):
    upstream(ref, "ifog")["large_communities"] = [community]
    assert (
        f"router01.upstreams[ifog].large_communities: {community!r} is not a large community "
        "(ASN:value:value, each 0-4294967295)" in problems_for(ref)
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "0 is not between 1 and 10000000"),
        (10_000_001, "10000001 is not between 1 and 10000000"),
        ("250k", "'250k' is not a whole number"),
    ],
)
def test_max_prefixes(ref, problems_for, value, message):
    upstream(ref, "lagrange")["max_prefixes"] = value
    assert f"router01.upstreams[lagrange].max_prefixes: {message}" in problems_for(ref)


@pytest.mark.parametrize("prepend", [-1, 11, 100])
def test_prepend_count(ref, problems_for, prepend):
    upstream(ref, "lagrange")["prepend"] = prepend
    assert f"router01.upstreams[lagrange].prepend: {prepend} is not between 0 and 10" in (
        problems_for(ref)
    )


# --- interfaces -----------------------------------------------------------------------------


def test_router_interface_names_are_unique(ref, problems_for):
    upstream(ref, "ifog")["tunnel"]["interface"] = "gif0"
    assert (
        "router01.upstreams[ifog].tunnel.interface: gif0 is already the tunnel to vps01"
        in problems_for(ref)
    )


def test_downstream_interface_names_are_unique(ref, problems_for):
    host(ref, "vps01")["lan"]["interface"] = "vtnet0"
    assert "vps01.lan.interface: vtnet0 is already the WAN" in problems_for(ref)


def test_upstream_tunnel_must_be_gif_or_gre(ref, problems_for):
    upstream(ref, "ifog")["tunnel"]["interface"] = "wg0"
    assert "router01.upstreams[ifog].tunnel.interface: 'wg0' is not a gif or gre tunnel" in (
        problems_for(ref)
    )


# --- management and hardening ---------------------------------------------------------------


def test_trusted_sources_must_not_be_empty(ref, problems_for):
    ref["all"]["trusted_sources"] = []
    assert "group_data/all.py: trusted_sources: is empty" in problems_for(ref)


def test_trusted_sources_missing(ref, problems_for):
    del ref["all"]["trusted_sources"]
    assert "group_data/all.py: trusted_sources: is required" in problems_for(ref)


def test_trusted_source_must_not_be_everyone(ref, problems_for):
    ref["all"]["trusted_sources"] = ["::/0"]
    assert "group_data/all.py: trusted_sources: '::/0' would trust every address" in problems_for(
        ref
    )


def test_securelevel_3_is_refused(ref, problems_for):
    host(ref, "router01")["securelevel"] = 3
    assert any(
        p.startswith("router01.securelevel: 3 forbids changing pf rules") for p in problems_for(ref)
    )


# --- nothing reaches a shell ----------------------------------------------------------------


def _target(data, path: str) -> dict:
    """The dict that ``path`` names: "vps01", "vps01.lan", "router01.wan" or "upstream ifog"."""
    if path.startswith("upstream "):
        return upstream(data, path.split()[1])
    name, _, nested = path.partition(".")
    found = host(data, name)
    return found[nested] if nested else found


@pytest.mark.parametrize(
    ("path", "key", "value", "where"),
    [
        ("vps01", "description", "VPS $(reboot)", "vps01.description"),
        ("vps01", "description", 'a"b', "vps01.description"),
        ("vps01", "wan_interface", "vtnet0;reboot", "vps01.wan_interface"),
        ("vps01.lan", "interface", "`id`0", "vps01.lan.interface"),
        ("router01.wan", "ifconfig_options", ["-tso", "; reboot"], "router01.wan.ifconfig_options"),
        ("upstream ifog", "description", "x\ny", "router01.upstreams[ifog].description"),
        ("upstream ifog", "name", "if og", "router01.upstreams[if og].name"),
        ("vps01", "delegate", "2a06:9801:1c:1000::/64 -fib 0", "vps01.delegate"),
    ],
)
def test_no_value_can_inject_shell(ref, problems_for, path, key, value, where):
    _target(ref, path)[key] = value
    assert any(p.startswith(f"{where}: ") for p in problems_for(ref))


# --- structure ------------------------------------------------------------------------------


def test_unknown_nested_field_is_named_with_a_suggestion(ref, problems_for):
    upstream(ref, "lagrange")["prepnd"] = 2
    assert "router01.upstreams[lagrange].prepnd: unknown field (did you mean prepend?)" in (
        problems_for(ref)
    )


def test_misspelt_host_field_is_caught(ref, problems_for):
    host(ref, "vps01")["delegat"] = host(ref, "vps01").pop("delegate")
    problems = problems_for(ref)
    assert "vps01.delegat: unknown field (did you mean delegate?)" in problems
    assert "vps01.delegate: is required" in problems


def test_exactly_one_router(ref, problems_for):
    ref["inventory"]["routers"].append(("router02", dict(host(ref, "router01"))))
    assert "inventory.routers: needs exactly one BGP router (found router01, router02)" in (
        problems_for(ref)
    )


def test_every_problem_is_reported_at_once(ref, problems_for):
    ref["all"]["asn"] = 65001
    host(ref, "vps01")["delegate"] = "2a06:9801:1d::/64"
    host(ref, "vps01")["tunnel"] = 1
    upstream(ref, "lagrange")["prepend"] = 11
    upstream(ref, "ifog")["communities"] = ["34927:99999"]
    ref["all"]["trusted_sources"] = []
    problems = problems_for(ref)

    def where(line: str) -> str:  # "vps01.delegate", or "group_data/all.py: asn"
        head, rest = line.split(": ", 1)
        return f"{head}: {rest.split(':', 1)[0]}" if head == "group_data/all.py" else head

    assert {where(p) for p in problems} == {
        "group_data/all.py: asn",
        "group_data/all.py: trusted_sources",
        "vps01.delegate",
        "vps01.tunnel",
        "router01.upstreams[lagrange].prepend",
        "router01.upstreams[ifog].communities",
    }


def test_cli_check_exits_1_with_one_line_per_problem_and_no_traceback(ref, tmp_path):
    host(ref, "vps01")["delegate"] = "2a06:9801:1d::/64"
    upstream(ref, "lagrange")["prepend"] = 11
    inventory = write(tmp_path, ref)
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "check", "--inventory", str(inventory)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "router01.upstreams[lagrange].prepend: 11 is not between 0 and 10",
        "vps01.delegate: 2a06:9801:1d::/64 is not inside 2a06:9801:1c::/48",
        "2 problems in the inventory",
    ]


def test_cli_names_a_missing_inventory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "check", "--inventory", "nope.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "nope.py: no such inventory file"
    assert "Traceback" not in result.stderr


def _check_in(directory, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "check", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_reports_a_python_error_in_the_inventory_with_its_line_and_no_traceback(tmp_path):
    (tmp_path / "inventory.py").write_text("# hosts\nrouters = [(\n")
    result = _check_in(tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "inventory.py:2: cannot be loaded: '(' was never closed",
        "1 problem in the inventory",
    ]
    assert "Traceback" not in result.stderr


def test_a_name_error_names_the_file_and_line_the_user_wrote(ref, tmp_path):
    inventory = write(tmp_path, ref)
    lines = inventory.read_text().splitlines()
    lines.insert(0, "extra = [undefined_helper()]")
    inventory.write_text("\n".join(lines) + "\n")
    result = _check_in(tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "inventory.py:1: cannot be loaded: NameError: name 'undefined_helper' is not defined",
        "1 problem in the inventory",
    ]
    # An inventory that runs this one (the lab's does, by runpy) names this file, not its own.
    wrapper = tmp_path / "lab" / "inventory.py"
    wrapper.parent.mkdir()
    wrapper.write_text(f"import runpy\n\n_source = runpy.run_path({str(inventory)!r})\n")
    result = _check_in(tmp_path / "lab", "--inventory", "inventory.py")
    assert result.stderr.splitlines()[0] == (
        f"{inventory}:1: cannot be loaded: NameError: name 'undefined_helper' is not defined"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("body", "line"),
    [
        # pyinfra refuses the data after running the file: the file, no line of ownas's.
        (
            'routers = [("router01", None)]\n',
            "inventory.py: cannot be loaded: 'NoneType' object is not iterable",
        ),
        # A syntax error in code the inventory evaluates: the inventory's line that ran it.
        (
            'x = 1\ny = eval("1+")\n',
            "inventory.py:2: cannot be loaded: SyntaxError: invalid syntax (<string>, line 1)",
        ),
    ],
)
def test_an_error_is_named_where_the_user_can_fix_it(tmp_path, body, line):
    (tmp_path / "inventory.py").write_text(body)
    result = _check_in(tmp_path)
    assert result.stderr.splitlines() == [line, "1 problem in the inventory"]


def test_an_inventory_imports_its_own_helpers_as_pyinfra_lets_it(ref, tmp_path):
    inventory = write(tmp_path, ref)
    (tmp_path / "sites.py").write_text("VPS = '203.0.113.10'\n")
    inventory.write_text("from sites import VPS\n" + inventory.read_text())
    result = _check_in(tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_group_data_error_names_its_file_and_line(ref, tmp_path):
    write(tmp_path, ref)
    with open(tmp_path / "group_data" / "all.py", "a") as all_py:
        all_py.write("trusted_sources = trusted + ['192.0.2.1']\n")
    count = len((tmp_path / "group_data" / "all.py").read_text().splitlines())
    result = _check_in(tmp_path)
    assert result.stderr.splitlines() == [
        f"group_data/all.py:{count}: cannot be loaded: NameError: name 'trusted' is not defined",
        "1 problem in the inventory",
    ]


# --- what FreeBSD cannot do, and the downstreams' new fields -------------------------------


def test_gtsm_on_an_ipv6_session_is_refused(ref, problems_for):
    upstream(ref, "ifog")["ttl_security"] = True
    assert problems_for(ref) == [
        "router01.upstreams[ifog].ttl_security: FreeBSD cannot enforce GTSM on an IPv6 session "
        "(it has no IPV6_MINHOPCOUNT): FRR's ttl-security would never open the session itself "
        "and would accept the peer's without a hop-limit check; remove the field (pf admits "
        "TCP 179 only from this peer on its interface)"
    ]


def test_gtsm_off_is_accepted_and_renders_nothing(ref, plan_for):
    upstream(ref, "ifog")["ttl_security"] = False
    plan = plan_for(ref)
    assert not plan.router.upstreams[0].ttl_security


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "wan_ipv6_gateway",
            "slaac",
            "'slaac' is neither an IPv6 gateway address nor 'ra' (router advertisements)",
        ),
        ("may_close", ["ntp"], "'ntp' is not PROTO/PORT (like udp/123 or tcp/25)"),
        ("services", [{"proto": "sctp", "port": 1}], None),
    ],
)
def test_downstream_field_values(ref, problems_for, field, value, message):
    host(ref, "vps01")[field] = value
    problems = problems_for(ref)
    if message:
        assert problems == [f"vps01.{field}: {message}"]
    else:
        assert problems == ["vps01.services[0].proto: 'sctp' is not one of 'tcp', 'udp'"]


def test_jail_style_is_vnet_or_shared(ref, problems_for):
    host(ref, "vps01")["lan"]["jails"] = "bridge"
    assert problems_for(ref) == ["vps01.lan.jails: 'bridge' is not one of 'vnet', 'shared'"]


def test_services_open_ports_only_on_the_host_and_its_jails(ref, problems_for):
    host(ref, "vps01")["services"] = [
        {"proto": "tcp", "port": 443, "to": "2a06:9801:1c:2000::10"},  # dcgw01's delegation
        {"proto": "tcp", "port": 80, "to": "10.254.254.10"},  # a NATed jail
        {"proto": "udp", "port": [0, 53]},
        {"proto": "tcp", "port": 25, "to": "2a06:9801:1c:1000::25", "from": ["192.0.2.1"]},
        {"proto": "tcp", "prot": 22},
    ]
    assert problems_for(ref) == [
        # each value on its own first (tasks.model), then what relates fields (tasks.plan)
        "vps01.services[2].port: 0 is not between 1 and 65535",
        "vps01.services[4].prot: unknown field (did you mean proto?)",
        "vps01.services[4].port: is required",
        "vps01.services[0].to: 2a06:9801:1c:2000::10 is not inside 2a06:9801:1c:1000::/64 "
        "or 2001:db8:200:0:1000::/68",
        "vps01.services[1].to: 10.254.254.10 is not this host's IPv4 203.0.113.10: the jails' "
        "IPv4 is NATed and ownas opens no port to it; use 'host' or a jail's IPv6 address",
        "vps01.services[3].from: has addresses of another family than 2a06:9801:1c:1000::25",
    ]


# --- retired and pending downstreams ---------------------------------------------------------


def test_a_retired_host_still_in_the_network_is_refused(ref, problems_for):
    ref["inventory"]["retired"] = [("vps01", {"ssh_hostname": "203.0.113.10"})]
    assert (
        "vps01: is in retired and still in the network: take it out of downstreams (or "
        "unmanaged_downstreams) to retire it" in problems_for(ref)
    )


def test_a_retired_host_is_planned_with_nothing_of_the_network(ref, plan_for):
    ref["inventory"]["downstreams"] = []
    ref["inventory"]["retired"] = [("vps01", {"ssh_hostname": "203.0.113.10"})]
    plan = plan_for(ref)
    vps01 = plan.host("vps01")
    assert (vps01.role, vps01.tunnels, vps01.routes, vps01.loopback) == ("retired", (), (), None)
    assert [r.name for r in plan.network.retired] == ["vps01"]
    assert [t.far_end for t in plan.host("router01").tunnels] == ["dcgw01", "ifog"]


@pytest.mark.parametrize(
    ("name", "field", "value", "line"),
    [
        (
            "vps01",
            "wan",
            {"interface": "vtnet0"},
            "vps01.wan: not a field of a downstream (router fields: wan, router_id, upstreams, "
            "extra_bgp_peers, rpki)",
        ),
        (
            "vps01",
            "extra_bgp_peers",
            ["198.51.100.20"],
            "vps01.extra_bgp_peers: not a field of a downstream (router fields: wan, router_id, "
            "upstreams, extra_bgp_peers, rpki)",
        ),
        (
            "router01",
            "tunnel",
            3,
            "router01.tunnel: not a field of the router (downstream fields: endpoint, tunnel, "
            "delegate, description, mtu, interface, fib, wan_interface, lan, wan_ipv6_gateway, "
            "services, may_close)",
        ),
        (
            "router01",
            "delegate",
            "2a06:9801:1c:5000::/64",
            "router01.delegate: not a field of the router (downstream fields: endpoint, tunnel, "
            "delegate, description, mtu, interface, fib, wan_interface, lan, wan_ipv6_gateway, "
            "services, may_close)",
        ),
    ],
)
def test_a_field_of_the_other_kind_of_host_is_named(ref, problems_for, name, field, value, line):
    host(ref, name)[field] = value
    assert line in problems_for(ref)


def test_a_typo_in_group_data_all_is_reported_once_naming_the_file(ref, problems_for):
    ref["all"]["trusted_source"] = ["198.51.100.100"]
    assert [p for p in problems_for(ref) if "trusted_source:" in p] == [
        "group_data/all.py: trusted_source: unknown field (did you mean trusted_sources?)"
    ]


def _endpoints(ref, wan: str, vps01: str, dcgw01: str, ifog: str) -> None:
    """Put the router's WAN (a /24, its .1 the gateway) and the three far ends elsewhere."""
    gateway = wan.rsplit(".", 1)[0] + ".1"
    host(ref, "router01")["wan"].update(ipv4=f"{wan}/24", ipv4_gateway=gateway)
    host(ref, "router01")["extra_bgp_peers"] = []
    host(ref, "vps01")["ssh_hostname"] = vps01
    ref["all"]["unmanaged_downstreams"][0]["endpoint"] = dcgw01
    upstream(ref, "ifog")["tunnel"]["endpoint"] = ifog


def test_tunnel_endpoints_the_internet_does_not_route_are_warned_about_not_refused(ref, plan_for):
    _endpoints(ref, "100.64.0.10", vps01="10.20.30.40", dcgw01="192.88.99.1", ifog="198.18.0.1")
    assert plan_for(ref).warnings == (
        "router01.wan.ipv4: 100.64.0.10 is in carrier-grade NAT's shared space (RFC 6598), and "
        "every downstream (and settings.txt) gets it as its tunnel's far end: not routed on the "
        "Internet; they reach it only across a network they share, not through NAT",
        "router01.upstreams[ifog].tunnel.endpoint: 198.18.0.1 is a benchmarking address "
        "(RFC 2544): not routed on the Internet; write the address router01 reaches ifog at",
        "dcgw01.endpoint: 192.88.99.1 is the deprecated 6to4 relay anycast (RFC 7526): not routed "
        "on the Internet; write the address router01 reaches it at (its public one if it is "
        "behind NAT)",
        "vps01.endpoint: 10.20.30.40 is a private address (RFC 1918): not routed on the "
        "Internet, and vps01 is the tunnel's source there too: router01 must reach it at this "
        "very address, across a network both share, not through NAT",
    )


def test_a_private_network_the_router_s_wan_shares_is_no_warning(ref, plan_for):
    # Every far end on the router's own (private) WAN subnet: both ends share it, nothing to say.
    _endpoints(ref, "10.1.0.10", vps01="10.1.0.20", dcgw01="10.1.0.30", ifog="10.1.0.40")
    assert plan_for(ref).warnings == ()
    # Public addresses everywhere: nothing either.
    _endpoints(ref, "8.8.4.10", vps01="9.9.9.20", dcgw01="9.9.9.30", ifog="9.9.9.40")
    assert plan_for(ref).warnings == ()


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("0.1.2.3", "in 'this network' (RFC 791)"),
        ("240.0.0.1", "reserved (RFC 1112)"),
        ("255.255.255.255", "the limited broadcast address (RFC 919)"),
    ],
)
def test_an_address_that_is_never_a_destination_is_refused(ref, problems_for, address, what):
    ref["all"]["unmanaged_downstreams"][0]["endpoint"] = address
    assert problems_for(ref) == [f"dcgw01.endpoint: {address!r} cannot be used here: it is {what}"]


def test_an_interface_address_is_judged_whatever_its_prefix_length(ref, plan_for, problems_for):
    # A /31's lower address and a /32 have no host bits set: still an address to be usable.
    host(ref, "router01")["wan"].update(ipv4="0.0.0.0/31", ipv4_gateway="0.0.0.1")
    host(ref, "router01")["extra_bgp_peers"] = []
    assert "router01.wan.ipv4: '0.0.0.0' cannot be used here (unspecified, loopback or " in (
        "\n".join(problems_for(ref))
    )
    host(ref, "router01")["wan"].update(ipv4="198.51.100.0/31", ipv4_gateway="198.51.100.1")
    assert str(plan_for(ref).router.wan.ipv4) == "198.51.100.0/31"


def test_a_router_id_is_any_non_zero_dotted_quad(ref, plan_for, problems_for):
    # RFC 6286: a 32-bit number, not an address (the ASN as a dotted quad is common).
    host(ref, "router01")["router_id"] = "0.3.18.19"
    assert str(plan_for(ref).router.router_id) == "0.3.18.19"
    host(ref, "router01")["router_id"] = "0.0.0.0"
    assert problems_for(ref) == [
        "router01.router_id: '0.0.0.0' is not a router-id: BGP refuses 0.0.0.0 (RFC 6286)"
    ]
