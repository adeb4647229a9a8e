"""The composite read (facts.HostState) run by the real /bin/sh: each section answers what its
fact alone would, whatever the commands before it printed; and what each host is asked."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.facts.freebsd import ServiceStatus

from tasks import facts, freebsd
from tasks.checks import probe_reads
from tasks.facts import HostState, Read
from tasks.plan import Plan
from tasks.preflight import Preflight
from tasks.snapshot import deploy_reads


def run(reads: tuple[Read, ...]) -> dict[Read, object]:
    """The composite command as sh runs it, parsed as pyinfra would (stdout lines)."""
    fact = HostState()
    command = fact.command(reads=reads)
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return fact.process(output.stdout.splitlines())


def test_each_section_is_parsed_by_its_own_fact(tmp_path: Path) -> None:
    unterminated = tmp_path / "no-newline"
    unterminated.write_text('ifconfig_lo0_alias0="inet6 ::1"')  # no newline at the end
    missing = tmp_path / "missing"
    reads = (
        Read.of(FileContents, path=str(unterminated)),
        Read.of(FileContents, path=str(missing)),
        Read.of(Sha256File, path=str(missing)),
        Read.of(facts.Exists, path=str(unterminated)),
        Read.of(facts.Exists, path=str(missing)),
    )
    answers = run(reads)
    assert answers == {
        reads[0]: ['ifconfig_lo0_alias0="inet6 ::1"'],  # the next section's mark is not in it
        reads[1]: None,
        reads[2]: None,
        reads[3]: True,
        reads[4]: False,
    }


def test_a_read_cut_short_or_unparsable_fails_instead_of_answering_defaults() -> None:
    fact = HostState()
    reads = (Read.of(facts.Exists, path="/a"), Read.of(facts.BgpNeighbors))
    marks = re.findall(r"echo '(@@ownas-\S+ \d+@@)'", fact.command(reads=reads))
    assert len(marks) == 3
    # The connection dropped inside the second section (or its output could not be decoded).
    with pytest.raises(FactProcessError, match=r"ended early, in BgpNeighbors\(\)"):
        fact.process([marks[0], "yes", marks[1], "{"])
    # vtysh printed something that is not JSON.
    with pytest.raises(FactProcessError, match=r"BgpNeighbors\(\): "):
        fact.process([marks[0], "yes", marks[1], "% Unknown command", marks[2]])
    assert fact.process([marks[0], "yes", marks[1], marks[2]]) == {reads[0]: True, reads[1]: {}}


def test_a_csh_login_shell_still_reads_so_the_pre_flight_can_say_it_is_wrong(
    tmp_path: Path,
) -> None:
    """pyinfra sends ``sh -c '...'`` to the login shell (tcsh: FreeBSD's csh), which refuses a
    newline inside quotes: the read is one line, and the pre-flight names the shell."""
    fact = HostState()
    reads = (Read.of(facts.Exists, path=str(tmp_path)), Read.of(facts.LoginShell))
    command = f"sh -c {shlex.quote(fact.command(reads=reads))}"
    output = subprocess.run(["tcsh", "-c", command], capture_output=True, text=True, check=True)
    assert fact.process(output.stdout.splitlines())[reads[0]] is True


def test_the_pre_flight_reads_what_the_operations_ask(plan: Plan) -> None:
    router, frr = deploy_reads(plan, plan.host("router01"), [freebsd.PF_CONF], diff=False)
    assert Read.of(ServiceStatus, srvname="frr") in router
    assert Read.of(Sha256File, path=freebsd.PF_CONF) in router
    assert Read.of(FileContents, path=freebsd.PF_CONF) not in router  # only with --diff
    assert len(router) == len(set(router))
    # FRR's own state, read when the FRR operation asks: the policy counts walk every route.
    assert Read.of(facts.FrrPending, path=freebsd.FRR_CONF) in frr
    assert any(r.fact is facts.PolicyCounts for r in frr)
    (vps,) = deploy_reads(plan, plan.host("vps01"), [freebsd.PF_CONF], diff=True)
    assert Read.of(FileContents, path=freebsd.PF_CONF) in vps
    assert Read.of(facts.ListeningSockets) in vps
    assert not any(r.fact is facts.FrrPending for r in vps)


def test_a_poll_pings_everything_at_once(plan: Plan) -> None:
    reads = probe_reads(plan, plan.host("vps01"), Preflight())
    pings = [r for r in reads if r.fact is facts.Pings]
    assert len(pings) == 1
    command = HostState().command(reads=reads)
    assert command.count(" & ") == len(dict(pings[0].kwargs)["pings"])
