"""Convergence: the proof, at the end of each host, that the network is what the plan says.

``evaluate`` judges a snapshot of facts (pure, tested with plain data); ``gather`` reads it on
the host; ``checker`` returns the callable that the ``converged`` operation polls. Every failure
is one line naming host and check, and says whether waiting can fix it (a BGP session coming up
can; a tunnel with the wrong endpoint cannot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyinfra import host
from pyinfra.facts.files import Sha256File

from tasks import facts, freebsd
from tasks.facts import (
    Read,
    Reads,
    peer_lookups,
    peer_route_problems,
    pf_problems,
    route_matches,
    tunnel_drift,
)
from tasks.operations import sha256
from tasks.plan import MAX_PREFIX_RESTART, RPKI_ROUTE_MAP, HostPlan, Plan, Tunnel, rtr_caches
from tasks.preflight import Preflight, read_fact


@dataclass(frozen=True)
class Finding:
    line: str
    waitable: bool = False  # may resolve by waiting (a session, a ping)
    warning: bool = False  # reported, but does not fail the run
    # Fails the run, but the change needs it (a reboot): the host is not rolled back.
    expected: bool = False


def _peer_routes(label: str, tunnel: Tunnel, routes: dict[Any, Any]) -> list[Finding]:
    return [Finding(f"{label}: {why}") for why in peer_route_problems(tunnel, routes)]


def _ipv6_default(name: str, hp: HostPlan, found: dict[str, str] | None) -> list[Finding]:
    """The provider's IPv6 default route in FIB 0, through the uplink (and its gateway)."""
    how = f"via {hp.ipv6_gateway}" if hp.ipv6_gateway else "from router advertisements"
    label = f"{name}: the IPv6 default route in FIB 0 ({how} on {hp.ipv6_uplink})"
    if found is None:
        # Router advertisements come every few minutes: waiting can bring it back.
        return [Finding(f"{label}: missing", waitable=hp.ipv6_gateway is None)]
    gateway = found.get("gateway", "").split("%")[0]
    if found.get("interface") != hp.ipv6_uplink or (
        hp.ipv6_gateway is not None and gateway != str(hp.ipv6_gateway)
    ):
        return [Finding(f"{label}: is via {found.get('gateway')} on {found.get('interface')}")]
    return []


def _ping(label: str, reply: bool, *, warning: bool = False) -> list[Finding]:
    return [] if reply else [Finding(_no_reply(label), waitable=not warning, warning=warning)]


def _no_reply(label: str) -> str:
    return f"{label}: no reply"


def evaluate(plan: Plan, hp: HostPlan, pre: Preflight, found: dict[str, Any]) -> list[Finding]:
    """Everything that is not as planned on host ``hp``, from the facts in ``found``."""
    name = hp.name
    findings: list[Finding] = []
    if pre.needs_reboot:
        findings.append(
            Finding(
                f"{name}: reboot: {', '.join(pre.needs_reboot)} can only load at boot at "
                f"securelevel {pre.securelevel}",
                expected=True,
            )
        )
    for tunnel in hp.tunnels:
        if tunnel.interface in pre.deferred_tunnels:
            continue
        findings += tunnel_findings(name, tunnel, found)
    for interface in pre.retired_tunnels:
        if interface in found["ifconfig"]:
            findings.append(Finding(f"{name}: tunnel {interface}: retired, still exists"))
    for ping in pings(plan, hp, pre):
        findings += _ping(ping.label, found["pings"].get(ping.key, False), warning=ping.warning)
    if hp.ipv6_uplink is not None:
        findings += _ipv6_default(name, hp, found["routes"].get(("default", 0)))
    for route in (*hp.routes, *hp.fib_routes):
        if not route_matches(route, found["routes"][(route.destination, route.fib)]):
            args = freebsd.route_args(route)
            findings.append(Finding(f"{name}: route {args}: not in FIB {route.fib} as planned"))
    if not pre.pf_deferred:
        findings += pf_findings(name, found)
    if hp.role == "router":
        findings += _bgp(plan, found)
        findings += _rpki(plan, found)
    return findings


