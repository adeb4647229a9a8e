"""The generated frr.conf is parsed by real FRR 10 (Debian 13's frr, from the root that make test
builds: tasks/lab/debian13.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tasks.fields import bogons
from tasks.inventory import load_inventory
from tasks.lab import debian13
from tasks.plan import load
from tasks.policy import asn_regex, bogon_asn_filter
from tasks.render import render_host
from tests.inventories import ROOT, upstream

VTYSH = debian13.BIN / "vtysh"


@pytest.fixture(scope="module")
def frr_conf(tmp_path_factory) -> Path:
    plan = load(load_inventory(ROOT / "inventory.py", cwd=ROOT))
    path = tmp_path_factory.mktemp("frr") / "frr.conf"
    path.write_text(render_host(plan, "router01")["/usr/local/etc/frr/frr.conf"])
    return path


def dryrun(path: Path) -> subprocess.CompletedProcess[str]:
    debian13.require()
    return subprocess.run([str(VTYSH), "--dryrun", "-f", str(path)], capture_output=True, text=True)


def test_vtysh_accepts_the_generated_config(frr_conf):
    result = dryrun(frr_conf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vtysh_rejects_a_broken_config(frr_conf, tmp_path):
    """The check can fail: a line FRR does not know makes vtysh --dryrun exit non-zero."""
    broken = tmp_path / "frr.conf"
    broken.write_text(frr_conf.read_text().replace("soft-reconfiguration inbound", "soft-reconf"))
    result = dryrun(broken)
    assert result.returncode != 0
    assert "soft-reconf" in result.stdout + result.stderr


def test_every_neighbor_has_an_inbound_and_an_outbound_policy(frr_conf):
    """bgp ebgp-requires-policy: without both, FRR exchanges nothing with the neighbor."""
    text = frr_conf.read_text()
    neighbors = set(re.findall(r"^ neighbor (\S+) remote-as \d+$", text, re.M))
    assert neighbors == {"2001:db8:300::1", "2001:db8:100::ff"}
    for neighbor in neighbors:
        assert re.search(
            rf"^  neighbor {re.escape(neighbor)} prefix-list PL-BOGONS in$", text, re.M
        )
        assert re.search(
            rf"^  neighbor {re.escape(neighbor)} filter-list ASPATH-BOGONS in$", text, re.M
        )
        assert re.search(
            rf"^  neighbor {re.escape(neighbor)} route-map RM-\S+-OUT out$", text, re.M
        )


def test_a_prefix_limit_is_written_as_frr_shows_it(ref, plan_for, tmp_path):
    """In the form bgpd/bgp_vty.c's bgp_config_write_peer_af prints (threshold left at FRR's
    75 %, then restart; the same in 8.4 and 10.5), so that frr-reload sees no change on a
    rerun (the lab's max_prefixes test reruns it); and vtysh accepts it."""
    upstream(ref, "lagrange")["max_prefixes"] = 250000
    path = tmp_path / "frr.conf"
    path.write_text(render_host(plan_for(ref), "router01")["/usr/local/etc/frr/frr.conf"])
    result = dryrun(path)
    assert result.returncode == 0, result.stdout + result.stderr
    limits = [line for line in path.read_text().splitlines() if "maximum-prefix" in line]
    assert limits == ["  neighbor 2001:db8:100::ff maximum-prefix 250000 restart 15"]


def test_communities_are_emitted_sorted(frr_conf):
    # The reference writes 34927:9501 34927:9301; FRR stores them sorted, so emit them sorted.
    assert " set community 34927:9301 34927:9501 additive\n" in frr_conf.read_text()


def test_vtysh_accepts_the_generated_vtysh_conf(tmp_path):
    plan = load(load_inventory(ROOT / "inventory.py", cwd=ROOT))
    path = tmp_path / "vtysh.conf"
    path.write_text(render_host(plan, "router01")["/usr/local/etc/frr/vtysh.conf"])
    result = dryrun(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "service integrated-vtysh-config" in path.read_text().splitlines()


def frr_as_path_regex(regex: str) -> re.Pattern[str]:
    """FRR's as-path regex as Python's: ``_`` is ``(^|[,{}() ]|$)`` (bgpd/bgp_regex.c)."""
    return re.compile(regex.replace("_", "(^|[,{}() ]|$)"))


def test_asn_regex_matches_exactly_its_range():
    numbers = set(range(140_000)) | {2**32 - 1, 4_199_999_999, 4_200_000_000, 4_294_967_294}
    numbers |= {
        n + d for first, last, _ in bogons().asn_ranges for n in (first, last) for d in (-1, 1)
    }
    for first, last in [(0, 0), (7, 123), (99, 100), (64496, 64511), (65552, 131071)] + [
        (first, last) for first, last, _ in bogons().asn_ranges
    ]:
        pattern = re.compile(asn_regex(first, last))
        matched = {n for n in numbers if n >= 0 and pattern.fullmatch(str(n))}
        assert matched == {n for n in numbers if first <= n <= last}, (first, last)


def test_aspath_bogons_refuse_a_bogon_asn_anywhere_in_the_path_and_nothing_else():
    entries = bogon_asn_filter()
    assert [e.action for e in entries] == ["deny"] * (len(entries) - 1) + ["permit"]

    def refused(path: str) -> bool:
        first = next(e for e in entries if frr_as_path_regex(e.regex).search(path))
        return first.action == "deny"

    for path in ["64512", "34927 64512", "34927 64512 1299", "3356 23456 15169", "{65000,1299}"]:
        assert refused(path), path
    for path in [
        "",
        "34927",
        "34927 1299 15169",
        "164512",
        "645120 1299",
        "209735 4200000000"[:-1],
    ]:
        assert not refused(path), path
    assert refused("209735 4200000000") and refused("4294967295") and refused("0 1299")


def test_maintenance_is_written_as_frr_shows_it(ref, plan_for, tmp_path):
    """shutdown: graceful drains iFog (GRACEFUL_SHUTDOWN on what we send it, FRR's per-neighbor
    graceful-shutdown on what it sends us); shutdown: admin closes Lagrange with a message. In
    the form bgp_vty.c (bgp_config_write_peer_global) and the route-map's community_str print
    them back, so a rerun changes nothing; and vtysh accepts it."""
    upstream(ref, "ifog")["shutdown"] = "graceful"
    upstream(ref, "lagrange").update(shutdown="admin", shutdown_message="moving racks, see NOC-42")
    path = tmp_path / "frr.conf"
    path.write_text(render_host(plan_for(ref), "router01")["/usr/local/etc/frr/frr.conf"])
    result = dryrun(path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert " set community 34927:9301 34927:9501 graceful-shutdown additive\n" in text
    assert [line for line in text.splitlines() if "shutdown" in line and "neighbor" in line] == [
        " neighbor 2001:db8:300::1 graceful-shutdown",
        " neighbor 2001:db8:100::ff shutdown message moving racks, see NOC-42",
    ]


def test_a_drained_upstream_without_communities_gets_graceful_shutdown_alone(ref, plan_for):
    upstream(ref, "lagrange")["shutdown"] = "graceful"
    text = render_host(plan_for(ref), "router01")["/usr/local/etc/frr/frr.conf"]
    block = text.split("route-map RM-LAGRANGE-OUT permit 10\n")[1].split("exit\n")[0]
    assert " set community graceful-shutdown additive\n" in block
