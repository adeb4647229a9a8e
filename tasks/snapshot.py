"""What a run reads from each host: composite reads (facts.HostState), each kept until a
command changes the host.

pyinfra runs one remote command for every fact it is asked for and keeps no answer; it also
runs each operation twice (preparing, to show the changes, then executing). Read one by one,
an unchanged rerun cost a hundred round trips per host. Here the pre-flight reads, in one
command, everything the pre-flight and the operations will ask of the host's state
(``deploy_reads``, first group), and the operations answer from it (``read``) until one of
them runs a command (``changed``). FRR's own state (a second group: what a reload would
change, RPKI, the policy counts, which walk every route an upstream sent) is read in one more
command, only when the FRR operation asks. While executing, the answers read while preparing
are not used: each group is read again once, then after each operation that changed the host.
The convergence checks read their own set fresh on every poll (tasks.checks).
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.facts.freebsd import PkgPackage, ServiceStatus
from pyinfra.facts.server import Sysctl

from tasks import facts, freebsd
from tasks.facts import Read, Reads
from tasks.model import host_name
from tasks.plan import HostPlan, Plan

# The sysctls the pre-flight and the operations read.
SYSCTLS = ("kern.securelevel", "net.fibs", *freebsd.FORWARDING.values(), freebsd.RFC6204W3)

Group = Reads
# By host name: what the run reads from it, in groups; by (host, group): the last answer, and
# whether it was read while executing. A pyinfra run is one process, one run.
_PLANNED: dict[str, tuple[Group, ...]] = {}
_KEPT: dict[tuple[str, int], tuple[bool, dict[Read, Any]]] = {}
_RECORDED: set[str] = set()


class Unread(PyinfraError):
    """A planned question the host's read did not answer (pyinfra reports it in one line)."""


def plan(name: str, groups: tuple[Group, ...], answers: dict[Read, Any] | None = None) -> None:
    """Say what the run reads from host ``name`` (and what the pre-flight read: the first
    group's answers)."""
    _PLANNED[name] = groups
    for index in range(len(groups)):
        _KEPT.pop((name, index), None)
    if answers is not None:
        _KEPT[(name, 0)] = (bool(state.is_executing), answers)


def read(fact: type[FactBase], **kwargs: Any) -> Any:
    """The host's answer to ``fact`` with ``kwargs``, from the current read of the group that
    asks it. A question the run did not plan for (a route an earlier deploy made and this one
    retires; an operation tested alone) is read on its own."""
    name = host_name(host)
    question = Read.of(fact, **kwargs)
    groups = _PLANNED.get(name, ())
    index = next((i for i, group in enumerate(groups) if question in group), None)
    if index is None:
        return host.get_fact(fact, **kwargs)
    executing = bool(state.is_executing)
    kept = _KEPT.get((name, index))
    if kept is None or kept[0] != executing:
        kept = (executing, host.get_fact(facts.HostState, reads=groups[index]))
        _KEPT[(name, index)] = kept
    if question not in kept[1]:
        raise Unread(f"{name}: its state could not be read (see above); nothing more was done")
    return kept[1][question]


def changed(*, rereads: bool = True, records: bool = False) -> None:
    """A command is about to run on the host (while executing; preparing, nothing runs): the
    next question reads it again, unless the command changes nothing the run asks (``rereads``
    False: a staged copy beside the live file, the restore timer). ``records``: it leaves what
    the run must confirm (the install's record, the restore timer: freebsd.RUN_RECORDS).
    Called before the commands are yielded: pyinfra runs each as it is yielded and stops at
    the first that fails, so nothing after them would run."""
    if not state.is_executing:
        return
    name = host_name(host)
    if records:
        _RECORDED.add(name)
    if rereads:
        for index in range(len(_PLANNED.get(name, ()))):
            _KEPT.pop((name, index), None)


def recorded() -> bool:
    """Whether this run left a record or timer on the host that it must confirm."""
    return host_name(host) in _RECORDED


def deploy_reads(plan: Plan, hp: HostPlan, paths: list[str], diff: bool) -> tuple[Group, ...]:
    """Everything the pre-flight and the operations ask host ``hp``: its files (their content
    too with ``--diff``) and state, packages on the router; then, on the router, FRR's state."""
    state_reads = [
        Read.of(facts.Uname),
        Read.of(Sysctl, keys=SYSCTLS),
        Read.of(facts.LoginShell),
        Read.of(facts.SshClient),
        Read.of(facts.LoadedModules, modules=hp.modules),
        Read.of(FileContents, path=freebsd.RC_CONF_LOCAL),
        Read.of(facts.RcConfVariables),
        *(Read.of(FileContents, path=p) for p in _RECORDS),
        Read.of(facts.TimerArmed),
        *(Read.of(facts.Exists, path=p) for p in freebsd.RUN_RECORDS),
        Read.of(facts.Ifconfig),
        *(Read.of(Sha256File, path=p) for p in paths),
        *(Read.of(FileContents, path=p) for p in paths if diff and p not in _RECORDS),
        Read.of(facts.ReloadPending, path=freebsd.PF_CONF),
        *_route_reads(hp, ("default", 0) if hp.role != "router" else None),
        Read.of(facts.PfStatus),
        Read.of(facts.PfRules),
        Read.of(facts.PfFileRules, path=freebsd.PF_CONF),
        *(Read.of(ServiceStatus, srvname=s) for s in ("pflog", *_validator(hp))),
    ]
    if hp.role == "downstream":
        return (Reads(dict.fromkeys([*state_reads, Read.of(facts.ListeningSockets)])),)
    if hp.role == "retired":
        return (Reads(dict.fromkeys(state_reads)),)
    state_reads += [Read.of(PkgPackage, package=p) for p in packages(hp)]
    state_reads += [Read.of(ServiceStatus, srvname="frr"), Read.of(facts.BgpdModules)]
    frr = [Read.of(facts.FrrPending, path=freebsd.FRR_CONF)]
    if plan.router.rpki is not None:
        frr += [
            Read.of(facts.RpkiState),
            Read.of(facts.RpkiInvalidAccepted),
            Read.of(facts.PolicyCounts, peers=validated_upstreams(plan)),
        ]
    return Reads(dict.fromkeys(state_reads)), Reads(frr)


def validated_upstreams(plan: Plan) -> tuple[str, ...]:
    """The peers whose inbound policy validates with RPKI (none without ``rpki``), as the FRR
    operation is given them and as the policy counts are asked for them."""
    if plan.router.rpki is None:
        return ()
    return plan.upstream_peers


# Files the pre-flight reads to know what an earlier deploy made, and the restore record.
_RECORDS = (freebsd.NETIF_CONF, freebsd.ROUTING_CONF, freebsd.RESTORED)


def _route_reads(hp: HostPlan, default: tuple[str, int] | None) -> list[Read]:
    lookups = [(r.destination, r.fib) for r in (*hp.routes, *hp.fib_routes)]
    lookups += [lookup for tunnel in hp.tunnels for lookup in facts.peer_lookups(tunnel)]
    if default is not None:
        lookups.append(default)
    return [Read.of(facts.RouteLookup, destination=d, fib=f) for d, f in lookups]


def _validator(hp: HostPlan) -> tuple[str, ...]:
    return (hp.validator,) if hp.validator else ()


def packages(hp: HostPlan) -> tuple[str, ...]:
    """The packages a host needs (the router: FRR, and its RPKI validator)."""
    if hp.role != "router":
        return ()
    return (*freebsd.PACKAGES, *(freebsd.VALIDATORS[v].package for v in _validator(hp)))
