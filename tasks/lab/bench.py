"""``make bench``: what a deploy costs, measured in the lab (root; not part of ``make test``).

One table: each step's wall time, its ratio to ``pyinfra INV exec -- true`` on the same hosts
measured in the same run (pyinfra's own floor: connect, one command, disconnect), and the
commands each host ran, counted by the hosts' login shell (tasks.lab.lab, REMOTE_LOG), not
by ownas. Steps: the first deploy, an unchanged rerun (with -y, and confirmed at pyinfra's
prompt), a dry run, a one-line change of frr.conf (and its undoing), and moving a VPS. Then a
second table: the running lab grown to 1, 5, 10 and 20 managed downstreams, each deployed,
rerun unchanged, and compared with ``exec -- true`` on as many hosts.
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
from dataclasses import dataclass
from pathlib import Path

from tasks.lab.lab import PROJECT, Lab

HOSTS = ("router01", "vps01")


def _pyinfra(lab: Lab, *args: str, confirm: bool = False) -> float:
    """Run pyinfra against the lab from the project folder; return its wall time. With
    ``confirm`` it runs on a terminal, where pyinfra shows the changes and asks to go on: the
    Enter it waits for is typed ahead (the terminal keeps it until pyinfra reads it)."""
    return _timed([sys.executable, "-m", "pyinfra", str(lab.inventory), *args], confirm)


def _status(lab: Lab) -> float:
    """``ownas status`` against the lab's hosts, through the lab's inventory."""
    return _timed([sys.executable, "-m", "tasks.cli", "status", "-i", str(lab.inventory)])


def _timed(command: list[str], confirm: bool = False) -> float:
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
        shown = result.stdout[-3000:] + result.stderr[-3000:]
        sys.exit(f"bench: {' '.join(command[2:])} failed:\n{shown}")
    return elapsed


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        sys.exit(f"bench: {old!r} is not in {path}")
    path.write_text(text.replace(old, new, 1))


def downstreams(count: int) -> str:
    """Python that adds ``count`` managed downstreams to the example inventory (vps01 is one):
    each its own provider address, tunnel number and delegation."""
    entries = [
        (
            f"vps{index + 2:02d}",
            {
                "ssh_hostname": f"192.0.2.{66 + 8 * index}",
                "tunnel": 10 + index,
                "delegate": f"2a06:9801:1c:{0x4000 + index:x}::/64",
                "wan_interface": "vtnet0",
            },
        )
        for index in range(count - 1)
    ]
    return f"\ndownstreams += {entries!r}\n"


SCALE = (1, 5, 10, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.lab.bench", description=__doc__)
    parser.add_argument("--dir", type=Path, default=PROJECT / ".lab-bench")
    parser.add_argument("--prefix", default="ownas-bench")
    parser.add_argument(
        "--scale", type=int, nargs="*", default=list(SCALE), help="downstream counts to deploy"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ownas-bench-"))
    shutil.copy(PROJECT / "inventory.py", work)
    shutil.copytree(PROJECT / "group_data", work / "group_data")
    inventory, routers = work / "inventory.py", work / "group_data/routers.py"
    lab = Lab(args.dir, args.prefix)
    lab.down()
    rows: list[Row] = []
    scale: list[tuple[int, Row, Row, Row]] = []

    def step(label: str, run: Callable[[], float]) -> Row:
        hosts = list(lab.state()["hosts"])
        before = {name: lab.remote_commands(name) for name in hosts}
        started = time.time()
        elapsed = run()
        runs = [span for name in hosts for span in lab.standin_runs(name) if span[1] > started]
        return Row(
            label, elapsed, {n: lab.remote_commands(n) - before[n] for n in hosts}, _covered(runs)
        )

    deploy = ("deploy.py", "-y")
    floor = ("exec", "--", "true")
    try:
        lab.up(inventory)
        rows.append(step("pyinfra INV exec -- true", lambda: _pyinfra(lab, *floor)))
        rows.append(step("first deploy", lambda: _pyinfra(lab, *deploy)))
        rows.append(step("unchanged rerun (-y)", lambda: _pyinfra(lab, *deploy)))
        rows.append(
            step("unchanged rerun, confirmed", lambda: _pyinfra(lab, "deploy.py", confirm=True))
        )
        rows.append(
            step("dry run (--dry --diff)", lambda: _pyinfra(lab, "deploy.py", "--dry", "--diff"))
        )
        rows.append(step("ownas status", lambda: _status(lab)))
        _edit(routers, '"prepend": 2', '"prepend": 3')
        rows.append(step("one-line frr.conf change", lambda: _pyinfra(lab, *deploy)))
        _edit(routers, '"prepend": 3', '"prepend": 2')
        rows.append(step("...and back", lambda: _pyinfra(lab, *deploy)))
        _edit(inventory, '"ssh_hostname": "203.0.113.10"', '"ssh_hostname": "203.0.113.99"')
        lab.up(inventory)  # the provider gives vps01 its new address
        rows.append(step("move a VPS", lambda: _pyinfra(lab, *deploy)))
        rows.append(step("exec -- true, again", lambda: _pyinfra(lab, *floor)))
        example = inventory.read_text()  # vps01 where it moved to
        for count in args.scale:
            inventory.write_text(example + downstreams(count))
            lab.up(inventory)  # the running lab adds (or removes) downstreams
            added = step(f"deploy to {count}", lambda: _pyinfra(lab, *deploy))
            rerun = step(f"rerun with {count}", lambda: _pyinfra(lab, *deploy))
            scale.append((count, step("floor", lambda: _pyinfra(lab, *floor)), added, rerun))
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    print(report(rows))
    if scale:
        print()
        print(scale_report(scale))
    return 0


@dataclass(frozen=True)
class Row:
    label: str
    elapsed: float
    commands: dict[str, int]  # per host
    # Seconds during which some host ran a stand-in for a FreeBSD command (FreeBSD's own
    # commands take milliseconds): the lab's share of the wall time.
    standins: float

    @property
    def rest(self) -> float:
        """The wall time while no stand-in ran: pyinfra, SSH and ownas."""
        return self.elapsed - self.standins


def _covered(spans: list[tuple[float, float]]) -> float:
    """How much time the (start, end) spans cover together (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def report(rows: list[Row]) -> str:
    """The table; the floor is the mean of the two ``exec -- true`` runs. ``stand-ins s``: how
    long some host was running a stand-in for a FreeBSD command (Python processes, about 0.1 s
    each; FreeBSD's own commands take milliseconds); ``rest``: the wall time while none ran,
    pyinfra's, SSH's and ownas's own."""
    floors = [row.elapsed for row in rows if "exec -- true" in row.label]
    floor = sum(floors) / len(floors)
    header = (
        f"{'step':<28} {'wall s':>7} {'x floor':>8} {'stand-ins s':>12} {'rest x floor':>13} "
        + " ".join(f"{name + ' cmds':>14}" for name in HOSTS)
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.label:<28} {row.elapsed:7.1f} {row.elapsed / floor:8.1f} "
            f"{row.standins:12.1f} {row.rest / floor:13.1f} "
            + " ".join(f"{row.commands.get(name, 0):>14}" for name in HOSTS)
        )
    return "\n".join(lines)


