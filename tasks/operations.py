"""pyinfra operations that bring one FreeBSD host to its plan, each the smallest safe step.

Every operation reads the live state through facts and yields only the commands that close the
gap (or calls ``host.noop``), so a second run with nothing changed yields nothing. pyinfra runs
each operation twice: once while preparing, to detect and show changes (``--dry``), and again
when executing. The facts come from the host's composite read (tasks.snapshot), read again
after any operation ran a command. Commands come from tasks.freebsd (and pyinfra's own
operations: pkg.install, server.sysctl).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any, Protocol

import gevent
from netaddr import IPAddress, IPNetwork
from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.facts.freebsd import PkgPackage, ServiceStatus
from pyinfra.facts.server import Sysctl
from pyinfra.operations import server
from pyinfra.operations.freebsd import pkg
from pyinfra.operations.util.files import generate_color_diff

from tasks import freebsd
from tasks.facts import (
    Exists,
    FrrPending,
    Ifconfig,
    LoadedModules,
    PfFileRules,
    PfRules,
    PfStatus,
    PolicyCounts,
    ReloadPending,
    RouteLookup,
    RpkiInvalidAccepted,
    RpkiState,
    peer_lookups,
    peer_route_problems,
    pf_problems,
    route_matches,
    tunnel_drift,
)
from tasks.model import host_name
from tasks.plan import Route, Tunnel
from tasks.snapshot import SYSCTLS, changed, read, recorded


def sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _say(message: str, log: Callable[..., None] = logger.info) -> None:
    log(f"{host.print_prefix}{message}")


def _announce(commands: list[Any], **change: bool) -> Iterator[Any]:
    """Yield ``commands``; while preparing, first list them so that --dry shows every reload.
    The host is read again for the next operation (see snapshot.changed)."""
    if not state.is_executing:
        for command in commands:
            _say(f"will run: {command}")
    changed(**change)
    yield from commands


def _running(service: str) -> bool:
    """``service NAME status`` exits 0 (rc.subr); pyinfra's fact runs it as ``service -j ''
    NAME status``, and an empty -j is no jail (usr.sbin/service/service.sh: ``[ -n "$JAIL" ]``)."""
    return bool(read(ServiceStatus, srvname=service))


@operation()
def stage(path: str, content: str):
    """Upload ``content`` next to ``path`` as PATH.ownas-new and validate it there.

    Nothing goes live here: the file is installed later, only after every file of the host
    passed its validator (sh -n, pfctl -nf, vtysh --dryrun, frr-reload.py --test).
    """
    if not _differs(path, content):
        host.noop(f"{path} is up to date")
        return
    if state.config.DIFF:
        current = read(FileContents, path=path)
        verb = "modify" if current is not None else "create"
        _say(f"will {verb} {path}")
        old = [line + "\n" for line in current or []]
        for line in generate_color_diff(old, content.splitlines(keepends=True)):
            logger.info("  %s", line)
    new = freebsd.staged(path)
    # Nothing the run reads changes (the staged copy sits beside the live file): no changed().
    yield freebsd.make_parent(path)
    # Uploaded straight to the staging name (with sudo, pyinfra's connector goes through a
    # temporary file itself).
    yield FileUploadCommand(StringIO(content), new)
    yield freebsd.refuse_unless(freebsd.validator(path), path)
    if path == freebsd.FRR_CONF and _running("frr"):
        yield freebsd.refuse_unless(freebsd.frr_semantic_check(path), path)


@operation()
def arm_restore(files: dict[str, str], confirm: int, checks: int):
    """Before anything is installed, start the host's own restore timer: unless this run
    confirms the host from a new SSH connection in time, the host puts back the previous
    version of every file the run installs and re-applies them (ownas-restore). In time: the
    checks may take ``checks`` seconds, then ``confirm`` more for the reloads and the new
    connection."""
    paths = [path for path, content in files.items() if _differs(path, content)]
    if not paths:
        host.noop("nothing to install: no restore timer")
        return
    seconds = checks + confirm
    if not confirm:
        message = "confirm_timeout is 0: no restore timer (a change that cuts you off stays)"
        _say(message, logger.warning)
        host.noop(message)
        return
    script = freebsd.RESTORE_SCRIPT
    if script in paths:
        script = freebsd.staged(script)  # the new one, renamed into place by the install
    _say(
        f"arms a restore timer: {seconds} s (check_timeout {checks} + confirm_timeout {confirm}) "
        "to confirm the change from a new connection"
    )
    yield from _announce([freebsd.arm(seconds, script)], rereads=False, records=True)


@operation()
def install(files: dict[str, str]):
    """Move every staged file into place at once (atomic rename, previous kept as .ownas-prev)."""
    paths = [path for path, content in files.items() if _differs(path, content)]
    if not paths:
        host.noop("every file is up to date")
        return
    # What this run replaces, so that a host whose checks then fail can put it back.
    changed(records=True)
    yield freebsd.record_run(paths)
    for path in paths:
        yield freebsd.install(path)


def _differs(path: str, content: str) -> bool:
    return read(Sha256File, path=path) != sha256(content)


@operation()
def packages(names: list[str]):
    """Install the packages that are missing, with pyinfra's pkg.install."""
    missing = [name for name in names if not read(PkgPackage, package=name)]
    if not missing:
        host.noop("every package is installed")
        return
    yield from _announce([c for name in missing for c in pkg.install._inner(package=name)])


