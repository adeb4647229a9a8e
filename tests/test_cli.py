"""`ownas check` on the example inventory: exit 0 and a one-screen summary of the address plan."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.inventories import ROOT, host, upstream, write


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_check_summarises_the_reference_plan():
    result = check()
    assert result.returncode == 0, result.stderr
    # The example's addresses are documentation ones: warned about, and still exit 0.
    example = "not routed on the Internet; right for the example inventory and the lab only"
    assert result.stderr.splitlines() == [
        "warning: router01.wan.ipv4: 198.51.100.10 is a documentation address (RFC 5737), and "
        f"every downstream (and settings.txt) gets it as its tunnel's far end: {example}",
        f"warning: dcgw01.endpoint: 192.0.2.50 is a documentation address (RFC 5737): {example}",
        f"warning: vps01.endpoint: 203.0.113.10 is a documentation address (RFC 5737): {example}",
    ]
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert lines[0] == "AS201379  prefix 2a06:9801:1c::/48  link subnet 2a06:9801:1c:ffff::/64"
    expected = [
        "  ifog       AS34927   peer 2001:db8:300::1  gre0 to 198.51.100.44 (mtu 1476, mss 1416)",
        "             prefix-list PL-BOGONS and filter-list ASPATH-BOGONS in, route-map "
        "RM-IFOG-OUT out; communities 34927:9301 34927:9501",
        "  lagrange   AS209735  peer 2001:db8:100::ff  on vtnet0",
        "             prefix-list PL-BOGONS and filter-list ASPATH-BOGONS in, route-map "
        "RM-LAGRANGE-OUT out; prepend 201379 x2",
        "  gif0  vps01      2a06:9801:1c:1000::/64   to 203.0.113.10 (managed)",
        " " * 19 + "inner 2a06:9801:1c:ffff::1 <-> 2a06:9801:1c:ffff::2  (mtu 1280, mss 1220)",
        " " * 19
        + "inbound: ssh from trusted; jails vnet; modules if_bridge if_epair if_gif pf pflog",
        "  gif1  dcgw01     2a06:9801:1c:2000::/62   to 192.0.2.50 (unmanaged, opnsense)",
        " " * 19 + "inner 2a06:9801:1c:ffff::3 <-> 2a06:9801:1c:ffff::4  (mtu 1280, mss 1220)",
    ]
    for line in expected:
        assert line in lines, line
    assert len(lines) <= 25  # one screen


def test_check_shows_a_prefix_limit(ref, tmp_path):
    upstream(ref, "lagrange")["max_prefixes"] = 300000
    result = check("--inventory", str(write(tmp_path, ref)))
    assert result.returncode == 0, result.stderr
    assert "prepend 201379 x2; at most 300000 prefixes" in result.stdout


def test_check_shows_what_a_downstream_opens_and_the_modules_it_needs(ref, tmp_path):
    host(ref, "vps01")["services"] = [{"proto": "tcp", "port": [80, 443]}]
    host(ref, "vps01")["securelevel"] = 1
    host(ref, "vps01")["lan"]["jails"] = "shared"
    result = check("--inventory", str(write(tmp_path, ref)))
    assert result.returncode == 0, result.stderr
    assert (
        "inbound: ssh from trusted, tcp/80,443 to host; jails shared; modules if_gif pf pflog "
        "(securelevel 1: at boot only)" in result.stdout
    )


def test_lab_down_without_a_lab_removes_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "lab", "down", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"lab down: no lab in {tmp_path} (no lab.json); nothing removed\n"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_lab_status_without_a_lab_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "lab", "status", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"ownas lab status: no lab in {tmp_path} (no lab.json): `ownas lab up --dir {tmp_path} "
        "--prefix ownas` first\n"
    )


def test_each_lab_action_has_its_own_help_and_options():
    def ownas(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasks.cli", *args], cwd=ROOT, capture_output=True, text=True
        )

    up = ownas("lab", "up", "--help")
    assert up.returncode == 0 and up.stdout.startswith("usage: ownas lab up ")
    assert "--json" not in up.stdout and "write DIR/inventory.py" in up.stdout
    status = ownas("lab", "status", "--help")
    assert "--json" in status.stdout and "--inventory" not in status.stdout
    refused = ownas("lab", "up", "--json")
    assert refused.returncode == 2
    assert refused.stderr.endswith("ownas: error: unrecognized arguments: --json\n")
    check = ownas("check", "--help")
    assert "Validate the inventory (every problem at once" in check.stdout


def test_status_of_hosts_that_cannot_be_reached_exits_2(ref, tmp_path):
    """Over real SSH (pyinfra's connector) to a port nothing listens on: each host is named
    with why, the JSON says so, and the exit status is 2, without a traceback."""
    for name in ("router01", "vps01"):
        host(ref, name).update(ssh_hostname="127.0.0.1", ssh_port=9, ssh_connect_retries=0)
    host(ref, "vps01")["endpoint"] = "203.0.113.10"
    inventory = write(tmp_path, ref)
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "status", "-i", str(inventory), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [(h["name"], h["reached"]) for h in report["hosts"]] == [
        ("router01", False),
        ("vps01", False),
    ]
    assert all(h["error"].startswith("cannot connect over SSH") for h in report["hosts"])
    assert not report["converged"] and report["sessions"] == []
    assert "Traceback" not in result.stderr


# `ownas ARGS` from whichever tasks package Python finds first, saying which (on stderr).
RUN_INSTALLED = (
    "import sys, tasks.cli; print(tasks.cli.__file__, file=sys.stderr); sys.exit(tasks.cli.main())"
)


def test_a_non_editable_install_renders_and_checks(tmp_path, wheel):
    """What `pip install .` installs (the wheel, not this folder) carries the templates and the
    data: `ownas render` from it, in another folder, writes exactly the golden files, and
    `ownas --version` names the release. (The lab's tests deploy from a fresh venv with it.)"""
    site, out = tmp_path / "site", tmp_path / "out"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)

    def ownas(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                RUN_INSTALLED,
                *args,
            ],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    rendered = ownas("render", "-i", str(ROOT / "inventory.py"), "-o", str(out))
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stderr.startswith(str(site)), rendered.stderr  # the installed copy ran
    golden = ROOT / "tests" / "golden"
    expected = sorted(
        p.relative_to(golden) for p in golden.rglob("*") if p.is_file() and p.name != "REVIEW.md"
    )
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == expected
    for path in expected:
        assert (out / path).read_text() == (golden / path).read_text(), path
    checked = ownas("check", "-i", str(ROOT / "inventory.py"))
    assert checked.returncode == 0, checked.stderr
    assert ownas("--version").stdout == "ownas 0.1.0\n"


def render(inventory, out) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "render", "-i", str(inventory), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_render_into_a_file_is_one_line(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    result = render(ROOT / "inventory.py", target)
    assert result.returncode == 2
    assert result.stderr == (
        f"ownas render: {target} is a file; -o needs a folder (new, or one ownas rendered into)\n"
    )
    assert target.read_text() == "mine"


def test_rendering_again_removes_what_a_host_taken_out_had_and_nothing_else(ref, tmp_path):
    out = tmp_path / "out"
    first = render(write(tmp_path / "before", ref), out)
    assert first.returncode == 0, first.stderr
    (out / "notes.txt").write_text("mine")
    (out / "vps01" / "etc" / "mine.conf").write_text("mine")
    ref["inventory"]["downstreams"] = []
    result = render(write(tmp_path / "after", ref), out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"wrote 16 files for 1 managed host to {out}/; removed 10 it had rendered there before "
        "(vps01)\n"
    )
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "notes.txt" in left and "vps01/etc/mine.conf" in left
    assert [p for p in left if p.startswith("vps01/")] == ["vps01/etc/mine.conf"]
    assert not (out / "vps01" / "boot").exists()