def scale_report(scale: list[tuple[int, Row, Row, Row]]) -> str:
    """Per count of managed downstreams: ``exec -- true`` on every host, the deploy that brought
    the lab to that count, an unchanged rerun (its ratio to the floor and to the first count;
    how long some stand-in ran in it, all hosts sharing this machine's cores where each
    FreeBSD would run its own; the rest), and the rerun's commands: the router's, and the most
    any downstream ran."""
    header = (
        f"{'downstreams':>11} {'floor s':>8} {'deploy s':>9} {'rerun s':>8} {'x floor':>8} "
        f"{f'x rerun({scale[0][0]})':>10} {'stand-ins s':>12} {'rest x floor':>13} "
        f"{'router cmds':>12} "
        f"{'downstream cmds':>16}"
    )
    lines = [header, "-" * len(header)]
    first = scale[0][3].elapsed
    for count, floor, added, rerun in scale:
        router = rerun.commands.get(HOSTS[0], 0)
        most = max((n for name, n in rerun.commands.items() if name != HOSTS[0]), default=0)
        lines.append(
            f"{count:>11} {floor.elapsed:8.1f} {added.elapsed:9.1f} {rerun.elapsed:8.1f} "
            f"{rerun.elapsed / floor.elapsed:8.1f} {rerun.elapsed / first:10.1f} "
            f"{rerun.standins:12.1f} {rerun.rest / floor.elapsed:13.1f} {router:>12} {most:>16}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