@operation()
def kernel_modules(modules: list[str], securelevel: int):
    """Load the kernel modules the configuration needs, while the securelevel still allows it."""
    missing = sorted(set(modules) - set(read(LoadedModules, modules=tuple(modules))))
    if not missing:
        host.noop("every kernel module is loaded")
        return
    if securelevel >= 1:
        host.noop(f"securelevel {securelevel}: {', '.join(missing)} load at the next boot")
        return
    yield from _announce([freebsd.kldload(m) for m in missing])


@operation()
def fibs(count: int):
    """Grow net.fibs to ``count`` (it can only grow). Done before validating pf.conf, whose
    ``rtable N`` pfctl rejects unless FIB N exists, and before a tunnel is put in FIB N."""
    current = int(_sysctls().get("net.fibs") or 1)
    if current >= count:
        host.noop(f"net.fibs is {current}")
        return
    yield from _announce(list(server.sysctl._inner(key="net.fibs", value=count)))


def _sysctls() -> dict[str, Any]:
    """The sysctls the run reads (FreeBSD prints ``name: value``; pyinfra's fact parses it)."""
    return read(Sysctl, keys=SYSCTLS)


@operation()
def forwarding(families: list[str], keep_ra: bool = False):
    """Turn on packet forwarding for ``families`` (ipv6, ipv4) now; rc.conf does it at boot.

    With ``keep_ra`` the uplink's router advertisements keep giving the default route under
    IPv6 forwarding (RFC 6204 W-3), set before forwarding goes on.
    """
    values = _sysctls()
    keys = [freebsd.RFC6204W3] if keep_ra else []
    keys += [freebsd.FORWARDING[f] for f in families]
    commands = [c for key in keys if values.get(key) != 1 for c in server.sysctl._inner(key, 1)]
    if not commands:
        host.noop("forwarding is on")
        return
    yield from _announce(commands)


