"""``ownas lab status``: what the lab's network is doing, read from the daemons themselves.

BGP sessions as both sides see them (FRR on the router, BIRD in each upstream), what each
upstream receives from the router (prefix, AS path, communities, from BIRD), what the router
accepted and rejected of what each upstream sent (FRR's received-routes, kept by
``soft-reconfiguration inbound``, against its accepted routes), and each tunnel's state.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from tasks.lab import links
from tasks.lab.lab import Lab


def _vtysh(lab: Lab, router: str, command: str) -> dict[str, Any] | None:
    """A vtysh JSON answer from the router's FRR; None while FRR is not running."""
    result = lab.run_in(router, ["vtysh", "-c", command], check=False)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        return None


def _birdc(socket: str, command: str) -> str:
    result = subprocess.run(
        ["birdc", "-s", socket, *command.split()], capture_output=True, text=True, check=False
    )
    return result.stdout


def parse_bird_routes(text: str) -> list[dict[str, Any]]:
    """``show route ... all``: each route's prefix, AS path and communities (sorted)."""
    routes: list[dict[str, Any]] = []
    for line in text.splitlines():
        start = re.match(r"^([0-9a-f:.]+/\d+)\s+unicast", line)
        if start:
            routes.append(
                {
                    "prefix": start.group(1),
                    "as_path": [],
                    "communities": [],
                    "large_communities": [],
                }
            )
            continue
        attribute = re.match(r"^\s+BGP\.(as_path|community|large_community):\s*(.*)$", line)
        if not attribute or not routes:
            continue
        key, value = attribute.groups()
        if key == "as_path":
            routes[-1]["as_path"] = [int(asn) for asn in re.findall(r"\d+", value)]
        else:
            groups = re.findall(r"\(([^)]*)\)", value)
            values = [":".join(part.strip() for part in group.split(",")) for group in groups]
            routes[-1]["communities" if key == "community" else "large_communities"] = sorted(
                values, key=lambda v: [int(part) for part in v.split(":")]
            )
    return sorted(routes, key=lambda r: r["prefix"])


def parse_bird_state(text: str) -> str:
    """The BGP state from ``show protocols all NAME``."""
    found = re.search(r"BGP state:\s+(\S+)", text)
    return found.group(1) if found else "unknown"


def gather(lab: Lab) -> dict[str, Any]:
    state = lab.state()
    topology = state["topology"]
    router = topology["router"]
    neighbors = _vtysh(lab, router, "show bgp neighbors json")
    sessions, received, filtering = [], {}, {}
    for upstream in topology["upstreams"]:
        name, peer = upstream["name"], upstream["address"]
        socket = state["upstreams"][name]["socket"]
        frr = (neighbors or {}).get(peer, {})
        sessions.append(
            {
                "upstream": name,
                "asn": upstream["asn"],
                "peer": peer,
                "router": frr.get("bgpState", "FRR not running" if neighbors is None else "none"),
                "connections_established": frr.get("connectionsEstablished", 0),
                "upstream_state": parse_bird_state(_birdc(socket, f"show protocols all {router}")),
            }
        )
        received[name] = parse_bird_routes(_birdc(socket, f"show route protocol {router} all"))
        sent = _vtysh(lab, router, f"show bgp ipv6 neighbors {peer} received-routes json") or {}
        kept = _vtysh(lab, router, f"show bgp ipv6 neighbors {peer} routes json") or {}
        offered = set(sent.get("receivedRoutes", {}))
        accepted = set(kept.get("routes", {}))
        filtering[name] = {
            "received": sorted(offered),
            "accepted": sorted(accepted),
            "rejected": sorted(offered - accepted),
        }
    tunnels = []
    for link in topology["tunnels"]:
        far = link["b"]
        if link["b_endpoints"] is not None:
            far_endpoints = list(link["b_endpoints"])
        elif far is not None:
            far_endpoints = _endpoints(state, far["host"], far["interface"])
        else:
            far_endpoints = None
        tunnels.append(
            {
                "interface": link["a"]["interface"],
                "site": link["site"],
                "in_lab": far is not None,
                "up": links.connected(state, link),
                "router_endpoints": _endpoints(state, router, link["a"]["interface"]),
                "far_endpoints": far_endpoints,
            }
        )
    return {
        "router": router,
        "sample": topology["sample"],
        "sessions": sessions,
        "received": received,
        "filtering": filtering,
        "tunnels": tunnels,
    }


def _endpoints(state: dict[str, Any], host: str, interface: str) -> list[str] | None:
    """The outer endpoints a managed host's tunnel is configured with (None: not created)."""
    configured = links.configured(state, host, interface)
    return None if configured is None else configured[0]


def _arrow(endpoints: list[str] | None) -> str:
    if endpoints is None:
        return "not created"
    return " -> ".join(endpoints) if endpoints else "no endpoints"


def _by_kind(prefixes: list[str], sample: dict[str, list[str]]) -> dict[str, list[str]]:
    """Prefixes grouped by what the lab's sample says they are (bogon, too_specific, ...)."""
    kind_of = {prefix: kind for kind, listed in sample.items() for prefix in listed}
    grouped: dict[str, list[str]] = {}
    for prefix in prefixes:
        grouped.setdefault(kind_of.get(prefix, "other"), []).append(prefix)
    return dict(sorted(grouped.items()))


def report(status: dict[str, Any]) -> str:
    """The convergence report, one screen."""
    router = status["router"]
    lines = ["BGP sessions (router / upstream)"]
    for s in status["sessions"]:
        lines.append(
            f"  {s['upstream']:<10} AS{s['asn']:<7} {s['peer']:<20} {s['router']} / "
            f"{s['upstream_state']}  (established {s['connections_established']}x)"
        )
    lines += ["", "What each upstream receives from the router"]
    for name, routes in status["received"].items():
        if not routes:
            lines.append(f"  {name:<10} nothing")
        for route in routes:
            extra = " ".join(route["communities"] + route["large_communities"])
            lines.append(
                f"  {name:<10} {route['prefix']:<22} AS path {' '.join(map(str, route['as_path']))}"
                + (f"  communities {extra}" if extra else "")
            )
    lines += ["", f"What {router} accepted of what each upstream sent"]
    for name, seen in status["filtering"].items():
        lines.append(
            f"  {name:<10} accepted {len(seen['accepted'])} of {len(seen['received'])}: "
            + (" ".join(seen["accepted"]) or "-")
        )
        lines.append(f"  {'':<10} rejected {len(seen['rejected'])}:")
        for kind, prefixes in _by_kind(seen["rejected"], status["sample"]).items():
            lines.append(f"  {'':<12} {kind + ':':<14} {' '.join(prefixes)}")
    lines += ["", "Tunnels"]
    for t in sorted(status["tunnels"], key=lambda t: t["interface"]):
        if not t["in_lab"]:
            state = "not in the lab (unmanaged site)"
        else:
            state = "up" if t["up"] else "down"
        lines.append(
            f"  {t['interface']:<6} {router} <-> {t['site']:<10} {state:<5} "
            f"{router}: {_arrow(t['router_endpoints'])}"
            + (f"; {t['site']}: {_arrow(t['far_endpoints'])}" if t["in_lab"] else "")
        )
    return "\n".join(lines) + "\n"
