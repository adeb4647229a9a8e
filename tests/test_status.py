"""``ownas status``'s pure parts: why a route was refused (tasks.policy.rejection), judged as
FRR's inbound policy does, against the lab's sample, whose kinds say why each is refused (the
lab's end-to-end tests compare the same reasons with what real FRR refused); the report's
layouts and exit status."""

from __future__ import annotations

import pytest

from tasks import status
from tasks.lab import topology
from tasks.lab.status import SAMPLE_REASONS
from tasks.policy import origin_validation, rejection

UPSTREAM_ASN = 34927


def _roas() -> list[dict]:
    """The lab's ROAs as FRR's prefix table shows them (show rpki prefix-table json)."""
    table = []
    for roa in topology.roas():
        address, length = roa["prefix"].split("/")
        table.append(
            {
                "prefix": address,
                "prefixLenMin": int(length),
                "prefixLenMax": roa["maxLength"],
                "asn": int(str(roa["asn"]).removeprefix("AS")),
            }
        )
    return table


def _sample(plan) -> list[tuple[str, str, str]]:
    paths = topology.sample_paths()
    return [
        (kind, prefix, " ".join(map(str, [UPSTREAM_ASN, *paths.get(prefix, [])])))
        for kind, prefixes in topology.sample(plan).items()
        for prefix in prefixes
    ]


def test_every_refused_sample_route_gets_its_kind_s_reason(plan):
    roas = _roas()
    for kind, prefix, path in _sample(plan):
        if kind in topology.ACCEPTED:
            continue
        assert rejection(plan.network, prefix, path, roas) == SAMPLE_REASONS[kind], prefix


def test_accepted_sample_routes_are_valid_or_not_found(plan):
    roas = _roas()
    for kind, prefix, path in _sample(plan):
        if kind in topology.ACCEPTED:
            assert origin_validation(prefix, path, roas) == kind.replace("_", " "), prefix
            assert rejection(plan.network, prefix, path, roas) == "other", prefix


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("2a06:9801:1c::/48", "own"),
        ("2a06:9801:1c:1000::/64", "too long"),  # inside our own prefix: PL-BOGONS ge 49
        ("::/0", "default"),
        ("2001:db8::/32", "bogon"),
        ("fe80::/10", "bogon"),
    ],
)
def test_refusals_by_the_prefix_list(plan, prefix, reason):
    assert rejection(plan.network, prefix, "34927", []) == reason


def _report(plan, **changes) -> dict:
    router = {"name": "router01", "role": "router", "reached": True, "error": None}
    return {**status.blank(plan.network), "hosts": [router], "converged": True, **changes}


def test_exit_status_and_verdict(plan):
    assert status.exit_status(_report(plan)) == 0
    warned = _report(plan, findings=[{"host": "router01", "line": "x", "warning": True}])
    assert status.exit_status(warned) == 0
    assert status.verdict(warned) == "converged (1 warning)"
    failed = _report(
        plan, converged=False, findings=[{"host": "router01", "line": "x", "warning": False}]
    )
    assert status.exit_status(failed) == 1
    assert status.verdict(failed) == "not converged: 1 problem"
    gone = _report(
        plan,
        converged=False,
        hosts=[{"name": "router01", "role": "router", "reached": False, "error": "refused"}],
    )
    assert status.exit_status(gone) == 2
    assert status.verdict(gone) == "not reached: router01"


def test_text_and_markdown_carry_the_same_rows(plan):
    report = _report(
        plan,
        sessions=[
            {
                "upstream": "lagrange",
                "asn": 209735,
                "peer": "2001:db8:100::ff",
                "state": "Idle",
                "maintenance": "admin",
                "admin_shutdown": True,
                "up_seconds": None,
                "connections_established": 3,
                "last_reset": "Admin. shutdown",
            }
        ],
    )
    row = "lagrange  209735  2001:db8:100::ff  Idle (admin down, as asked)  -  3x  Admin. shutdown"
    assert f"  {row}\n" in status.text(report)
    cells = "| lagrange | 209735 | 2001:db8:100::ff | Idle (admin down, as asked) | - | 3x |"
    assert cells in status.markdown(report)


def test_an_as_set_origin_is_not_found_as_frr_judges_it(plan):
    """bgpd/bgp_rpki.c rpki_validate_prefix: an AS_SET last is NOT FOUND; its members still
    count for the bogon AS numbers (FRR's as-path regex sees them)."""
    roas = [{"prefix": "2606:4700::", "prefixLenMin": 32, "prefixLenMax": 48, "asn": 13335}]
    assert origin_validation("2606:4700::/32", "34927 {13335,64496}", roas) == "not found"
    assert rejection(plan.network, "2606:4700::/32", "34927 {13335,64512}", roas) == "bogon ASN"