@operation()
def tunnels(
    planned: list[Tunnel],
    loopback: str | None,
    retired: list[str] | None = None,
    old_loopback: str | None = None,
    deferred: list[str] | None = None,
):
    """Bring every tunnel and the lo0 address to the plan, one interface at a time.

    A missing tunnel is created from rc.conf with ``service netif start IF`` (which also adds
    its NAME:IF routes); a live one is corrected in place, e.g. ``ifconfig IF tunnel SRC DST``
    for a moved VPS, so nothing else on the host is touched. Tunnels the previous
    configuration declared and this one does not are destroyed. ``deferred`` tunnels wait for
    a reboot (their kernel module cannot be loaded at this securelevel).
    """
    live = read(Ifconfig)
    commands: list[str] = []
    for tunnel in planned:
        interface = live.get(tunnel.interface)
        drift = {d.what for d in tunnel_drift(tunnel, interface)}
        if interface is None:
            if tunnel.interface not in (deferred or ()):
                commands.append(freebsd.netif_start(tunnel.interface))
            continue
        if "fib" in drift or _misplaced(tunnel, drift):
            # SIOCSIFFIB only sets the FIB of what comes later: the routes of the addresses
            # it has stay in the old FIB. Re-create it from rc.conf, where `fib` comes first.
            commands += [freebsd.destroy(tunnel.interface), freebsd.netif_start(tunnel.interface)]
            continue
        if "endpoints" in drift:
            commands.append(freebsd.set_tunnel(tunnel))
        if "tunnelfib" in drift:
            commands.append(freebsd.set_tunnelfib(tunnel.interface))
        if "inner" in drift:
            for address, _peer, _length in interface.inet6:
                if not IPAddress(address).is_link_local():
                    commands.append(freebsd.remove_address(tunnel.interface, address))
            commands.append(freebsd.add_inner(tunnel))
        if "mtu" in drift:
            commands.append(freebsd.set_mtu(tunnel))
        if "description" in drift:
            commands.append(freebsd.set_description(tunnel.interface, tunnel.description))
        if "down" in drift:
            commands.append(freebsd.interface_up(tunnel.interface))
    commands += [freebsd.destroy(name) for name in retired or () if name in live]
    lo0 = live.get("lo0")
    addresses = {address: length for address, _peer, length in (lo0.inet6 if lo0 else [])}
    own = IPNetwork(loopback) if loopback else None  # None: a retired host keeps none
    if own is not None and addresses.get(str(own.ip)) != own.prefixlen:
        if str(own.ip) in addresses:  # e.g. the /64 of an earlier version: re-add as planned
            commands.append(freebsd.remove_address("lo0", own.ip))
        commands.append(freebsd.add_loopback(own.ip, own.prefixlen))
    kept = str(own.ip) if own is not None else None
    if old_loopback and old_loopback != kept and old_loopback in addresses:
        commands.append(freebsd.remove_address("lo0", old_loopback))
    if not commands:
        host.noop("every tunnel is as planned")
        return
    yield from _announce(commands)


def _misplaced(tunnel: Tunnel, drift: set[str]) -> bool:
    """A tunnel in its own FIB (a downstream's) whose inner pair is as planned but whose far
    end's route is not in that FIB: it was moved there after its addresses were set."""
    if not tunnel.fib or "inner" in drift:
        return False
    found = {
        (destination, fib): read(RouteLookup, destination=destination, fib=fib)
        for destination, fib in peer_lookups(tunnel)
    }
    return bool(peer_route_problems(tunnel, found))


@operation()
def routes(planned: list[Route], retired: list[tuple[str, int]] | None = None):
    """Add, change or delete individual static routes, each in its own FIB.

    Never ``service routing restart``: it flushes every gateway route in FIB 0, FRR's included.
    ``route change`` replaces a route in place; ``route add`` on an existing prefix would add a
    second (multipath) next hop in FreeBSD 14.
    """
    commands: list[str] = []
    for route in planned:
        found = read(RouteLookup, destination=route.destination, fib=route.fib)
        if found is None:
            commands.append(freebsd.route_add(route))
        elif not route_matches(route, found):
            commands.append(freebsd.route_change(route))
    for destination, fib in retired or ():
        if read(RouteLookup, destination=destination, fib=fib) is not None:
            commands.append(freebsd.route_delete(destination, fib))
    if not commands:
        host.noop("every route is as planned")
        return
    yield from _announce(commands)


@operation()
def pf(content: str, deferred: bool = False):
    """Load /etc/pf.conf when it changed, was installed and not loaded yet (its tables and nat
    lines do not show in the loaded rules), or the loaded rules differ from it; states are kept.

    ``pfctl -nf`` then ``pfctl -f`` (what ``service pf reload`` does), ``pfctl -e`` when pf is
    off, and pflog started when it is not running. Never ``service pf restart``: it flushes
    every state first and cuts the SSH session that runs this deploy.
    """
    if deferred:
        host.noop("pf is not in the kernel: it loads at the next boot")
        return
    commands: list[str] = []
    status = read(PfStatus)
    problems = pf_problems(
        status,
        read(ReloadPending, path=freebsd.PF_CONF),
        read(PfRules),
        read(PfFileRules, path=freebsd.PF_CONF),
    )
    if _differs(freebsd.PF_CONF, content) or problems:
        commands.append(freebsd.pf_reload())
    if status != "Enabled":
        commands.append(freebsd.PF_ENABLE)
    if not _running("pflog"):
        commands.append(freebsd.service_start("pflog"))
    if not commands:
        host.noop("pf has the rules of /etc/pf.conf loaded")
        return
    yield from _announce(commands)