def proven(plan: Plan, hp: HostPlan, pre: Preflight, findings: list[Finding]) -> str:
    """What ``evaluate`` finding no failure (``findings``: its warnings) proves about host
    ``hp``, in a few words: the deploy's last line for the host. Only what was checked: a tunnel
    configured and up as planned, a far end that answered, the routes, pf, the sessions."""
    tunnels = [t.interface for t in hp.tunnels if t.interface not in pre.deferred_tunnels]
    routes = len(hp.routes) + len(hp.fib_routes)
    said = {f.line for f in findings}
    answered = [p.proves for p in pings(plan, hp, pre) if _no_reply(p.label) not in said]
    parts = ["retired"] if hp.role == "retired" else []
    if tunnels:
        parts.append(f"tunnel{'s' * (len(tunnels) > 1)} {', '.join(tunnels)} configured and up")
    if answered:
        parts.append(", ".join(answered))
    if pre.retired_tunnels:
        parts.append(f"{', '.join(pre.retired_tunnels)} gone")
    if routes:
        parts.append(f"{routes} route{'s' * (routes > 1)} in place")
    if hp.ipv6_uplink is not None:
        parts.append(f"IPv6 default route on {hp.ipv6_uplink}")
    if not pre.pf_deferred:
        parts.append("pf rules loaded")
    if hp.role == "router":
        upstreams = plan.router.upstreams
        up = [u.name for u in upstreams if u.shutdown != "admin"]
        if up:
            parts.append(f"BGP {', '.join(up)} Established, advertising {plan.network.prefix}")
        # A drained session is judged as any other; what it sends is frr.conf's business.
        parts += [f"{u.name} in graceful shutdown" for u in upstreams if u.shutdown == "graceful"]
        parts += [f"{u.name} shut down as asked" for u in upstreams if u.shutdown == "admin"]
    return "; ".join(parts)


def pf_findings(name: str, found: dict[str, Any]) -> list[Finding]:
    """pf enabled, with the rules of /etc/pf.conf loaded (and nothing installed unloaded)."""
    problems = pf_problems(
        found["pf_status"], found["pf_pending"], found["pf_rules"], found["pf_file_rules"]
    )
    return [Finding(f"{name}: {line}") for line in problems]


def tunnel_findings(name: str, tunnel: Tunnel, found: dict[str, Any]) -> list[Finding]:
    """The tunnel as planned (exists, up, endpoints, FIBs, inner pair), then its far end's
    route in the right FIB."""
    label = f"{name}: tunnel {tunnel.interface} to {tunnel.far_end}"
    interface = found["ifconfig"].get(tunnel.interface)
    findings = [Finding(f"{label}: {d.line}") for d in tunnel_drift(tunnel, interface)]
    return findings or _peer_routes(label, tunnel, found["routes"])


def _bgp(plan: Plan, found: dict[str, Any]) -> list[Finding]:
    name, prefix = plan.router.name, str(plan.network.prefix)
    findings = []
    for upstream in plan.router.upstreams:
        peer = str(upstream.peer)
        label = f"{name}: BGP {upstream.name} ({peer}, AS{upstream.asn})"
        neighbor = found["bgp"].get(peer, {})
        state = neighbor.get("state") or "not configured"
        if upstream.shutdown == "admin":
            # Closed on purpose (shutdown: admin): bgpd keeps it Idle (bgp_vty.c, adminShutDown).
            if not neighbor.get("admin_shutdown"):
                findings.append(
                    Finding(f"{label}: {state}, not administratively shut down", waitable=True)
                )
            continue
        if neighbor.get("over_limit"):
            findings.append(
                Finding(
                    f"{label}: {state}, not Established: it sent more than max_prefixes "
                    f"({upstream.max_prefixes}) routes that passed the filters; FRR reconnects "
                    f"every {MAX_PREFIX_RESTART} minutes until it sends fewer"
                )
            )
        elif state != "Established":
            reset = neighbor.get("last_reset")
            reason = f" (last reset: {reset})" if reset else ""
            findings.append(Finding(f"{label}: {state}, not Established{reason}", waitable=True))
        elif prefix not in found["advertised"].get(peer, []):
            findings.append(Finding(f"{label}: {prefix} is not advertised", waitable=True))
    return findings


def _rpki(plan: Plan, found: dict[str, Any]) -> list[Finding]:
    """Route origin validation at work: a cache in sync (without one FRR fails open: a
    warning, the network works unvalidated), and no RPKI invalid route accepted."""
    rpki = plan.router.rpki
    if rpki is None:
        return []
    name = plan.router.name
    findings = []
    state = found["rpki"]
    if any(state["caches"].values()) and not state["roas"]:
        findings.append(
            Finding(
                f"{name}: RPKI: the cache in sync serves no ROAs: nothing is validated (a "
                "validator still fetching, or without its trust anchors)",
                warning=True,
            )
        )
    elif not any(state["caches"].values()):
        caches = ", ".join(f"{c.address} port {c.port}" for c in rtr_caches(rpki))
        effect = (
            f"FRR validates with the {state['roas']} ROAs it holds until they expire"
            if state["roas"]
            else "every route is accepted unvalidated until one answers"
        )
        findings.append(
            Finding(f"{name}: RPKI: no RTR cache in sync ({caches}): {effect}", warning=True)
        )
    invalid = found["rpki_invalid"]
    if invalid:
        # FRR misses ROA changes (tasks.freebsd.RPKI_SOFT_IN): the run's own soft reset has
        # applied the policy again; a ROA that changed since is for the next run. Not the
        # change's fault, so not a reason to put the files back.
        shown = ", ".join(invalid[:5]) + (", ..." if len(invalid) > 5 else "")
        findings.append(
            Finding(
                f"{name}: RPKI: {len(invalid)} accepted route(s) are RPKI invalid ({shown}), "
                f"which {RPKI_ROUTE_MAP} rejects: FRR has not judged them with today's ROAs "
                "(it misses ROA changes, and what came before its first sync); the next "
                "deploy applies the policy again",
                warning=True,
            )
        )
    return findings


