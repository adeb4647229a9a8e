"""``ownas lab status``: what the lab's network is doing, read from the daemons themselves.

BGP sessions as both sides see them (FRR on the router, BIRD in each upstream), what each
upstream receives from the router (prefix, AS path, communities, from BIRD), what the router
accepted and rejected of what each upstream sent (FRR's received-routes, kept by
``soft-reconfiguration inbound``, against its accepted routes), and each tunnel's state.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from typing import Any

from tasks.lab import links
from tasks.lab.lab import Lab


def _vtysh(lab: Lab, router: str, command: str) -> dict[str, Any] | None:
    """A vtysh JSON answer from the router's FRR; None while FRR is not running."""
    result = lab.vtysh(router, command, check=False)
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
    table = _vtysh(lab, router, "show rpki prefix-table json")
    roas = None if table is None or "prefixes" not in table else table["prefixes"]
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
        if roas is not None:
            filtering[name]["rpki"] = _rpki_counts(sent, kept, roas)
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
        "rpki": _rpki_caches(lab, state, router),
        "sample": topology["sample"],
        "sessions": sessions,
        "received": received,
        "filtering": filtering,
        "tunnels": tunnels,
    }


def origin_validation(prefix: str, path: str, roas: list[dict[str, Any]]) -> str:
    """RFC 6811 route origin validation of ``prefix`` (its origin: the last AS of ``path``)
    against ``roas`` as FRR holds them (show rpki prefix-table: prefix, prefixLenMax, asn).
    For what FRR rejected, which it no longer shows with a validation state."""
    network = ipaddress.ip_network(prefix)
    words = path.split()
    origin = int(words[-1]) if words and words[-1].isdigit() else None
    covering = [
        roa
        for roa in roas
        if network.version == ipaddress.ip_address(roa["prefix"]).version
        and network.subnet_of(ipaddress.ip_network(f"{roa['prefix']}/{roa['prefixLenMin']}"))
    ]
    if not covering:
        return "not_found"
    for roa in covering:
        if roa["asn"] != 0 and roa["asn"] == origin and network.prefixlen <= roa["prefixLenMax"]:
            return "valid"
    return "invalid"


def _rpki_counts(
    sent: dict[str, Any], kept: dict[str, Any], roas: list[dict[str, Any]]
) -> dict[str, int]:
    """Per upstream: what FRR accepted by its own validation state, and what it rejected that
    is RPKI invalid."""
    counts = {"valid": 0, "not_found": 0, "invalid_accepted": 0, "invalid_rejected": 0}
    for paths in kept.get("routes", {}).values():
        path = paths[0] if paths else {}
        if path.get("rpkiValid"):
            counts["valid"] += 1
        elif path.get("rpkiInvalid"):
            counts["invalid_accepted"] += 1
        else:
            counts["not_found"] += 1
    for prefix, route in sent.get("receivedRoutes", {}).items():
        rejected = prefix not in kept.get("routes", {})
        if rejected and origin_validation(prefix, route.get("path", ""), roas) == "invalid":
            counts["invalid_rejected"] += 1
    return counts


def _rpki_caches(lab: Lab, state: dict[str, Any], router: str) -> list[dict[str, Any]]:
    """The RTR caches FRR asks, with what stands in for each in the lab."""
    shown = _vtysh(lab, router, "show rpki cache-server json") or {}
    connected = _vtysh(lab, router, "show rpki cache-connection json") or {}
    states = {
        f"{c.get('host')} {c.get('port')}": c.get("state", "")
        for c in connected.get("connections", [])
    }
    host_state = links.load_state(lab.host_dir(router))
    validators = host_state.get("validators", {})
    caches = []
    for server in shown.get("servers", []):
        key = f"{server.get('host')} {server.get('port')}"
        if key in state.get("caches", {}):
            pid = state["caches"][key]
            stand_in = "stayrtr on the lab's Internet" + ("" if pid else " (stopped)")
        elif validators:
            name, pid = next(iter(validators.items()))
            stand_in = f"stayrtr on {router} in place of {name}"
        else:
            stand_in = "not in the lab"
        caches.append(
            {
                "cache": key,
                "preference": server.get("preference"),
                "state": states.get(key, "not in sync"),
                "lab": stand_in,
            }
        )
    return caches


def _endpoints(state: dict[str, Any], host: str, interface: str) -> list[str] | None:
    """The outer endpoints a managed host's tunnel is configured with (None: not created)."""
    configured = links.configured(state, host, interface)
    return None if configured is None else configured[0]


def _arrow(endpoints: list[str] | None) -> str:
    if endpoints is None:
        return "not created"
    return " -> ".join(endpoints) if endpoints else "no endpoints"


# Why the router rejected a route, by the sample's kind (tasks/data/lab_sample.toml).
REASONS = {
    "bogon": "bogon",
    "bogon_asn": "bogon ASN",
    "too_specific": "too long",
    "too_short": "too short",
    "default": "default",
    "own": "own",
    "rpki_invalid_origin": "RPKI invalid (origin)",
    "rpki_invalid_length": "RPKI invalid (maxLength)",
}


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
            reason = REASONS.get(kind, kind)
            lines.append(f"  {'':<12} {reason + ':':<24} {' '.join(prefixes)}")
        if "rpki" in seen:
            counts = seen["rpki"]
            lines.append(
                f"  {'':<10} RPKI: accepted {counts['valid']} valid, {counts['not_found']} not "
                f"found, {counts['invalid_accepted']} invalid; rejected "
                f"{counts['invalid_rejected']} invalid"
            )
    if status["rpki"]:
        lines += ["", "RPKI caches (RTR)"]
        for cache in status["rpki"]:
            lines.append(
                f"  {cache['cache']:<28} preference {cache['preference']:<3} "
                f"{cache['state']:<13} {cache['lab']}"
            )
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
