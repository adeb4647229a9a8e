"""The deploy as pyinfra @deploy functions, in the order that keeps a live network up.

Per host: install missing packages, load modules, grow FIBs, stage and validate every file,
install them all, then reload in order — tunnels, routes (FIBs), pf, FRR — and prove
convergence. deploy.py runs the router's section, then a barrier every host reaches from the
same line, then the downstreams' sections: pyinfra's ordering therefore finishes (and verifies)
the router before any downstream starts, and with FAIL_PERCENT 0 a failed router stops the run.

Before any of that: ``gate`` validates the inventory before pyinfra connects anywhere, and the
first host's deploy.py run pre-flights every host, so that a problem on any host stops the run
before anything changed on any host.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import click
import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_state

from tasks import checks, freebsd, operations, preflight, snapshot, ssh
from tasks.inventory import load_inventory
from tasks.model import InventoryError, host_name
from tasks.plan import Plan, load, rtr_caches
from tasks.render import render_host


@dataclass(frozen=True)
class Run:
    """What one pyinfra run knows before any operation: the plan, the files, the pre-flights."""

    plan: Plan
    files: dict[str, dict[str, str]]
    preflights: dict[str, preflight.Preflight]
    # Retired hosts left as they are this run (unreadable, or their pre-flight found problems):
    # nothing depends on them, so they do not stop the rest of the network.
    skipped: frozenset[str] = frozenset()
    # Set once the router's section is prepared: the downstreams' wait for it, so that what a
    # dry run says comes router first (pyinfra prepares every host at once, in greenlets).
    router_prepared: Event | None = field(default=None, compare=False)


class Refused(PyinfraError):
    """The run is refused before any operation; the problems were already printed, one line
    each. pyinfra reports it as one ``pyinfra error`` line, without a traceback."""


def _refuse(problems: list[str], where: str) -> NoReturn:
    """Report every problem once, one line each, and end the run before any change."""
    for line in problems:
        logger.error(line)
    count = len(problems)
    raise Refused(f"{count} problem{'s' if count > 1 else ''} {where}")


def _plan(state: Any) -> Plan:
    try:
        return load(state.inventory)
    except InventoryError as error:  # an inventory gate() could not read (not a file)
        _refuse(error.problems, "in the inventory; nothing was changed on any host")


def gate() -> None:
    """Validate the inventory before pyinfra connects to any host (config.py calls this).

    pyinfra reads config.py before it loads the inventory and connects; the inventory named on
    its command line is loaded here the same way, and a bad one stops the run with the same
    lines as ``ownas check`` — no host is contacted.
    """
    context = click.get_current_context(silent=True)
    options = dict(context.params) if context else {}
    # deploy.py is read in gevent greenlets, where click's context is not to be had: keep
    # the command line's options for _require_safety.
    ctx_state.get().ownas_options = options
    path = options.get("inventory")
    if not path or not Path(path).is_file():
        return
    try:
        plan = load(load_inventory(path, cwd=Path.cwd()))
    except InventoryError as error:
        _stop(error.problems, "in the inventory; no host was contacted")
    for line in plan.warnings:
        logger.warning(line)


def _stop(problems: list[str], where: str) -> NoReturn:
    """Report every problem, one line each, and end the run (exit status 1, no traceback)."""
    for line in problems:
        logger.error(line)
    count = len(problems)
    logger.error(f"--> {count} problem{'s' if count > 1 else ''} {where}")
    raise SystemExit(1)


# pyinfra reads deploy.py for every host at once (gevent): the first computes the run, the
# others wait for it and take its result, or its refusal.
_ONCE = Semaphore()


def current(state: Any) -> Run:
    """The run's plan and every active host's pre-flight, computed once (while preparing)."""
    with _ONCE:
        cached = getattr(state, "_ownas_run", None)
        if isinstance(cached, PyinfraError):
            raise cached
        if cached is None:
            try:
                cached = _compute(state)
            except PyinfraError as error:  # every host's deploy.py stops with the same line
                state._ownas_run = error
                raise
            state._ownas_run = cached
        return cached


def _compute(state: Any) -> Run:
    _require_safety(state)
    plan = _plan(state)
    targets = [h for h in state.inventory.get_active_hosts() if host_name(h) in plan.hosts]
    files = {name: render_host(plan, name) for name in plan.hosts}
    reads = {
        name: snapshot.deploy_reads(plan, plan.host(name), list(files[name]), state.config.DIFF)
        for name in map(host_name, targets)
    }
    # Every host at once (pyinfra's pool for facts, --parallel wide): a run costs the slowest
    # host's read, not their sum.
    jobs = {
        host_name(t): state.fact_pool.spawn(_gather, t, reads[host_name(t)][0]) for t in targets
    }
    gevent.joinall(list(jobs.values()))
    retired = {name for name in jobs if plan.host(name).role == "retired"}
    skipped = {name for name in retired if jobs[name].get() is None}
    for name in sorted(skipped):
        logger.warning(f"{name}: retired, and its state could not be read: left as it is")
    unread = [name for name, job in jobs.items() if job.get() is None and name not in retired]
    if unread:
        _refuse(
            [f"{name}: its state could not be read (the lines above say why)" for name in unread],
            "in reading the hosts; nothing was changed on any host",
        )
    preflights = {}
    for target in targets:
        name = host_name(target)
        if name in skipped:
            continue
        answers = jobs[name].get()
        snapshot.plan(name, reads[name], answers)
        found = preflight.found_in(answers, plan.host(name), target.data)
        preflights[name] = preflight.evaluate(plan, plan.host(name), files[name], found)
    for name in sorted(retired - skipped):
        if preflights[name].problems:
            skipped.add(name)
            for line in preflights[name].problems:
                logger.warning(f"{line} (retired: left as it is this run)")
    for name, verdict in preflights.items():
        # A retired host left as it is says only what happened to it before: its restore,
        # always the first note.
        shown = verdict.notes[: 1 if verdict.restored else 0] if name in skipped else verdict.notes
        for note in shown:
            logger.warning(note)
    problems = [
        line
        for name, verdict in preflights.items()
        if name not in skipped
        for line in verdict.problems
    ]
    problems += _router_side(state, plan, files, [host_name(t) for t in targets])
    if problems:
        _refuse(problems, "found by the pre-flight; nothing was changed on any host")
    # A retired host left as it is (its read failed) is no failure of the run either.
    state.failed_hosts -= {t for t in targets if host_name(t) in skipped}
    state.add_callback_handler(Said(tuple(plan.hosts)))
    # Waiting is safe only when every host's deploy.py runs at once: pyinfra reads them in its
    # pool, and a pool smaller than the hosts (--parallel N) could be full of waiting
    # downstreams before the router's turn comes.
    hosts = len(state.inventory.get_active_hosts())
    at_once = state.pool.size is None or state.pool.size >= hosts
    with_router = plan.router.name in {host_name(t) for t in targets} and at_once
    return Run(plan, files, preflights, frozenset(skipped), Event() if with_router else None)


class Said(BaseStateCallback):
    """A run that went through ends with one line per host it deployed, saying it converged
    and what that proved. pyinfra disconnects from every host after its results table, at the
    very end; a run that failed stops before that stage and ends with its errors instead."""

    def __init__(self, order: tuple[str, ...]) -> None:
        self.order = order
        self.said = False

    def host_disconnect(self, state: Any, host: Any) -> None:
        if self.said or state.current_stage != StateStage.Disconnect or state.failed_hosts:
            return
        self.said = True
        lines = operations.said_at_the_end(state)
        for name in (n for n in self.order if n in lines):
            logger.info(lines[name])


def _gather(target: Any, reads: Any) -> Any:
    """One host's pre-flight read; None when it failed (pyinfra said why; with FAIL_PERCENT 0
    it stops the run by raising, which is refused here in one line, without a traceback; for a
    retired host it does not raise (tasks.ssh), and the read answers its default)."""
    try:
        answers = preflight.gather(target, reads)
    except PyinfraError:
        return None
    return answers if answers and target not in target.state.failed_hosts else None


def _require_safety(state: Any) -> None:
    """Refuse a run that config.py did not set up, and one where a host was not reached.

    pyinfra reads config.py from the current directory only: started from elsewhere, no run
    stops for an unreachable host or a failed router. deploy.py is read after pyinfra
    connected and before any operation runs, so stopping here changes nothing anywhere.
    """
    # deploy.py's own folder, which holds config.py beside it (this project, or an operator's
    # folder with copies of the two and an installed ownas).
    folder = Path(state.current_deploy_filename or "deploy.py").resolve().parent
    started = "in how pyinfra was started; nothing was changed on any host"
    if not ssh.in_force(state):
        there = (
            f"cd {folder}, which holds deploy.py and config.py, and run pyinfra from there"
            if (folder / "config.py").is_file()
            else f"copy ownas's config.py beside deploy.py in {folder}, and run pyinfra there"
        )
        _refuse(
            [
                "ownas's config.py was not read (pyinfra reads it from the current directory "
                f"only), so nothing would stop a half-done run: {there}"
            ],
            started,
        )
    # A retired host out of reach was named as a warning (tasks.ssh) and is no failure: the
    # run's exit status would otherwise be 1 (pyinfra_cli exits 1 with any failed host).
    state.failed_hosts -= {h for h in state.failed_hosts if ssh.retired(h)}
    unreached = sorted(host_name(h) for h in state.failed_hosts)
    if unreached:
        _refuse(
            [f"{name}: was not reached over SSH" for name in unreached],
            "in reaching the hosts; nothing was changed on any host",
        )
    options = getattr(state, "ownas_options", {})
    problems = []
    if state.config.FAIL_PERCENT != 0:
        problems.append(
            f"--fail-percent {state.config.FAIL_PERCENT}: a host that fails must stop the run "
            "(the router before any downstream); leave it out"
        )
    for flag in ("serial", "no_wait"):
        if options.get(flag):
            problems.append(
                f"--{flag.replace('_', '-')}: ownas orders the hosts itself (the router, then a "
                "barrier, then the downstreams), which this would break; leave it out"
            )
    if not options.get("yes") and not options.get("dry") and not sys.stdin.isatty():
        problems.append("no terminal to confirm the changes on: add --dry to look, or -y to apply")
    if problems:
        _refuse(problems, started)


def _router_side(
    state: Any, plan: Plan, files: dict[str, dict[str, str]], names: list[str]
) -> list[str]:
    """Downstreams deployed without the router (``--limit vps01``): read the router, without
    changing it, and refuse those whose tunnel it does not already run as planned."""
    router = plan.router.name
    alone = [n for n in names if n != router and plan.host(n).role == "downstream"]
    if not alone or router in names:
        return []
    target = next(h for h in state.inventory if host_name(h) == router)
    target.connect(reason="read only: its side of the tunnels", raise_exceptions=False)
    if not target.connected:
        return [f"{router}: cannot be reached to check its side of {', '.join(alone)}'s tunnel"]
    try:
        found = checks.gather_router_side(target, plan, alone)
    finally:
        target.disconnect()
    if found is None:
        return [f"{router}: could not be read to check its side of {', '.join(alone)}'s tunnel"]
    return checks.router_side(plan, alone, found, files[router][freebsd.PF_CONF])


def router(run: Run) -> None:
    """The router's section; the downstreams' sections are prepared after it (``barrier``)."""
    try:
        _router(run)
    finally:
        if run.router_prepared is not None:
            run.router_prepared.set()


@deploy("Router")
def _router(run: Run) -> None:
    _apply(run, run.plan.router.name)


@deploy("Downstream")
def downstream(run: Run, name: str) -> None:
    _apply(run, name)


def barrier(run: Run) -> None:
    if this_host() != run.plan.router.name and run.router_prepared is not None:
        run.router_prepared.wait()
    operations.barrier(
        reason="the router is applied and verified before any downstream starts",
        name="Barrier: router before downstreams",
    )


def _apply(run: Run, name: str) -> None:
    plan, hp, files, pre = run.plan, run.plan.host(name), run.files[name], run.preflights[name]
    if hp.role == "router":
        operations.packages(names=list(snapshot.packages(hp)), name="Install packages")
    operations.kernel_modules(
        modules=list(hp.modules), securelevel=pre.securelevel, name="Load kernel modules"
    )
    operations.fibs(count=hp.fibs, name="Grow net.fibs")
    for path, content in files.items():
        operations.stage(path=path, content=content, name=f"Stage and validate {path}")
    network = plan.network
    operations.arm_restore(
        files=files,
        confirm=network.confirm_timeout,
        checks=network.check_timeout,
        name="Arm the restore timer",
    )
    operations.install(files=files, name="Install the validated files")
    operations.tunnels(
        planned=list(hp.tunnels),
        loopback=str(hp.loopback) if hp.loopback is not None else None,
        retired=list(pre.retired_tunnels),
        old_loopback=pre.old_loopback,
        deferred=list(pre.deferred_tunnels),
        name="Reload tunnels",
    )
    operations.routes(
        planned=[*hp.routes, *hp.fib_routes],
        retired=list(pre.retired_routes),
        name="Reload routes",
    )
    operations.forwarding(
        families=list(hp.forwarding), keep_ra=hp.keep_ra, name="Enable forwarding"
    )
    operations.pf(content=files[freebsd.PF_CONF], deferred=pre.pf_deferred, name="Reload pf")
    if hp.validator is not None:
        config = files[freebsd.VALIDATORS[hp.validator].config]
        operations.rpki_validator(program=hp.validator, config=config, name=f"Run {hp.validator}")
    if hp.role == "router":
        rpki = plan.router.rpki
        operations.frr(
            content=files[freebsd.FRR_CONF],
            restart_bgpd=pre.restart_bgpd,
            upstreams=snapshot.validated_upstreams(plan),
            caches=tuple((str(c.address), c.port) for c in rtr_caches(rpki)) if rpki else (),
            name="Reload FRR",
        )
    operations.converged(
        check=checks.checker(plan, hp, pre),
        timeout=plan.network.check_timeout,
        restored_before=pre.restored,
        proven=partial(checks.proven, plan, hp, pre),
        name="Check convergence",
    )


def this_host() -> str:
    return host_name(host)