def _proven_from_far_end(plan: Plan, tunnel: Tunnel) -> bool:
    """A router's tunnel to a managed downstream: that host pings through it after the barrier
    (before it, its end may not be configured yet), so the router does not."""
    return tunnel.role == "downstream" and plan.network.downstream(tunnel.far_end).managed


def route_lookups(hp: HostPlan, pre: Preflight) -> list[tuple[str, int]]:
    """The (destination, fib) route lookups ``evaluate`` reads."""
    lookups = [(r.destination, r.fib) for r in (*hp.routes, *hp.fib_routes)]
    if hp.ipv6_uplink is not None:
        lookups.append(("default", 0))
    for tunnel in hp.tunnels:
        if tunnel.interface not in pre.deferred_tunnels:
            lookups += peer_lookups(tunnel)
    return lookups


@dataclass(frozen=True)
class Ping:
    key: tuple[str, str | None, int]  # address, source, fib (facts.Pings)
    label: str
    warning: bool = False
    proves: str = ""  # what a reply proves, in ``proven``'s words


def pings(plan: Plan, hp: HostPlan, pre: Preflight) -> list[Ping]:
    """The pings through each tunnel ``evaluate`` judges: the router pings each upstream, and an
    unmanaged downstream (a warning: its side may not be configured yet); a downstream pings
    the router from its tunnel address and from its own address, in the tunnel's FIB."""
    wanted: list[Ping] = []
    name = hp.name
    for tunnel in hp.tunnels:
        if tunnel.interface in pre.deferred_tunnels:
            continue
        peer, through = str(tunnel.peer), f"ping {tunnel.peer} through {tunnel.interface}"
        answers = f"{tunnel.far_end} answers through {tunnel.interface}"
        if hp.role == "router" and tunnel.role == "upstream":
            wanted.append(Ping((peer, None, 0), f"{name}: {through}", proves=answers))
        elif hp.role == "router" and plan.network.downstream(tunnel.far_end).pending:
            continue  # not configured yet on its side (pending): nothing to answer
        elif hp.role == "router" and not _proven_from_far_end(plan, tunnel):
            wanted.append(
                Ping(
                    (peer, None, 0),
                    f"{name}: {through} (unmanaged {tunnel.far_end}: is its side configured? "
                    "see its settings.txt)",
                    warning=True,
                    proves=answers,
                )
            )
        elif hp.role == "downstream":
            source = str(hp.loopback.ip)
            wanted += [
                Ping(
                    (peer, str(tunnel.address), tunnel.fib),
                    f"{name}: {through} in FIB {tunnel.fib}",
                    proves=f"{answers} in FIB {tunnel.fib}",
                ),
                Ping(
                    (peer, source, tunnel.fib),
                    f"{name}: traffic from {source} does not leave through {tunnel.interface} "
                    f"(ping {tunnel.peer} from it in FIB {tunnel.fib})",
                    proves=f"also from {source}",
                ),
            ]
    return wanted


def probe_reads(plan: Plan, hp: HostPlan, pre: Preflight) -> tuple[Read, ...]:
    """What one poll reads from the host, in one command (facts.HostState)."""
    reads = [
        Read.of(facts.Ifconfig),
        *(Read.of(facts.RouteLookup, destination=d, fib=f) for d, f in route_lookups(hp, pre)),
        *_PF_READS,
    ]
    keys = tuple(ping.key for ping in pings(plan, hp, pre))
    if keys:
        reads.append(Read.of(facts.Pings, pings=keys))
    if hp.role == "router":
        reads.append(Read.of(facts.BgpNeighbors))
        reads += [Read.of(facts.AdvertisedPrefixes, peer=p) for p in plan.upstream_peers]
        if plan.router.rpki is not None:
            reads += [Read.of(facts.RpkiState), Read.of(facts.RpkiInvalidAccepted)]
    return Reads(reads)


