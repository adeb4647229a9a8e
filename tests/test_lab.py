"""End to end in the lab (tasks.lab): real pyinfra over real OpenSSH into network namespaces,
real FRR on the router running the generated configuration, BIRD 2 playing both upstreams.

The tests share one lab (building it takes a second, the first deploy about twenty) and run in
file order, each starting from the converged network the one before left. They need root, as
CI has; the lab's namespaces carry a prefix of their own, so a lab of the user's is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.lab import debian13, running, status
from tasks.lab.lab import Lab, LabError
from tasks.lab.topology import ACCEPTED
from tests.inventories import ROOT

PREFIX = "2a06:9801:1c::/48"
IFOG, LAGRANGE = "2001:db8:300::1", "2001:db8:100::ff"
VPS_ADDRESS = "2a06:9801:1c:1000::1"  # vps01's own address in its delegation (lo0)
# Stand-in commands that change a host; everything else they answer only reads.
ACTIONS = re.compile(
    r"^(kldload|sysctl \S+=|ifconfig \S+ |route -6 |pfctl -(f|e)|service \S+ start|pkg install)"
)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example inventory, for the tests to edit (the lab reads it each run)."""
    source = tmp_path_factory.mktemp("inventory")
    shutil.copy(ROOT / "inventory.py", source)
    shutil.copytree(ROOT / "group_data", source / "group_data")
    return source / "inventory.py"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, inventory: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces); CI runs `make test` as root")
    built = Lab(tmp_path_factory.mktemp("lab") / "lab", prefix=f"ownas-t{os.getpid()}")
    try:
        built.up(inventory)
        yield built
    finally:
        built.down()


