"""``make bench``: what a deploy costs, measured in the lab (root; not part of ``make test``).

One table: each step's wall time, its ratio to ``pyinfra INV exec -- true`` on the same hosts
measured in the same run (pyinfra's own floor: connect, one command, disconnect), and the
commands each host ran, counted by the hosts' login shell (tasks.lab.lab, REMOTE_LOG), not
by ownas. Steps: the first deploy, an unchanged rerun (with -y, and confirmed at pyinfra's
prompt), a dry run, a one-line change of frr.conf (and its undoing), and moving a VPS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tasks.lab.lab import PROJECT, Lab

HOSTS = ("router01", "vps01")


def _pyinfra(lab: Lab, *args: str, confirm: bool = False) -> float:
    """Run pyinfra against the lab from the project folder; return its wall time. With
    ``confirm`` it runs on a terminal, where pyinfra shows the changes and asks to go on: the
    Enter it waits for is typed ahead (the terminal keeps it until pyinfra reads it)."""
    command = [sys.executable, "-m", "pyinfra", str(lab.inventory), *args]
    terminal, typed = os.openpty() if confirm else (None, None)
    if typed is not None:
        os.write(terminal, b"\n")
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=PROJECT, stdin=typed, capture_output=True, text=True, check=False
        )
    finally:
        for descriptor in (terminal, typed):
            if descriptor is not None:
                os.close(descriptor)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return elapsed


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        sys.exit(f"bench: {old!r} is not in {path}")
    path.write_text(text.replace(old, new, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.lab.bench", description=__doc__)
    parser.add_argument("--dir", type=Path, default=PROJECT / ".lab-bench")
    parser.add_argument("--prefix", default="ownas-bench")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ownas-bench-"))
    shutil.copy(PROJECT / "inventory.py", work)
    shutil.copytree(PROJECT / "group_data", work / "group_data")
    inventory, routers = work / "inventory.py", work / "group_data/routers.py"
    lab = Lab(args.dir, args.prefix)
    lab.down()
    rows: list[tuple[str, float, dict[str, int]]] = []

    def step(label: str, run: Callable[[], float]) -> None:
        before = {name: lab.remote_commands(name) for name in HOSTS}
        elapsed = run()
        counts = {name: lab.remote_commands(name) - before[name] for name in HOSTS}
        rows.append((label, elapsed, counts))

    deploy = ("deploy.py", "-y")
    try:
        lab.up(inventory)
        step("pyinfra INV exec -- true", lambda: _pyinfra(lab, "exec", "--", "true"))
        step("first deploy", lambda: _pyinfra(lab, *deploy))
        step("unchanged rerun (-y)", lambda: _pyinfra(lab, *deploy))
        step("unchanged rerun, confirmed", lambda: _pyinfra(lab, "deploy.py", confirm=True))
        step("dry run (--dry --diff)", lambda: _pyinfra(lab, "deploy.py", "--dry", "--diff"))
        _edit(routers, '"prepend": 2', '"prepend": 3')
        step("one-line frr.conf change", lambda: _pyinfra(lab, *deploy))
        _edit(routers, '"prepend": 3', '"prepend": 2')
        step("...and back", lambda: _pyinfra(lab, *deploy))
        _edit(inventory, '"ssh_hostname": "203.0.113.10"', '"ssh_hostname": "203.0.113.99"')
        lab.up(inventory)  # the provider gives vps01 its new address
        step("move a VPS", lambda: _pyinfra(lab, *deploy))
        step("exec -- true, again", lambda: _pyinfra(lab, "exec", "--", "true"))
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    print(report(rows))
    return 0


def report(rows: list[tuple[str, float, dict[str, int]]]) -> str:
    """The table; the floor is the mean of the two ``exec -- true`` runs."""
    floors = [elapsed for label, elapsed, _ in rows if "exec -- true" in label]
    floor = sum(floors) / len(floors)
    header = f"{'step':<28} {'wall s':>7} {'x floor':>8} " + " ".join(
        f"{name + ' cmds':>14}" for name in HOSTS
    )
    lines = [header, "-" * len(header)]
    for label, elapsed, counts in rows:
        lines.append(
            f"{label:<28} {elapsed:7.1f} {elapsed / floor:8.1f} "
            + " ".join(f"{counts[name]:>14}" for name in HOSTS)
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