_PF_READS = (
    Read.of(facts.PfStatus),
    Read.of(facts.PfRules),
    Read.of(facts.PfFileRules, path=freebsd.PF_CONF),
    Read.of(facts.ReloadPending, path=freebsd.PF_CONF),
)


def found_in(answers: dict[Read, Any], reads: tuple[Read, ...]) -> dict[str, Any]:
    """The snapshot ``evaluate`` judges, from the answers to ``reads``."""

    def get(fact: type, **kwargs: Any) -> Any:
        return facts.answer(answers, fact, **kwargs)

    found: dict[str, Any] = {
        "ifconfig": get(facts.Ifconfig),
        "routes": {
            (asked["destination"], asked["fib"]): answer
            for asked, answer in _answers(facts.RouteLookup, reads, answers)
        },
        "pf_status": get(facts.PfStatus),
        "pf_rules": get(facts.PfRules),
        "pf_file_rules": get(facts.PfFileRules, path=freebsd.PF_CONF),
        "pf_pending": get(facts.ReloadPending, path=freebsd.PF_CONF),
        "pf_file": get(Sha256File, path=freebsd.PF_CONF),
        "pings": {
            k: v for _, pings in _answers(facts.Pings, reads, answers) for k, v in pings.items()
        },
        "bgp": get(facts.BgpNeighbors),
        "advertised": {
            asked["peer"]: answer
            for asked, answer in _answers(facts.AdvertisedPrefixes, reads, answers)
        },
        "rpki": get(facts.RpkiState),
        "rpki_invalid": get(facts.RpkiInvalidAccepted),
    }
    return found


def _answers(
    fact: type, reads: tuple[Read, ...], answers: dict[Read, Any]
) -> list[tuple[dict[str, Any], Any]]:
    """Each question of ``fact`` among ``reads`` (its arguments), with its answer."""
    asked = [dict(r.kwargs) for r in reads if r.fact is fact]
    return [(kwargs, facts.answer(answers, fact, **kwargs)) for kwargs in asked]


def gather(plan: Plan, hp: HostPlan, pre: Preflight) -> dict[str, Any]:
    reads = probe_reads(plan, hp, pre)
    return found_in(host.get_fact(facts.HostState, reads=reads), reads)


def checker(plan: Plan, hp: HostPlan, pre: Preflight):
    """The callable the ``converged`` operation polls."""

    def check() -> list[Finding]:
        return evaluate(plan, hp, pre, gather(plan, hp, pre))

    return check


# --- a downstream deployed without its router (--limit) ------------------------------------


def router_side(plan: Plan, names: list[str], found: dict[str, Any], pf_conf: str) -> list[str]:
    """Problems, one line per downstream, where the router does not already run what the plan
    gives it for that downstream's tunnel: the tunnel (endpoints, inner pair), the route to
    the delegation, and pf running exactly the rendered /etc/pf.conf (``pf_conf``).
    Deploying the downstream alone would otherwise leave the two ends disagreeing."""
    router = plan.router.name
    problems = []
    for name in names:
        tunnel = plan.tunnel_to(plan.network.downstream(name))
        findings = [f.line for f in tunnel_findings(router, tunnel, found)]
        route = next(r for r in plan.host(router).routes if r.bound_to == tunnel.interface)
        if not route_matches(route, found["routes"].get((route.destination, route.fib))):
            findings.append(f"{router}: route {freebsd.route_args(route)}: not as planned")
        if found["pf_file"] != sha256(pf_conf):
            findings.append(f"{router}: /etc/pf.conf is not the planned one")
        findings += [f.line for f in pf_findings(router, found)]
        if findings:
            why = "; ".join(line.removeprefix(f"{router}: ") for line in findings)
            problems.append(
                f"{name}: {router} does not run its side of the tunnel yet ({why}): deploy "
                f"{router} first (without --limit, or --limit {router})"
            )
    return problems


def gather_router_side(target: Any, plan: Plan, names: list[str]) -> dict[str, Any] | None:
    """What ``router_side`` reads from the router, read-only (a failed read does not make the
    router a failed host of this run: it is not one of its hosts; None)."""
    hp = plan.host(plan.router.name)
    tunnels = [plan.tunnel_to(plan.network.downstream(name)) for name in names]
    lookups = [(r.destination, r.fib) for r in hp.routes]
    lookups += [lookup for t in tunnels for lookup in peer_lookups(t)]
    reads = Reads(
        (
            Read.of(facts.Ifconfig),
            *(Read.of(facts.RouteLookup, destination=d, fib=f) for d, f in dict.fromkeys(lookups)),
            Read.of(Sha256File, path=freebsd.PF_CONF),
            *_PF_READS,
        )
    )
    answers = read_fact(target, facts.HostState, fail_host=False, reads=reads)
    return found_in(answers, reads) if answers else None
