"""RPKI route origin validation: the inventory's ``rpki`` section, what it renders (checked by
FRR 10 and /bin/sh), the pre-flight's bgpd module rule and the convergence checks."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tasks import checks, preflight
from tasks.lab import debian13
from tasks.render import render_host

FRR_CONF = "/usr/local/etc/frr/frr.conf"
VALIDATOR_CONF = "/usr/local/etc/routinator/routinator.conf"


def rpki(ref):
    return ref["routers"]["rpki"]


def rendered(plan, path):
    return render_host(plan, "router01")[path]


# --- the inventory ------------------------------------------------------------------------


def test_the_reference_asks_its_own_validator_first(ref, plan_for):
    router = plan_for(ref).router
    assert router.rpki.validator == "routinator"
    text = rendered(plan_for(ref), FRR_CONF)
    block = text[text.index("\nrpki\n") :]
    assert block.splitlines()[2:5] == [
        " rpki cache tcp 127.0.0.1 3323 preference 1",
        " rpki cache tcp 2001:db8:ffff:3::323 3323 preference 2",
        "exit",
    ]


@pytest.mark.parametrize(
    ("cache", "field", "message"),
    [
        ({"address": "2001:db8::/48"}, "address", "is not an IP address"),
        ({"address": "rtr.example.net"}, "address", "is not an IP address"),
        ({"address": "::1"}, "address", "cannot be used here (unspecified, loopback"),
        ({"address": "fe80::1"}, "address", "is link-local"),
        ({"port": 0}, "port", "0 is not between 1 and 65535"),
        ({"port": 70000}, "port", "70000 is not between 1 and 65535"),
        ({"port": "3323"}, "port", "'3323' is not a whole number"),
        ({"preference": 256}, "preference", "256 is not between 1 and 255"),
        ({"prefernce": 3}, "prefernce", "unknown field (did you mean preference?)"),
    ],
)
def test_a_bad_cache_is_one_line(ref, problems_for, cache, field, message):
    rpki(ref)["caches"][0].update(cache)
    problems = problems_for(ref)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"router01.rpki.caches[0].{field}: ")
    assert message in problems[0]


def test_every_bad_cache_at_once(ref, problems_for):
    rpki(ref)["caches"] = [
        {"address": "192.0.2.30", "port": 323, "preference": 1},
        {"address": "192.0.2.31", "port": 323, "preference": 3},
        {"address": "192.0.2.31", "port": 323, "preference": 3},
    ]
    rpki(ref)["validator"] = "gortr"
    assert problems_for(ref) == [
        "router01.rpki.validator: 'gortr' is not one of 'routinator', 'fort'",
        "router01.rpki.caches[2].preference: 3 is already the preference of caches[1]: each "
        "cache needs its own preference (the lowest is asked first)",
        "router01.rpki.caches[2].address: 192.0.2.31 port 323 is caches[1] again",
    ]


def test_a_preference_the_validator_holds_is_refused(ref, problems_for):
    rpki(ref)["caches"][0]["preference"] = 1
    assert problems_for(ref) == [
        "router01.rpki.caches[0].preference: 1 is already the router's own routinator "
        "(rpki.validator): each cache needs its own preference (the lowest is asked first)"
    ]


def test_a_source_address_is_refused_with_why(ref, problems_for):
    rpki(ref)["caches"][0]["source"] = "198.51.100.10"
    (problem,) = problems_for(ref)
    assert problem.startswith("router01.rpki.caches[0].source: FRR 10 accepts")
    assert "never uses it" in problem


def test_rpki_needs_somewhere_to_ask(ref, problems_for):
    ref["routers"]["rpki"] = {"caches": []}
    assert problems_for(ref) == ["router01.rpki: needs at least one cache or a validator"]


# --- what it renders ----------------------------------------------------------------------


def test_without_rpki_nothing_of_it_is_rendered(ref, plan_for):
    del ref["routers"]["rpki"]
    files = render_host(plan_for(ref), "router01")
    assert "rpki" not in files[FRR_CONF]
    assert "bgpd_flags" not in files["/etc/rc.conf.d/frr"]
    assert not [path for path in files if "routinator" in path]


def test_every_upstream_rejects_invalids_and_nothing_else(ref, plan_for):
    text = rendered(plan_for(ref), FRR_CONF)
    assert "route-map RM-UPSTREAM-IN deny 10\n match rpki invalid\nexit\n" in text
    assert "route-map RM-UPSTREAM-IN permit 20\nexit\n" in text
    # No attribute is changed by validation state (NLNOG: reject invalids only).
    policy = text[text.index("route-map RM-UPSTREAM-IN deny") : text.index("router bgp")]
    assert " set " not in policy
    for peer in ("2001:db8:300::1", "2001:db8:100::ff"):
        assert f"  neighbor {peer} route-map RM-UPSTREAM-IN in\n" in text


def test_frr_10_accepts_the_rendered_rpki_and_refuses_a_wrong_one(ref, plan_for, tmp_path):
    debian13.require()
    path = tmp_path / "frr.conf"
    path.write_text(rendered(plan_for(ref), FRR_CONF))
    vtysh = [str(debian13.BIN / "vtysh"), "--dryrun", "-f", str(path)]
    accepted = subprocess.run(vtysh, capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    # FRR 8's syntax (no transport): FRR 10.2 removed it, and the check must notice.
    path.write_text(path.read_text().replace("rpki cache tcp ", "rpki cache "))
    refused = subprocess.run(vtysh, capture_output=True, text=True)
    assert refused.returncode != 0


def test_bgpd_loads_the_rpki_module_and_keeps_its_localhost_vty(ref, plan_for, tmp_path):
    """As rc.d/frr reads it (/bin/sh): ``bgpd_flags`` replaces the script's default
    ``-A 127.0.0.1``, so the fragment keeps it."""
    fragment = tmp_path / "frr"
    fragment.write_text(rendered(plan_for(ref), "/etc/rc.conf.d/frr"))
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$bgpd_flags"', "sh", str(fragment)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "-A 127.0.0.1 -M rpki"


def test_the_validator_listens_on_loopback_only(ref, plan_for):
    files = render_host(plan_for(ref), "router01")
    assert 'rtr-listen = ["127.0.0.1:3323"]' in files[VALIDATOR_CONF].splitlines()
    assert 'routinator_enable="YES"' in files["/etc/rc.conf.d/routinator"]
    rpki(ref)["validator"] = "fort"
    files = render_host(plan_for(ref), "router01")
    fort = json.loads(files["/usr/local/etc/fort/fort-config.json"])
    assert fort["server"] == {"address": ["127.0.0.1"], "port": "8323"}
    assert fort["tal"] == "/usr/local/etc/fort/tal"
    assert " rpki cache tcp 127.0.0.1 8323 preference 1" in files[FRR_CONF]


def test_nothing_new_reaches_the_router(ref, plan_for):
    """RTR and the validator's fetches are outbound (``pass out ... keep state``); the
    validator listens on lo0, which pf skips; no rule passes anything in to an RTR port."""
    text = rendered(plan_for(ref), "/etc/pf.conf")
    assert "set skip on lo0" in text
    assert re.search(r"^pass out quick all keep state$", text, re.M)
    for port in ("3323", "8323", "323"):
        assert not re.search(rf"^pass in .*port {port}\b", text, re.M)


# --- the pre-flight: bgpd's module ------------------------------------------------------------


def found_for(modules, asked=None):
    return {"bgpd_modules": modules, preflight.RESTART_BGPD: asked}


@pytest.mark.parametrize("modules", [None, ["libfrr", "bgpd", "bgpd_rpki"]])
def test_no_restart_when_bgpd_is_not_running_or_has_the_module(ref, plan_for, modules):
    problems, notes = [], []
    assert not preflight._rpki_module("router01", found_for(modules), problems, notes)
    assert problems == notes == []


def test_a_running_bgpd_without_the_module_stops_the_run(ref, plan_for):
    problems, notes = [], []
    assert not preflight._rpki_module("router01", found_for(["libfrr", "bgpd"]), problems, notes)
    (problem,) = problems
    assert problem.startswith("router01: RPKI needs bgpd's rpki module")
    assert "--data restart_bgpd=yes" in problem


def test_restarting_bgpd_is_asked_for_and_said(ref, plan_for):
    problems, notes = [], []
    found = found_for(["libfrr", "bgpd"], "yes")
    assert preflight._rpki_module("router01", found, problems, notes)
    assert problems == []
    assert notes == [
        "router01: bgpd restarts to load its rpki module (--data restart_bgpd=yes): every BGP "
        "session resets once"
    ]
    problems = []
    preflight._rpki_module("router01", found_for(["bgpd"], "true"), problems, [])
    assert problems[0].endswith("(restart_bgpd is 'true', not 'yes')")


# --- the convergence checks ----------------------------------------------------------------


def test_no_cache_in_sync_and_an_accepted_invalid_are_warnings(ref, plan_for):
    plan = plan_for(ref)
    caches = "(127.0.0.1 port 3323, 2001:db8:ffff:3::323 port 3323)"
    found = {"rpki": {"caches": {"127.0.0.1 3323": False}, "roas": 0}, "rpki_invalid": []}
    (warning,) = checks._rpki(plan, found)
    assert warning.warning and not warning.waitable
    assert warning.line == (
        f"router01: RPKI: no RTR cache in sync {caches}: every route is accepted unvalidated "
        "until one answers"
    )
    found["rpki"]["roas"] = 5
    (warning,) = checks._rpki(plan, found)
    assert warning.line.endswith(": FRR validates with the 5 ROAs it holds until they expire")
    found = {
        "rpki": {"caches": {"2001:db8:ffff:3::323 3323": True}, "roas": 5},
        "rpki_invalid": ["2620:fe::/48"],
    }
    (stale,) = checks._rpki(plan, found)
    assert stale.warning and not stale.waitable
    assert "1 accepted route(s) are RPKI invalid (2620:fe::/48)" in stale.line


def test_a_cache_in_sync_without_roas_is_a_warning(ref, plan_for):
    found = {"rpki": {"caches": {"127.0.0.1 3323": True}, "roas": 0}, "rpki_invalid": []}
    (warning,) = checks._rpki(plan_for(ref), found)
    assert warning.warning
    assert "the cache in sync serves no ROAs: nothing is validated" in warning.line


def test_the_checks_read_rpki_only_where_it_is_configured(ref, plan_for):
    del ref["routers"]["rpki"]
    assert checks._rpki(plan_for(ref), {}) == []