def deploy(lab: Lab, *args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pyinfra", str(lab.inventory), "deploy.py", *args]
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def log(lab: Lab, host: str) -> list[str]:
    """Every stand-in command host ``host`` ran so far, as a command line."""
    lines = (lab.host_dir(host) / "log.jsonl").read_text().splitlines()
    return [" ".join(json.loads(line)["command"]) for line in lines]


def actions(commands: list[str]) -> list[str]:
    return [c for c in commands if ACTIONS.match(c)]


def files(lab: Lab) -> dict[str, str]:
    """A hash of every file under the managed hosts' own /etc, /usr/local and /boot."""
    hashes = {}
    for host in ("router01", "vps01"):
        root = lab.host_dir(host) / "root"
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                hashes[str(path.relative_to(lab.dir))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return hashes


def established(found: dict[str, Any]) -> dict[str, int]:
    """connectionsEstablished per upstream, every session required to be Established on both
    sides (the router's, and each upstream's BIRD)."""
    for session in found["sessions"]:
        assert session["state"] == "Established", session
    for upstream in found["lab"]["upstreams"]:
        assert upstream["state"] == "Established", upstream
    return {s["upstream"]: s["connections_established"] for s in found["sessions"]}


def received(found: dict[str, Any], upstream: str) -> list[dict[str, Any]]:
    """What ``upstream`` receives from the router, as its BIRD sees it."""
    return next(u["received"] for u in found["lab"]["upstreams"] if u["upstream"] == upstream)


def ping_from_upstream(lab: Lab, upstream: str, address: str) -> bool:
    netns = ["ip", "netns", "exec", lab.namespace(upstream)]
    ping = ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", address]
    return subprocess.run([*netns, *ping], capture_output=True).returncode == 0


def outcome(result: subprocess.CompletedProcess, operation: str, host: str) -> str:
    """What pyinfra printed for ``host`` under ``--> Starting operation: OPERATION``."""
    block = output(result).split(f"Starting operation: {operation} \n", 1)[1].split("-->", 1)[0]
    return re.search(rf"\[{host}\]\s+(.*)", block).group(1).strip()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@contextlib.contextmanager
def as_before(path: Path) -> Iterator[None]:
    """``path`` as it is now, put back when the block ends, also when it fails (the tests
    share one lab and one inventory)."""
    original = path.read_text()
    try:
        yield
    finally:
        path.write_text(original)


def test_the_first_deploy_converges(lab: Lab) -> None:
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    found = status.gather(lab, verbose=True)
    assert set(established(found)) == {"ifog", "lagrange"}
    assert found["converged"] and status.network_status.exit_status(found) == 0

    ifog = {r["prefix"]: r for r in received(found, "ifog")}
    assert list(ifog) == [PREFIX]
    assert ifog[PREFIX]["communities"] == ["34927:9301", "34927:9501"]
    assert ifog[PREFIX]["as_path"] == [201379]
    lagrange = {r["prefix"]: r for r in received(found, "lagrange")}
    assert list(lagrange) == [PREFIX]
    assert lagrange[PREFIX]["as_path"] == [201379, 201379, 201379]
    # The report says from FRR's side what each BIRD received.
    for upstream in ("ifog", "lagrange"):
        announced = [
            {k: v for k, v in r.items() if k != "upstream"}
            for r in found["announced"]
            if r["upstream"] == upstream
        ]
        assert announced == received(found, upstream), upstream

    # Accepted: RPKI valid and not found; rejected: bogons, bogon ASNs, too long or short, the
    # default, our own prefix, RPKI invalid (by origin, by maxLength), each for its reason.
    sample = found["lab"]["sample"]
    valid = {p for kind in ACCEPTED for p in sample[kind]}
    assert {"rpki_invalid_origin", "rpki_invalid_length", "bogon_asn"} <= set(sample)
    reasons = {
        status.SAMPLE_REASONS[kind]: sorted(sample[kind]) for kind in sample if kind not in ACCEPTED
    }
    for seen in found["filtering"]:
        assert seen["received"] == sum(len(p) for p in sample.values()), seen
        assert set(seen["accepted_prefixes"]) == valid, seen
        assert seen["accepted"] == len(valid), seen
        assert seen["rejected_by_reason"] == reasons, seen

    assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)
    assert ping_from_upstream(lab, "lagrange", VPS_ADDRESS)
    assert {t["interface"]: t["up"] for t in found["lab"]["links"] if t["in_lab"]} == {
        "gre0": True,
        "gif0": True,
    }
    assert all(t["up"] and not t["drift"] for t in found["tunnels"]), found["tunnels"]


def ownas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ownas_status_through_the_lab_s_inventory_is_lab_status_s_report(lab: Lab) -> None:
    """`ownas status` over SSH with the lab's inventory, as against real hosts, reports what
    `ownas lab status` does, which only adds the lab's own view (BIRD's side)."""
    real = ownas("status", "-i", str(lab.inventory), "--json")
    labs = ownas("lab", "status", "--dir", str(lab.dir), "--prefix", lab.prefix, "--json")
    assert (real.returncode, labs.returncode) == (0, 0), real.stderr + labs.stderr

    def facts(report: dict[str, Any]) -> dict[str, Any]:
        report.pop("lab", None)
        for session in report["sessions"]:
            session.pop("up_seconds")  # read a moment apart
        return report

    assert facts(json.loads(real.stdout)) == facts(json.loads(labs.stdout))
    assert "lab" in json.loads(labs.stdout) and "lab" not in json.loads(real.stdout)


def test_a_second_run_changes_nothing_and_resets_no_session(lab: Lab) -> None:
    before = established(status.gather(lab))
    hashes = files(lab)
    counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    assert outcome(result, "Router | Reload FRR", "router01") == "No changes"
    assert files(lab) == hashes
    assert established(status.gather(lab)) == before


def test_a_fresh_venv_with_the_wheel_deploys_from_a_folder_of_its_own(
    lab: Lab, wheel: Path, tmp_path: Path
) -> None:
    """`pip install ownas-*.whl` into a new venv (not editable; its dependencies from the
    index, as a user's are), then, from a folder holding only deploy.py and config.py (no
    tasks/, no templates/): check, render and deploy to the lab with that venv's commands."""
    venv, folder = tmp_path / "venv", tmp_path / "operator"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=900)
    folder.mkdir()
    for name in ("deploy.py", "config.py"):
        shutil.copy(ROOT / name, folder)
    env = {"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "NO_COLOR": "1"}

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=folder, env=env, capture_output=True, text=True, timeout=600
        )

    where = run("python", "-c", "import tasks; print(tasks.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    assert run("ownas", "check", "-i", str(lab.inventory)).returncode == 0
    rendered = run("ownas", "render", "-i", str(lab.inventory), "-o", "out")
    assert rendered.returncode == 0, rendered.stderr
    assert (folder / "out" / "router01" / "usr/local/etc/frr/frr.conf").is_file()
    hashes = files(lab)
    result = run("pyinfra", str(lab.inventory), "deploy.py", "-y")
    assert result.returncode == 0, output(result)
    end = [line.strip() for line in result.stderr.rstrip().splitlines()[-2:]]
    assert end[0].startswith("router01: converged") and "BGP ifog, lagrange Established" in end[0]
    assert end[1].startswith("vps01: converged: tunnel gif0 configured and up; router01 answers"), (
        end
    )
    assert files(lab) == hashes


def vtysh_json(lab: Lab, command: str) -> dict[str, Any]:
    return json.loads(lab.vtysh("router01", command).stdout)


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return False


def in_sync(lab: Lab) -> bool:
    connections = vtysh_json(lab, "show rpki cache-connection json").get("connections", [])
    return any(c["state"] == "connected" for c in connections)


def accepted(lab: Lab) -> set[str]:
    return set(vtysh_json(lab, "show bgp ipv6 unicast json")["routes"])


def roa_table(lab: Lab) -> set[tuple[str, int]]:
    table = vtysh_json(lab, "show rpki prefix-table json").get("prefixes", [])
    return {(p["prefix"], p["asn"]) for p in table}


def test_rpki_rejects_exactly_the_invalid_routes(lab: Lab) -> None:
    """Valid and not found pass, invalid by origin and by maxLength do not; the router's own
    routinator (stayrtr in its place) is the cache FRR asks first."""
    found = status.gather(lab, verbose=True)
    sample = found["lab"]["sample"]
    for seen in found["filtering"]:
        for kind in ("rpki_invalid_origin", "rpki_invalid_length"):
            reason = status.SAMPLE_REASONS[kind]
            assert seen["rejected_by_reason"][reason] == sorted(sample[kind]), seen
    # FRR's own validation state of what it accepted, per upstream: 3 valid, 2 not found.
    states: dict[str, list[str]] = {}
    for paths in vtysh_json(lab, "show bgp ipv6 unicast json")["routes"].values():
        for path in paths:
            if "peerId" in path:
                flag = next(k for k in path if k.startswith("rpki"))
                states.setdefault(path["peerId"], []).append(flag)
    for peer in (IFOG, LAGRANGE):
        assert sorted(states[peer]) == ["rpkiNotFound"] * 2 + ["rpkiValid"] * 3, peer
    assert found["rpki"]["invalid_accepted"] == []
    caches = {c["cache"]: c for c in found["rpki"]["caches"]}
    assert caches["127.0.0.1 3323"]["in_sync"]
    stand_ins = {c["cache"]: c["stand_in"] for c in found["lab"]["caches"]}
    assert stand_ins["127.0.0.1 3323"] == "stayrtr on router01 in place of routinator"
    assert "RPKI invalid (origin) 1: 2a0b:4340::/32" in status.text(found)


def test_a_roa_change_is_applied_by_the_next_deploy_without_a_session_reset(
    lab: Lab,
) -> None:
    """FRR 10.3 may keep a route a new ROA makes invalid, or keep rejecting one a withdrawn
    ROA makes not found; the deploy finds the stale decision (received != accepted + what the
    policy filters now) and applies the policy again from Adj-RIB-In."""
    before = established(status.gather(lab))
    roas = lab.dir / debian13.ROAS
    hijack = {"prefix": "2620:fe::/48", "maxLength": 48, "asn": 99999}
    with as_before(roas):
        data = json.loads(roas.read_text())
        roas.write_text(json.dumps({"roas": [*data["roas"], hijack]}))
        assert wait_for(lambda: ("2620:fe::", 99999) in roa_table(lab))
        result = deploy(lab, "-y")
        assert result.returncode == 0, output(result)
        assert wait_for(lambda: "2620:fe::/48" not in accepted(lab), 15)
    assert wait_for(lambda: ("2620:fe::", 99999) not in roa_table(lab))
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert wait_for(lambda: "2620:fe::/48" in accepted(lab), 15)
    assert established(status.gather(lab)) == before


def stop_caches(lab: Lab) -> None:
    """Every RTR cache down: the lab's on the Internet, and the router's own validator."""
    validators = json.loads((lab.host_dir("router01") / "state.json").read_text())["validators"]
    lab.stop_cache(next(iter(lab.state()["caches"])))
    lab.run_in("router01", ["kill", str(validators["routinator"])], check=False)
    assert wait_for(lambda: not in_sync(lab), 30)


def test_without_any_rtr_cache_frr_keeps_validating_and_no_session_resets(lab: Lab) -> None:
    before = established(status.gather(lab))
    routes = accepted(lab)
    stop_caches(lab)
    time.sleep(3)
    assert accepted(lab) == routes  # nothing withdrawn, nothing invalid let in
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert "FRR validates with the 5 ROAs it holds until they expire" in output(result)
    assert "service routinator start" in actions(log(lab, "router01"))  # back, by the deploy
    assert accepted(lab) == routes
    assert established(status.gather(lab)) == before


def test_an_frr_that_holds_no_roas_is_brought_back_in_sync_by_the_deploy(lab: Lab) -> None:
    """As after a reboot with the caches away: FRR holds no ROAs, and rtrlib would wait its
    retry interval (or, for a cache that restarted, its expire interval) before it syncs."""
    before = established(status.gather(lab))
    routes = accepted(lab)
    stop_caches(lab)
    lab.vtysh("router01", "rpki reset")  # frees the ROAs FRR held
    assert wait_for(lambda: not roa_table(lab), 10)
    lab.start_cache(next(iter(lab.state()["caches"])))
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert in_sync(lab)  # `rpki reset` once a cache answered, then the policy again
    assert "RPKI" not in output(result)
    assert accepted(lab) == routes
    assert established(status.gather(lab)) == before


# Lagrange's BIRD sends this one marked GRACEFUL_SHUTDOWN (tasks/data/lab_sample.toml).
MARKED = "2620:fe::/48"


def paths_by_upstream(lab: Lab) -> dict[str, dict[str, dict[str, Any]]]:
    """Every accepted prefix's paths, by the peer that sent them."""
    routes = vtysh_json(lab, "show bgp ipv6 unicast json")["routes"]
    return {
        prefix: {path["peerId"]: path for path in paths if "peerId" in path}
        for prefix, paths in routes.items()
        if prefix != PREFIX
    }


def best_from(paths: dict[str, dict[str, Any]]) -> str:
    return next(peer for peer, path in paths.items() if path.get("bestpath"))


def sessions(lab: Lab) -> dict[str, dict[str, Any]]:
    """Each session as the router and the upstream's BIRD see it."""
    found = status.gather(lab)
    bird = {u["upstream"]: u["state"] for u in found["lab"]["upstreams"]}
    return {s["upstream"]: {**s, "upstream_state": bird[s["upstream"]]} for s in found["sessions"]}


def drained_or_closed(lab: Lab, routers: Path, upstream: str, mode: str, line: str) -> str:
    """Set ``shutdown: MODE`` on ``upstream``: the dry run shows ``line`` and changes nothing,
    then the deploy applies it; returns the deploy's output."""
    edit(routers, f'"name": "{upstream}",', f'"name": "{upstream}",\n        "shutdown": "{mode}",')
    counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
    dry = deploy(lab, "--dry", "--diff")
    assert dry.returncode == 0, output(dry)
    assert re.search(rf"\+\s+{re.escape(line)}\n", output(dry)), output(dry)
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    return output(result)


def test_draining_and_closing_an_upstream_touch_nothing_else(lab: Lab, inventory: Path) -> None:
    """RFC 8326 in both directions on real FRR and BIRD: a route an upstream marks 65535:0 loses
    to the other's; draining iFog marks what it receives from us and moves every path to
    Lagrange, without a session reset; closing Lagrange leaves iFog untouched."""
    routers = inventory.parent / "group_data" / "routers.py"
    before = established(status.gather(lab))
    marked = paths_by_upstream(lab)[MARKED]
    assert marked[LAGRANGE]["locPrf"] == 0 and best_from(marked) == IFOG
    with as_before(routers):
        drained_or_closed(lab, routers, "ifog", "graceful", f"neighbor {IFOG} graceful-shutdown")

        def drained() -> bool:
            return "65535:0" in received(status.gather(lab), "ifog")[0]["communities"]

        assert wait_for(drained, 30)
        for prefix, paths in paths_by_upstream(lab).items():
            assert paths[IFOG]["locPrf"] == 0, prefix
            if prefix != MARKED:
                assert best_from(paths) == LAGRANGE, prefix
        assert established(status.gather(lab)) == before
    result = deploy(lab, "-y")  # undrained
    assert result.returncode == 0, output(result)
    assert wait_for(lambda: not drained(), 30)
    assert "locPrf" not in paths_by_upstream(lab)["2606:4700::/32"][IFOG]
    with as_before(routers):
        drained_or_closed(
            lab,
            routers,
            "lagrange",
            "admin",
            f"neighbor {LAGRANGE} shutdown message planned maintenance",
        )
        closed = sessions(lab)
        assert closed["lagrange"]["state"] == "Idle"
        assert closed["lagrange"]["maintenance"] == "admin"
        assert closed["lagrange"]["upstream_state"] != "Established"
        assert closed["ifog"]["connections_established"] == before["ifog"]
        assert closed["ifog"]["state"] == "Established"
    result = deploy(lab, "-y")  # open again
    assert result.returncode == 0, output(result)
    after = established(status.gather(lab))
    assert after == {"ifog": before["ifog"], "lagrange": before["lagrange"] + 1}


def test_a_dry_run_after_an_edit_shows_the_diff_and_changes_nothing(
    lab: Lab, inventory: Path
) -> None:
    routers = inventory.parent / "group_data" / "routers.py"
    with as_before(routers):
        edit(routers, '"prepend": 2,', '"prepend": 3,')
        hashes = files(lab)
        counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
        result = deploy(lab, "--dry", "--diff")
    assert result.returncode == 0, output(result)
    text = output(result)
    assert "will modify /usr/local/etc/frr/frr.conf" in text
    assert re.search(r"-\s+set as-path prepend 201379 201379\n", text), text
    assert re.search(r"\+\s+set as-path prepend 201379 201379 201379\n", text), text
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    assert files(lab) == hashes
    lagrange = received(status.gather(lab), "lagrange")
    assert lagrange[0]["as_path"] == [201379, 201379, 201379]


def test_moving_the_vps_reconverges_without_resetting_anything_else(
    lab: Lab, inventory: Path
) -> None:
    before = established(status.gather(lab))
    gre0 = json.loads(
        subprocess.run(
            ["ip", "-n", lab.namespace("router01"), "-j", "link", "show", "gre0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]["ifindex"]
    edit(inventory, '"ssh_hostname": "203.0.113.10"', '"ssh_hostname": "203.0.113.77"')
    lab.up(inventory)  # the provider renumbers vps01's uplink
    assert not ping_from_upstream(lab, "ifog", VPS_ADDRESS)  # both tunnel ends are stale
    count = len(log(lab, "router01"))

    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    router = log(lab, "router01")[count:]
    assert actions(router) == [
        "ifconfig gif0 tunnel 198.51.100.10 203.0.113.77",
        "pfctl -f /etc/pf.conf",
    ]
    assert not [c for c in router if "gre0" in c or "gif1" in c]
    found = status.gather(lab)
    ends = {(t["host"], t["interface"]): t for t in found["tunnels"]}
    assert ends["vps01", "gif0"]["endpoints"] == ["203.0.113.77", "198.51.100.10"]
    assert ends["router01", "gif0"]["endpoints"] == ["198.51.100.10", "203.0.113.77"]
    assert ends["vps01", "gif0"]["up"] and not ends["router01", "gif0"]["drift"]
    assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)
    assert established(found) == before
    after = subprocess.run(
        ["ip", "-n", lab.namespace("router01"), "-j", "link", "show", "gre0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(after)[0]["ifindex"] == gre0


@pytest.mark.parametrize(
    ("template", "old", "new", "message"),
    [
        (
            "etc/pf.conf.j2",
            "# --- options ---",
            "pass in on $no_such_interface all\n# --- options ---",
            "/etc/pf.conf: the new version failed validation and was not installed",
        ),
        (
            "usr/local/etc/frr/frr.conf.j2",
            "router bgp {{ network.asn }}\n",
            "router bgp {{ network.asn }}\n bgp no-such-command\n",
            "/usr/local/etc/frr/frr.conf: the new version failed validation and was not installed",
        ),
    ],
    ids=["pf.conf", "frr.conf"],
)
def test_a_file_that_fails_validation_is_not_installed(
    lab: Lab, tmp_path: Path, template: str, old: str, new: str, message: str
) -> None:
    """A generator bug (a template patched in a copy of the project) meets the target's own
    check: nothing is installed and the running configuration stays as it was."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("deploy.py", "config.py"):
        shutil.copy(ROOT / name, copy)
    for name in ("tasks", "templates"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    edit(copy / "templates" / template, old, new)

    before = status.gather(lab)
    sessions = established(before)
    running = lab.vtysh("router01", "show running-config").stdout
    rules = json.loads((lab.host_dir("router01") / "state.json").read_text())["pf"]["rules"]
    hashes = files(lab)
    count = len(log(lab, "router01"))

    result = deploy(lab, "-y", cwd=copy, PYTHONPATH=str(copy))
    assert result.returncode == 1, output(result)
    assert message in output(result)
    assert actions(log(lab, "router01")[count:]) == []
    changed = {path for path, digest in files(lab).items() if hashes.get(path) != digest}
    assert all(path.endswith(".ownas-new") for path in changed), changed  # only the staged
    assert lab.vtysh("router01", "show running-config").stdout == running
    state = json.loads((lab.host_dir("router01") / "state.json").read_text())
    assert state["pf"]["rules"] == rules
    assert established(status.gather(lab)) == sessions


def test_an_unreachable_vps_fails_the_run_clearly_and_leaves_the_router_converged(
    lab: Lab, inventory: Path
) -> None:
    sessions = established(status.gather(lab))
    lab.stop_sshd("vps01")
    counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
    try:
        result = deploy(lab, "-y")
    finally:
        lab.up(inventory)  # sshd back
    assert result.returncode == 1
    text = output(result)
    assert "vps01: cannot connect over SSH" in text
    assert "nothing was changed on any host" in text
    assert "Traceback" not in text
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    assert established(status.gather(lab)) == sessions
    assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)


@pytest.mark.parametrize(
    ("host", "command", "message"),
    [
        ("router01", "service routing restart", "takes a live network down"),
        ("router01", "service frr restart", "takes a live network down"),
        ("router01", "service pf restart", "takes a live network down"),
        ("router01", "route -6 add 2001:db8:1::/48 ::1 -fib 3", "invalid fib number: 3"),
        ("router01", "route -6 add 2001:db8:1::/48 ::1 -proto1", "not syntax the deploy uses"),
        ("router01", "route -n -6 get -fib x default", "not syntax the deploy uses"),
        ("router01", "ifconfig gre0 tunnel 198.51.100.10", "'tunnel' requires 2 arguments"),
        ("router01", "ifconfig gre0 tunnel 198.51.100.10 198.51.100.99 up", "not syntax the"),
        ("router01", "ifconfig gre7 up", "interface gre7 does not exist"),
        ("router01", "ifconfig lo0 inet6 2001:db8::99 -alias", "Can't assign requested address"),
        ("router01", "kldload -n if_wg0", "can't load if_wg0: No such file or directory"),
        ("router01", "pkg install -y -- bird2", "the lab's pkg has only frr10"),
        ("router01", "service frr reload", "not syntax the deploy uses"),
        ("vps01", "sysctl net.fibs=1", "Capabilities insufficient"),
        ("vps01", "pfctl -nf /etc/passwd", "syntax error"),
        ("vps01", "uname -a", "not syntax the deploy uses"),
    ],
)
def test_the_stand_ins_refuse_what_the_deploy_must_never_run(
    lab: Lab, host: str, command: str, message: str
) -> None:
    """Only the syntax the deploy uses, what FreeBSD itself refuses, and never a restart that
    takes the network down: refused with a non-zero exit and nothing changed (the host's log
    records the refusal)."""
    state = (lab.host_dir(host) / "state.json").read_text()
    environment = [f"OWNAS_LAB={lab.dir}", f"OWNAS_LAB_HOST={lab.host_dir(host)}"]
    path = f"PATH={lab.dir}/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    result = lab.run_in(host, ["env", *environment, path, "sh", "-c", command], check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert (lab.host_dir(host) / "state.json").read_text() == state
    entry = json.loads((lab.host_dir(host) / "log.jsonl").read_text().splitlines()[-1])
    assert (entry["command"], entry["exit"]) == (command.split(), result.returncode)


def test_an_upstream_over_its_max_prefixes_is_cut_off_and_named(lab: Lab, inventory: Path) -> None:
    """maximum-prefix is enforced by FRR itself: Lagrange's BIRD sends five routes that pass the
    filters; with a limit of three FRR closes the session, and the deploy fails naming the
    upstream and the reason at once (no waiting: the session stays down for the restart
    interval), then rolls the router back: the previous frr.conf, without the limit, brings
    the session back at once. iFog's session is not touched. A limit the upstream stays under
    is then applied without resetting anything."""
    before = established(status.gather(lab))
    routers = inventory.parent / "group_data" / "routers.py"
    with as_before(routers):
        cut_off_and_back(lab, routers, before)


def cut_off_and_back(lab: Lab, routers: Path, before: dict[str, int]) -> None:
    edit(routers, '"prepend": 2,', '"prepend": 2, "max_prefixes": 3,')
    result = deploy(lab, "-y")
    assert result.returncode == 1, output(result)
    text = output(result)
    assert (
        "router01: BGP lagrange (2001:db8:100::ff, AS209735): Idle, not Established: it sent "
        "more than max_prefixes (3) routes that passed the filters" in text
    ), text
    assert "Traceback" not in text
    assert "restored /usr/local/etc/frr/frr.conf (the previous files, re-applied in order)" in (
        text
    )
    assert "the previous configuration is back and converged" in text
    after = established(status.gather(lab))
    assert after == {"ifog": before["ifog"], "lagrange": before["lagrange"] + 1}

    edit(routers, '"max_prefixes": 3,', '"max_prefixes": 300000,')
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert established(status.gather(lab)) == after
    count = len(log(lab, "router01"))
    result = deploy(lab, "-y")  # maximum-prefix is written as FRR shows it: nothing to reload
    assert result.returncode == 0, output(result)
    assert actions(log(lab, "router01")[count:]) == []
    assert outcome(result, "Router | Reload FRR", "router01") == "No changes"
    assert established(status.gather(lab)) == after


def lab_processes(lab: Lab) -> set[int]:
    """Every process in the lab's namespaces (FRR's daemons, BIRD, sshd, socat, inits)."""
    pids: set[int] = set()
    for namespace in lab.state()["namespaces"].values():
        listing = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        pids |= {int(pid) for pid in listing.stdout.split()}
    return pids


@pytest.mark.parametrize(
    ("how", "args", "stdin"),
    [
        ("from another directory", ("-y",), None),
        ("without -y, no terminal", (), subprocess.DEVNULL),
        ("without -y, Enter pressed", (), "\n\n\n"),
    ],
)
def test_an_unreachable_host_stops_every_kind_of_run_before_any_change(
    lab: Lab, inventory: Path, tmp_path: Path, how: str, args: tuple[str, ...], stdin: Any
) -> None:
    """Started from elsewhere (pyinfra reads config.py from the current directory only; then
    pyinfra goes on with the hosts it reached), or interactively (pyinfra asks whether to go
    on without an unreachable host): nothing on any host changes, and the output says why in
    one line, without a traceback."""
    elsewhere = how == "from another directory"
    lab.stop_sshd("vps01")
    hashes = files(lab)
    counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
    command = [sys.executable, "-m", "pyinfra", str(lab.inventory), str(ROOT / "deploy.py")]
    try:
        result = subprocess.run(
            [*command, *args],
            cwd=tmp_path if elsewhere else ROOT,
            **({"input": stdin} if isinstance(stdin, str) else {"stdin": stdin}),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        lab.up(inventory)  # sshd back
    text = output(result)
    assert result.returncode == 1, text
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    assert files(lab) == hashes
    assert "EOFError" not in text and "internal exception" not in text
    assert "continue?" not in text
    if elsewhere:
        assert (
            f"ownas's config.py was not read (pyinfra reads it from the current directory "
            f"only), so nothing would stop a half-done run: cd {ROOT}, which holds deploy.py "
            "and config.py, and run pyinfra from there" in text
        )
    else:
        assert "vps01: cannot connect over SSH" in text
    assert "Traceback" not in text


def test_a_downstream_alone_waits_for_its_router(lab: Lab, inventory: Path) -> None:
    """``--limit vps01`` while router01 runs an older pf.conf (a new trusted source is not
    deployed to it yet): router01 is read, not changed, and vps01 is not touched."""
    group = inventory.parent / "group_data" / "all.py"
    with as_before(group):
        edit(group, '"198.51.100.101",', '"198.51.100.101",\n    "198.51.100.102",')
        hashes = files(lab)
        counts = {host: len(log(lab, host)) for host in ("router01", "vps01")}
        result = deploy(lab, "-y", "--limit", "vps01")
    text = output(result)
    assert result.returncode == 1, text
    assert (
        "vps01: router01 does not run its side of the tunnel yet (/etc/pf.conf is not the "
        "planned one): deploy router01 first (without --limit, or --limit router01)" in text
    )
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host
    assert files(lab) == hashes
    # With the router as planned, vps01 alone is deployed (nothing to change).
    result = deploy(lab, "-y", "--limit", "vps01")
    assert result.returncode == 0, output(result)


def test_a_change_that_breaks_a_session_is_rolled_back(lab: Lab, inventory: Path) -> None:
    """A wrong upstream ASN: the session cannot come up, so after check_timeout the run puts
    the previous frr.conf back (the real restore script, under /bin/sh), reloads it, sees the
    session Established again, and ends with exit status 1. vps01 is never touched."""
    routers = inventory.parent / "group_data" / "routers.py"
    group = inventory.parent / "group_data" / "all.py"
    with as_before(routers), as_before(group):
        edit(routers, '"asn": 209735,', '"asn": 209736,')
        group.write_text(group.read_text() + "\ncheck_timeout = 30\n")
        frr_conf = lab.host_dir("router01") / "root/usr-local/etc/frr/frr.conf"
        before_conf = frr_conf.read_text()
        ifog = established(status.gather(lab))["ifog"]
        vps = len(log(lab, "vps01"))
        result = deploy(lab, "-y")
    text = output(result)
    assert result.returncode == 1, text
    assert "router01: BGP lagrange (2001:db8:100::ff, AS209736): " in text
    assert "restored /usr/local/etc/frr/frr.conf (the previous files, re-applied in order)" in (
        text
    )
    assert "the previous configuration is back and converged" in text
    assert frr_conf.read_text() == before_conf
    assert not (lab.host_dir("router01") / "root/var-db/ownas/run").exists()
    restored = (lab.host_dir("router01") / "root/var-db/ownas/restored").read_text()
    assert restored.split(" ", 1)[1] == "restored /usr/local/etc/frr/frr.conf\n"
    found = established(status.gather(lab))  # every session Established again
    assert found["ifog"] == ifog  # the other session was not reset
    assert actions(log(lab, "vps01")[vps:]) == []


def restore_timers(lab: Lab) -> list[str]:
    """Hosts where a restore timer (a process running ownas-restore) runs now."""
    found = []
    for name in ("router01", "vps01"):
        pids = subprocess.run(
            ["ip", "netns", "pids", lab.namespace(name)], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(OSError):
                if b"ownas-restore" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(name)
    return found


def test_a_change_that_locks_the_controller_out_is_undone_by_the_host(
    lab: Lab, inventory: Path
) -> None:
    """The new pf.conf cuts router01's management path (the lab's fault): the run loses the
    host, and the host's own timer puts the previous files back within check_timeout +
    confirm_timeout + 30 s, with pf and FRR running them and both sessions Established. The
    next run says so first, converges, and leaves no timer anywhere."""
    group = inventory.parent / "group_data" / "all.py"
    router_root = lab.host_dir("router01") / "root"
    pf_conf = (router_root / "etc/pf.conf").read_text()
    with as_before(group):
        edit(group, '"198.51.100.101",', '"198.51.100.101",\n    "198.51.100.102",')
        group.write_text(group.read_text() + "\ncheck_timeout = 10\nconfirm_timeout = 10\n")
        lab.lock_out("router01", "198.51.100.102")
        try:
            started = time.monotonic()
            result = deploy(lab, "-y")
            assert result.returncode == 1, output(result)
            assert "198.51.100.102" in (router_root / "etc/pf.conf").read_text()  # installed
            assert (lab.host_dir("router01") / "cut").exists()  # ...and locked out
            record = router_root / "var-db/ownas/restored"

            def restored_itself() -> bool:
                # The record is written last, after pf (which ends the cut) was reloaded.
                done = record.exists() and "/etc/pf.conf" in record.read_text()
                cut = (lab.host_dir("router01") / "cut").exists()
                return done and not cut and not restore_timers(lab)

            while time.monotonic() - started < 10 + 10 + 30 and not restored_itself():
                time.sleep(1)
            assert restored_itself(), "the host did not restore itself"
        finally:
            lab.lock_out("router01", None)
    assert (router_root / "etc/pf.conf").read_text() == pf_conf
    assert set(established(status.gather(lab))) == {"ifog", "lagrange"}
    result = deploy(lab, "-y")
    text = output(result)
    assert result.returncode == 0, text
    first_operation = text.split("--> Starting operation")[0]
    assert re.search(r"router01: restored itself at \S+: .*/etc/pf\.conf", first_operation)
    assert restore_timers(lab) == []
    for name in ("router01", "vps01"):
        assert not (lab.host_dir(name) / "root/var-db/ownas/timer.pid").exists()
        assert not (lab.host_dir(name) / "root/var-db/ownas/run").exists()


def test_another_lab_is_never_touched(lab: Lab, inventory: Path, tmp_path: Path) -> None:
    """A lab's namespaces are taken: a second lab refuses to start on them and removes
    nothing. `down` removes only what a lab's lab.json says it made, whatever the prefix (once
    a prefix match, which `ownas-` made of every `ownas-demo-*`): for a directory that holds no
    lab it removes nothing and deletes nothing."""
    pids = lab_processes(lab)
    other = Lab(tmp_path / "other", prefix=lab.prefix)
    with pytest.raises(LabError, match="exist, made by another lab"):
        other.up(inventory)
    stranger = tmp_path / "not-a-lab"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert Lab(stranger, prefix=lab.prefix.rsplit("-", 1)[0]).down() == []
    assert (stranger / "notes.txt").read_text() == "mine"
    assert all(running(pid) for pid in pids)
    assert established(status.gather(lab))


def test_a_failed_lab_up_leaves_nothing(inventory: Path, tmp_path: Path) -> None:
    """`up` that fails half-way (here: BIRD cannot start) removes what it made."""

    class BrokenUpstream(Lab):
        def _upstream(self, *args: Any, **kwargs: Any) -> None:
            raise LabError("injected: BIRD would not start")

    broken = BrokenUpstream(tmp_path / "broken", prefix=f"ownas-f{os.getpid()}")
    with pytest.raises(LabError, match="injected"):
        broken.up(inventory)
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert broken.prefix + "-" not in listing
    assert not broken.dir.exists()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _mentions(p, broken.dir)]


def _mentions(cmdline: Path, directory: Path) -> bool:
    try:
        return str(directory) in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False  # ended while we looked


# A second VPS, as an operator adds one: its own tunnel number and delegation.
VPS02 = """
downstreams.append(
    (
        "vps02",
        {
            "ssh_hostname": "203.0.113.18",
            "tunnel": 3,
            "delegate": "2a06:9801:1c:3000::/64",
            "wan_interface": "vtnet0",
        },
    )
)
"""


def test_a_downstream_added_to_the_running_lab_and_removed_again(lab: Lab, inventory: Path) -> None:
    def namespaces() -> list[str]:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return sorted(n for n in listing.split() if n.startswith(f"{lab.prefix}-"))

    running_before = namespaces()
    before = established(status.gather(lab))
    with as_before(inventory):
        inventory.write_text(inventory.read_text() + VPS02)
        lab.up(inventory)  # the lab runs vps02 now, and the router's end of gif3
        result = deploy(lab, "-y")
        assert result.returncode == 0, output(result)
        assert ping_from_upstream(lab, "ifog", "2a06:9801:1c:3000::1")
        assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)
        assert lab.namespace("vps02") in namespaces()
    lab.up(inventory)  # vps02 is gone, with its tunnel
    assert namespaces() == running_before
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)
    assert established(status.gather(lab)) == before


RETIRED_VPS02 = """
retired = [("vps02", {"ssh_hostname": "203.0.113.18"})]
"""


def dry_run_shows(lab: Lab, *lines: str) -> None:
    """A dry run shows each of ``lines`` (a regular expression) and changes nothing."""
    counts = {host: len(log(lab, host)) for host in lab.state()["topology"]["managed"]}
    dry = deploy(lab, "--dry", "--diff")
    assert dry.returncode == 0, output(dry)
    for line in lines:
        assert re.search(line, output(dry)), (line, output(dry))
    for host, count in counts.items():
        assert actions(log(lab, host)[count:]) == [], host


def test_a_downstream_added_then_retired_touches_nothing_else(lab: Lab, inventory: Path) -> None:
    """The operator's procedure (README, "Adding a downstream", "Retiring a downstream"): add
    vps02 to the running lab and deploy; retire it (its side goes too, SSH stays); deploy again
    while it cannot be reached (a warning); then forget it. Each step resets no session."""
    before = established(status.gather(lab))
    original = inventory.read_text()
    try:
        inventory.write_text(original + VPS02)
        lab.up(inventory)
        dry_run_shows(
            lab,
            r"\[router01\].*will modify /etc/rc.conf.d/netif",
            r'\+\s*cloned_interfaces="\$\{cloned_interfaces\} gif0 gif1 gif3 gre0"',
            r"\[vps02\].*will create /etc/pf.conf",
        )
        result = deploy(lab, "-y")
        assert result.returncode == 0, output(result)
        assert ping_from_upstream(lab, "ifog", "2a06:9801:1c:3000::1")

        inventory.write_text(original + RETIRED_VPS02)
        lab.up(inventory)  # vps02 keeps running: the deploy has to reach it
        dry_run_shows(
            lab,
            r"vps02: retired: removes tunnel gif0, lo0 address 2a06:9801:1c:3000::1",
            r'-\s*ifconfig_gif0="tunnel 203.0.113.18 198.51.100.10 fib 1 tunnelfib 0"',
            r'-\s*ifconfig_gif3="tunnel 198.51.100.10 203.0.113.18"',
        )
        count = len(log(lab, "vps02"))
        result = deploy(lab, "-y")
        assert result.returncode == 0, output(result)
        assert "ifconfig gif0 destroy" in actions(log(lab, "vps02")[count:])
        found = status.gather(lab)
        assert found["converged"], found["findings"]
        assert {(t["host"], t["interface"]) for t in found["tunnels"]} == {
            ("router01", "gif0"),
            ("router01", "gif1"),
            ("router01", "gre0"),
            ("vps01", "gif0"),
        }
        assert next(p for p in found["pf"] if p["host"] == "vps02")["in_sync"]
        assert not ping_from_upstream(lab, "ifog", "2a06:9801:1c:3000::1")
        assert established(found) == before

        lab.stop_sshd("vps02")  # switched off before the inventory forgets it
        result = deploy(lab, "-y")
        assert result.returncode == 0, output(result)
        assert "vps02: retired, and cannot connect over SSH" in output(result)
        assert "Traceback" not in output(result)
    finally:
        inventory.write_text(original)
    lab.up(inventory)  # vps02 leaves the lab
    assert (
        lab.namespace("vps02")
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    result = deploy(lab, "-y")
    assert result.returncode == 0, output(result)
    assert ping_from_upstream(lab, "ifog", VPS_ADDRESS)
    assert established(status.gather(lab)) == before


def test_lab_down_leaves_no_namespace_or_process(lab: Lab) -> None:
    pids = lab_processes(lab)
    assert len(pids) >= 10  # inits, sshds, zebra, staticd, bgpd, birds, ...
    removed = lab.down()
    assert len(removed) == 5  # router01, vps01, ifog, lagrange, inet
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix + "-" not in listing
    assert [pid for pid in pids if running(pid)] == []
    assert not lab.dir.exists()