@operation()
def rpki_validator(program: str, config: str):
    """Run the router's RPKI validator: start it (the first start prepared as its rc script
    requires), or restart it when its config changed. FRR keeps the ROAs it holds meanwhile,
    but resyncs with the restarted validator (a new RTR session ID) only after the expire
    interval, asking its other caches until then (README, "RPKI on the running router")."""
    running = _running(program)
    if running and not _differs(freebsd.VALIDATORS[program].config, config):
        host.noop(f"{program} runs with its config")
        return
    if running:
        yield from _announce([freebsd.service_restart(program)])
        return
    yield from _announce([freebsd.VALIDATORS[program].prepare, freebsd.service_start(program)])


@operation()
def frr(
    content: str,
    restart_bgpd: bool = False,
    upstreams: tuple[str, ...] = (),
    caches: tuple[tuple[str, int], ...] = (),
):
    """Apply frr.conf to the running FRR with frr-reload.py (only the difference, no session
    reset); start FRR when it is not running. Never ``service frr restart``; bgpd alone only
    when the pre-flight found it must load a module and the operator asked for it.

    With RPKI (``upstreams``: the peers whose inbound policy validates; ``caches``: the RTR
    caches, host and port): after FRR or bgpd starts, or a reload, the policy again once a
    cache is in sync (nothing re-judges what was learned before); an FRR that holds no ROAs
    starts its RTR sessions over when a cache answers; a stale decision gets the policy again.
    Every soft reset waits for, or checks, ROAs when it runs."""
    settle = [freebsd.RPKI_SETTLE] if upstreams else []
    if not _running("frr"):
        yield from _announce([freebsd.service_start("frr"), *settle])
        return
    if restart_bgpd:
        # vtysh -b only adds: the reload removes what this run removed from the other daemons.
        yield from _announce([freebsd.BGPD_RESTART, freebsd.frr_reload(), *settle])
        return
    commands = []
    if _differs(freebsd.FRR_CONF, content) or read(FrrPending, path=freebsd.FRR_CONF):
        # With RPKI, the policy again once in sync: a changed cache list restarts RTR.
        commands += [freebsd.frr_reload(), *settle]
    elif upstreams:
        rpki = read(RpkiState)
        if not any(rpki["caches"].values()) and not rpki["roas"]:
            commands.append(freebsd.rpki_reset(caches))
        elif _stale(upstreams) or read(RpkiInvalidAccepted):
            commands.append(freebsd.RPKI_SOFT_IN_WITH_ROAS)
    if commands:
        yield from _announce(commands)
        return
    host.noop("the running FRR matches frr.conf")


def _stale(upstreams: tuple[str, ...]) -> bool:
    """Some upstream's routes do not add up: what it sent (Adj-RIB-In) is not what was accepted
    plus what the inbound policy filters as it judges now. A decision FRR made with ROAs it
    no longer has (tasks.freebsd.RPKI_SOFT_IN) is the one way this stays so."""
    counts = read(PolicyCounts, peers=upstreams).values()
    return any(c["accepted"] + c["filtered"] != c["received"] for c in counts)


@operation()
def barrier(reason: str):
    """Nothing to do on any host: every host calls this from the same line, so pyinfra's
    ordering puts all operations before it (the router's) ahead of all after it."""
    host.noop(reason)
    yield from ()


class Finding(Protocol):
    """What a convergence check reports (tasks.checks.Finding)."""

    line: str
    waitable: bool
    warning: bool
    expected: bool


