"""``ownas status``: what the network is doing, read from the hosts over SSH and judged by the
checks a deploy ends with.

Read-only. Each managed host is read once, with one command (``facts.HostState``), through
pyinfra's connectors and the inventory's connection settings, every host at once; the
convergence verdict is ``checks.evaluate``'s, the same a deploy waits for. ``ownas lab status``
is this report read through the lab's inventory, with what only the lab can add (the
upstreams' own view, from BIRD) beside it (tasks/lab/status.py).

The JSON form is documented in README.md ("ownas status"); ``SCHEMA`` names its version.
Exit status (``exit_status``): 0 converged, 1 not converged, 2 a host could not be reached or
read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gevent
from pyinfra.api import Config, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_fact
from pyinfra.connectors.sshuserclient.client import get_host_keys, get_ssh_config
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import FileContents

from tasks import checks, facts, freebsd, preflight, ssh
from tasks.model import Network, host_name
from tasks.plan import HostPlan, Plan, rtr_caches
from tasks.policy import REASONS, rejection
from tasks.preflight import Preflight

SCHEMA = "ownas-status/1"
CONVERGED, NOT_CONVERGED, UNREACHABLE = 0, 1, 2
# Nothing is deferred or waits for a reboot: status judges the network as it runs.
_AS_RUNNING = Preflight()


def reads(plan: Plan, hp: HostPlan, verbose: bool = False) -> facts.Reads:
    """What status reads from one host: what the checks judge (``checks.probe_reads``), and on
    the router what each upstream receives and what it sent that the policy refuses."""
    found = list(checks.probe_reads(plan, hp, _AS_RUNNING))
    found += [facts.Read.of(facts.PfStates), facts.Read.of(FileContents, path=freebsd.NETIF_CONF)]
    if hp.role == "router":
        peers = plan.upstream_peers
        found.append(facts.Read.of(facts.PolicyCounts, peers=peers))
        asn = plan.network.asn
        found += [facts.Read.of(facts.Announced, peer=p, asn=asn) for p in peers]
        found += [facts.Read.of(facts.FilteredRoutes, peer=p) for p in peers]
        if verbose:
            found += [facts.Read.of(facts.AcceptedRoutes, peer=p) for p in peers]
        if plan.router.rpki is not None:
            found.append(facts.Read.of(facts.RoaTable))
    return facts.Reads(found)


@dataclass(frozen=True)
class HostRead:
    """One host as status read it: its answers to what was asked, or why there are none."""

    answers: dict[facts.Read, Any] | None
    error: str | None = None
    asked: tuple[facts.Read, ...] = ()


def read_hosts(inventory: Any, plan: Plan, verbose: bool = False) -> dict[str, HostRead]:
    """Every managed host of ``inventory``, read at once over SSH (pyinfra's connectors)."""
    ssh.patch_proxy_command()
    # pyinfra keeps each SSH config and known_hosts file it parsed for the life of the process
    # (sshuserclient's memoize): read them as they are now, as a new process would (the lab
    # adds a host to its config; a long-lived caller reads again after an edit).
    for memoized in (get_ssh_config, get_host_keys):
        memoized.cache.clear()
    state = State(inventory, Config())
    targets = {host_name(h): h for h in inventory if host_name(h) in plan.hosts}

    def read(name: str) -> HostRead:
        target, asked = targets[name], reads(plan, plan.host(name), verbose)
        with ctx_state.use(state), ctx_host.use(target):
            try:
                target.connect(reason="read only: ownas status", raise_exceptions=True)
            except PyinfraError as error:
                return HostRead(None, f"cannot connect over SSH: {error}")
            try:
                answers = get_fact(
                    state,
                    target,
                    facts.HostState,
                    kwargs={"reads": asked},
                    apply_failed_hosts=False,
                )
            except PyinfraError as error:
                answers = None
                why = str(error)
            else:
                why = "its state could not be read"
            finally:
                target.disconnect()
        return HostRead(answers or None, None if answers else why, asked)

    jobs = {name: state.pool.spawn(read, name) for name in targets}
    gevent.joinall(list(jobs.values()))
    return {name: jobs[name].get() for name in plan.hosts if name in jobs}


def blank(network: Network) -> dict[str, Any]:
    """A report with nothing read yet: every key of ``SCHEMA``, the AS's own filled in."""
    return {
        "schema": SCHEMA,
        "asn": network.asn,
        "prefix": str(network.prefix),
        "hosts": [],
        "findings": [],
        "sessions": [],
        "announced": [],
        "filtering": [],
        "rpki": None,
        "tunnels": [],
        "pf": [],
        "routes": [],
        "pending": [d.name for d in network.downstreams if d.pending],
        "converged": False,
    }


def build(plan: Plan, found: dict[str, HostRead], verbose: bool = False) -> dict[str, Any]:
    """The report (``SCHEMA``) from what each host answered."""
    report = blank(plan.network)
    for name, hp in plan.hosts.items():
        got = found.get(name, HostRead(None, "not in the inventory's hosts"))
        report["hosts"].append(
            {"name": name, "role": hp.role, "reached": got.answers is not None, "error": got.error}
        )
        if got.answers is None:
            continue
        snapshot = checks.found_in(got.answers, got.asked)
        # What an earlier deploy made and this plan retires must be gone (a retired host, or a
        # downstream the router no longer has): ownas's own netif fragment says what it made.
        made = facts.answer(got.answers, FileContents, path=freebsd.NETIF_CONF)
        running = replace(_AS_RUNNING, retired_tunnels=preflight.retired(hp, made))
        for finding in checks.evaluate(plan, hp, running, snapshot):
            report["findings"].append(
                {
                    "host": name,
                    "line": finding.line,
                    "warning": finding.warning,
                    "waitable": finding.waitable,
                }
            )
        _host_sections(report, hp, snapshot, got.answers)
        if hp.role == "router":
            _router_sections(report, plan, snapshot, got.answers, verbose)
    problems = any(not f["warning"] for f in report["findings"])
    report["converged"] = not problems and not unreached(report)
    return report


def unreached(report: dict[str, Any]) -> list[str]:
    """The hosts the report could not read; a retired one out of reach is no failure: nothing
    depends on it any more."""
    return [h["name"] for h in report["hosts"] if not h["reached"] and h["role"] != "retired"]


def _host_sections(
    report: dict[str, Any], hp: HostPlan, snapshot: dict[str, Any], answers: dict[Any, Any]
) -> None:
    for tunnel in hp.tunnels:
        interface = snapshot["ifconfig"].get(tunnel.interface)
        report["tunnels"].append(
            {
                "host": hp.name,
                "interface": tunnel.interface,
                "far_end": tunnel.far_end,
                "role": tunnel.role,
                "up": bool(interface and interface.up),
                "endpoints": list(interface.tunnel) if interface and interface.tunnel else None,
                "mtu": interface.mtu if interface else None,
                "drift": [d.line for d in facts.tunnel_drift(tunnel, interface)],
            }
        )
    report["pf"].append(
        {
            "host": hp.name,
            "enabled": snapshot["pf_status"] == "Enabled",
            "in_sync": not checks.pf_findings(hp.name, snapshot),
            "states": facts.answer(answers, facts.PfStates),
        }
    )
    for route in (*hp.routes, *hp.fib_routes):
        report["routes"].append(
            {
                "host": hp.name,
                "fib": route.fib,
                "destination": route.destination,
                "planned": freebsd.route_args(route),
                "present": facts.route_matches(
                    route, snapshot["routes"].get((route.destination, route.fib))
                ),
            }
        )


def _router_sections(
    report: dict[str, Any],
    plan: Plan,
    snapshot: dict[str, Any],
    answers: dict[Any, Any],
    verbose: bool,
) -> None:
    counts = facts.answer(answers, facts.PolicyCounts, peers=plan.upstream_peers)
    roas = facts.answer(answers, facts.RoaTable) if plan.router.rpki is not None else []
    for upstream in plan.router.upstreams:
        peer = str(upstream.peer)
        neighbor = snapshot["bgp"].get(peer, {})
        report["sessions"].append(
            {
                "upstream": upstream.name,
                "asn": upstream.asn,
                "peer": peer,
                "state": neighbor.get("state") or "not configured",
                "maintenance": upstream.shutdown,
                "admin_shutdown": bool(neighbor.get("admin_shutdown")),
                "up_seconds": neighbor.get("up_seconds"),
                "connections_established": neighbor.get("connections", 0),
                "last_reset": neighbor.get("last_reset", ""),
            }
        )
        for route in facts.answer(answers, facts.Announced, peer=peer, asn=plan.network.asn):
            report["announced"].append({"upstream": upstream.name, **route})
        refused = facts.answer(answers, facts.FilteredRoutes, peer=peer)
        reasons: dict[str, list[str]] = {}
        for prefix, path in refused.items():
            reasons.setdefault(rejection(plan.network, prefix, path, roas), []).append(prefix)
        seen = counts.get(peer, {})
        entry: dict[str, Any] = {
            "upstream": upstream.name,
            "received": seen.get("received", 0),
            "accepted": seen.get("accepted", 0),
            "rejected": len(refused),
            "rejected_by_reason": {
                reason: (sorted(reasons[reason]) if verbose else len(reasons[reason]))
                for reason in REASONS
                if reason in reasons
            },
        }
        if verbose:
            entry["accepted_prefixes"] = facts.answer(answers, facts.AcceptedRoutes, peer=peer)
        report["filtering"].append(entry)
    rpki = plan.router.rpki
    if rpki is not None:
        state = snapshot["rpki"]
        report["rpki"] = {
            "caches": [
                {
                    "cache": f"{c.address} {c.port}",
                    "preference": c.preference,
                    "in_sync": bool(state["caches"].get(f"{c.address} {c.port}")),
                }
                for c in rtr_caches(rpki)
            ],
            "roas": state["roas"],
            "invalid_accepted": snapshot["rpki_invalid"],
        }


def exit_status(report: dict[str, Any]) -> int:
    if unreached(report):
        return UNREACHABLE
    return CONVERGED if report["converged"] else NOT_CONVERGED


# --- the report as text and as Markdown: one list of sections, two layouts -----------------


@dataclass(frozen=True)
class Section:
    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


def _uptime(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02}:{rest % 3600 // 60:02}:{rest % 60:02}"
    return f"{days}d {clock}" if days else clock


def _session_state(s: dict[str, Any]) -> str:
    if s["maintenance"] == "admin":
        return f"{s['state']} (admin down, as asked)"
    if s["maintenance"] == "graceful":
        return f"{s['state']} (drained)"
    return s["state"]


def sections(report: dict[str, Any]) -> list[Section]:
    hosts = Section(
        "Hosts",
        ("host", "role", "reached"),
        [
            (h["name"], h["role"], "yes" if h["reached"] else f"no: {h['error']}")
            for h in report["hosts"]
        ],
    )
    sessions = Section(
        "BGP sessions",
        ("upstream", "AS", "peer", "state", "up", "established", "last reset"),
        [
            (
                s["upstream"],
                str(s["asn"]),
                s["peer"],
                _session_state(s),
                _uptime(s["up_seconds"]),
                f"{s['connections_established']}x",
                s["last_reset"] or "-",
            )
            for s in report["sessions"]
        ],
    )
    announced = Section(
        "What each upstream receives from us",
        ("upstream", "prefix", "AS path", "communities"),
        [
            (
                r["upstream"],
                r["prefix"],
                " ".join(map(str, r["as_path"])),
                " ".join(r["communities"] + r["large_communities"]) or "-",
            )
            for r in report["announced"]
        ],
    )
    filtering = Section(
        "What each upstream sent: accepted and rejected",
        ("upstream", "received", "accepted", "rejected", "why"),
        [
            (
                f["upstream"],
                str(f["received"]),
                str(f["accepted"]),
                str(f["rejected"]),
                "; ".join(f"{why} {_listed(n)}" for why, n in f["rejected_by_reason"].items())
                or "-",
            )
            for f in report["filtering"]
        ],
    )
    result = [hosts, sessions, announced, filtering]
    if any("accepted_prefixes" in f for f in report["filtering"]):
        result.append(
            Section(
                "Accepted prefixes",
                ("upstream", "prefixes"),
                [
                    (f["upstream"], " ".join(f["accepted_prefixes"]) or "-")
                    for f in report["filtering"]
                ],
            )
        )
    if report["rpki"] is not None:
        rpki = report["rpki"]
        rows = [
            (c["cache"], str(c["preference"]), "in sync" if c["in_sync"] else "not in sync")
            for c in rpki["caches"]
        ]
        invalid = rpki["invalid_accepted"]
        rows.append(("ROAs held", str(rpki["roas"]), f"accepted invalid: {len(invalid)}"))
        result.append(Section("RPKI (RTR caches)", ("cache", "preference", "state"), rows))
    result += [
        Section(
            "Tunnels",
            ("host", "interface", "to", "state", "endpoints", "MTU"),
            [
                (
                    t["host"],
                    t["interface"],
                    t["far_end"] + (" (pending)" if t["far_end"] in report["pending"] else ""),
                    "; ".join(t["drift"]) or "up, as planned",
                    " -> ".join(t["endpoints"]) if t["endpoints"] else "-",
                    str(t["mtu"] or "-"),
                )
                for t in report["tunnels"]
            ],
        ),
        Section(
            "pf",
            ("host", "enabled", "ruleset", "states"),
            [
                (
                    p["host"],
                    "yes" if p["enabled"] else "no",
                    "as /etc/pf.conf" if p["in_sync"] else "differs from /etc/pf.conf",
                    "-" if p["states"] is None else str(p["states"]),
                )
                for p in report["pf"]
            ],
        ),
        Section(
            "Planned routes",
            ("host", "FIB", "route", "present"),
            [
                (r["host"], str(r["fib"]), r["planned"], "yes" if r["present"] else "no")
                for r in report["routes"]
            ],
        ),
        Section(
            "Findings",
            ("", "finding"),
            [("warning" if f["warning"] else "problem", f["line"]) for f in report["findings"]],
        ),
    ]
    return result


def _listed(found: int | list[str]) -> str:
    return str(found) if isinstance(found, int) else f"{len(found)}: {' '.join(found)}"


def verdict(report: dict[str, Any]) -> str:
    if unreached(report):
        return f"not reached: {', '.join(unreached(report))}"
    problems = sum(not f["warning"] for f in report["findings"])
    warnings = len(report["findings"]) - problems
    if report["converged"]:
        return "converged" + (f" ({warnings} warning{'s' * (warnings > 1)})" if warnings else "")
    return f"not converged: {problems} problem{'s' * (problems > 1)}"


def text(report: dict[str, Any]) -> str:
    lines = [f"AS{report['asn']} {report['prefix']}: {verdict(report)}"]
    for section in sections(report):
        lines += ["", section.title]
        if not section.rows:
            lines.append("  none")
            continue
        widths = [max(len(row[i]) for row in section.rows) for i in range(len(section.header))]
        for row in section.rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# AS{report['asn']} {report['prefix']}: {verdict(report)}"]
    for section in sections(report):
        lines += ["", f"## {section.title}", ""]
        if not section.rows:
            lines.append("None.")
            continue
        lines.append("| " + " | ".join(section.header) + " |")
        lines.append("|" + "---|" * len(section.header))
        for row in section.rows:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"