@operation()
def converged(
    check: Callable[[], list[Finding]],
    timeout: int,
    restored_before: str | None = None,
    interval: float = 5.0,
    proven: Callable[[list[Finding]], str] | None = None,
):
    """Wait (bounded) until ``check()`` finds nothing wrong; then stop, or fail naming each
    problem on its own line. Warnings are shown but do not fail the host. A host that converged
    is said in one line at the end of the run (``said_at_the_end``): what ``proven`` makes of
    the warnings it found.

    Runs only when executing: before the changes are applied there is nothing to prove.
    """
    if not state.is_executing:
        host.noop("checked after the changes are applied")
        return
    findings, waited = _poll(check, timeout, interval)
    failures = _report(findings)
    if not failures:
        warnings = len(findings)
        also = f" ({warnings} warning{'s' * (warnings > 1)} above)" if warnings else ""
        name = host_name(host)
        what = f": {proven(findings)}" if proven is not None else ""
        said_at_the_end(state)[name] = f"{name}: converged{also}{what}"
    if failures:
        if any(f.waitable for f in findings if not f.warning):
            message = f"{len(failures)} check(s) did not converge within {timeout} s"
        else:
            message = (
                f"{len(failures)} check(s) failed that waiting cannot fix (after {waited:.0f} s)"
            )
        if not any(f.expected for f in findings):
            yield FunctionCommand(_roll_back, (message, check, timeout, interval), {})
            return
        # A host that waits for a reboot is half-way by design (what the reboot loads is
        # missing until then): putting its files back would undo what the reboot needs, so it
        # is confirmed as it is, and fails.
        yield FunctionCommand(_reach_again, (restored_before,), {})
        yield freebsd.confirm_run()
        yield FunctionCommand(_fail, (message,), {})
        return
    if recorded() or any(read(Exists, path=p) for p in freebsd.RUN_RECORDS):
        # Converged: confirmed from a new connection, which proves SSH still lets us in.
        yield FunctionCommand(_reach_again, (restored_before,), {})
        yield freebsd.confirm_run()
        return
    host.noop("converged")


def said_at_the_end(state: Any) -> dict[str, str]:
    """The line for each host that converged, which the run ends with (tasks.deploy.Said)."""
    if not hasattr(state, "ownas_converged"):
        state.ownas_converged = {}
    return state.ownas_converged


def _report(findings: list[Finding]) -> list[str]:
    """Say every finding (warnings as warnings); return the lines that fail the host."""
    for finding in findings:
        _say(finding.line, logger.warning if finding.warning else logger.error)
    return [f.line for f in findings if not f.warning]


def _reach_again(state: Any, host: Any, restored_before: str | None) -> bool:
    """Open a new SSH connection to the host (not the one that made the change): if that
    fails, the change is not confirmed and the host's restore timer puts it back. Also fail if
    the timer already fired (a restore record the run did not start with)."""
    client = getattr(host.connector, "client", None)
    host.disconnect()
    if client is not None:
        client.close()  # the session that made the change ends; the proof is a new one
    host.connect(reason="again, to confirm the change", raise_exceptions=False)
    if not host.connected:
        _say(
            "cannot reach the host again over a new SSH connection: the change is not "
            "confirmed, and the host puts its previous files back when its timer fires",
            logger.error,
        )
        return False
    _ok, output = host.run_shell_command(StringCommand(freebsd.read_restored()))
    record = output.stdout_lines[0] if output.stdout_lines else None
    if record and record != restored_before:
        _say(
            f"the host's restore timer fired before the run could confirm it ({record}): the "
            "previous files are back; rerun when the network is stable",
            logger.error,
        )
        return False
    return True


def _fail(state: Any, host: Any, message: str) -> bool:
    """Fail the host with ``message`` (a function command returning False: no traceback)."""
    _say(message, logger.error)
    return False


def _roll_back(
    state: Any,
    host: Any,
    message: str,
    check: Callable[[], list[Finding]],
    timeout: int,
    interval: float,
) -> bool:
    """Fail the host (a function command returning False: no traceback), after putting back
    the files this run installed and re-applying them, then checking again."""
    _say(message, logger.error)
    ok, output = host.run_shell_command(StringCommand(freebsd.restore_now()))
    restored = [line for line in output.stdout_lines if line.startswith("restored")]
    if not ok or not restored:
        _say("nothing of this run was put back (it installed no file)", logger.error)
        return False
    _say(f"{restored[-1]} (the previous files, re-applied in order): checking again", logger.error)
    findings, _waited = _poll(check, timeout, interval)
    if _report(findings):
        _say("the previous configuration is back but does not converge either", logger.error)
    else:
        _say("the previous configuration is back and converged", logger.error)
    return False


def _poll(
    check: Callable[[], list[Finding]], timeout: int, interval: float
) -> tuple[list[Finding], float]:
    """Re-run ``check`` until it passes, the time is up, or nothing left can resolve by
    waiting (a BGP session can come up; a wrong endpoint cannot); also say how long it waited."""
    # Real time, reads and pings included: the host's restore timer counts the same way.
    started = time.monotonic()
    while True:
        findings = check()
        pending = [f for f in findings if f.waitable and not f.warning]
        waited = time.monotonic() - started
        if not pending or waited + interval > timeout:
            return findings, waited
        gevent.sleep(interval)
