"""``ownas lab status``: ``ownas status`` through the lab's inventory, and what only the lab
can add: each upstream's side of its session and what it receives from the router (BIRD),
what stands in for each RTR cache, and each tunnel's link.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

from tasks import status as network_status
from tasks.inventory import load_inventory
from tasks.lab import links
from tasks.lab.lab import Lab
from tasks.plan import load


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


def gather(lab: Lab, verbose: bool = False) -> dict[str, Any]:
    """``ownas status``'s report, read through the lab's inventory over SSH as for real hosts,
    with the lab's own view beside it under ``lab``: each upstream's side of its session and
    what it receives (BIRD), what stands in for each RTR cache, and each tunnel's link."""
    state = lab.state()  # first: without a lab there is no inventory of it to read
    inventory = load_inventory(lab.inventory)
    plan = load(inventory)
    found = network_status.build(plan, network_status.read_hosts(inventory, plan, verbose), verbose)
    topology = state["topology"]
    router = topology["router"]
    upstreams = []
    for upstream in topology["upstreams"]:
        socket = state["upstreams"][upstream["name"]]["socket"]
        upstreams.append(
            {
                "upstream": upstream["name"],
                "state": parse_bird_state(_birdc(socket, f"show protocols all {router}")),
                "received": parse_bird_routes(_birdc(socket, f"show route protocol {router} all")),
            }
        )
    caches = [c["cache"] for c in (found["rpki"] or {}).get("caches", [])]
    found["lab"] = {
        "upstreams": upstreams,
        "caches": _stand_ins(lab, state, router, caches),
        "links": [
            {
                "interface": link["a"]["interface"],
                "site": link["site"],
                "in_lab": link["b"] is not None,
                "up": links.connected(state, link),
            }
            for link in topology["tunnels"]
        ],
        "sample": topology["sample"],
    }
    return found


def _stand_ins(
    lab: Lab, state: dict[str, Any], router: str, caches: list[str]
) -> list[dict[str, str]]:
    """What stands in for each RTR cache the inventory names ("address port")."""
    validators = links.load_state(lab.host_dir(router)).get("validators", {})
    found = []
    for cache in caches:
        if cache in state.get("caches", {}):
            running = state["caches"][cache] is not None
            stand_in = "stayrtr on the lab's Internet" + ("" if running else " (stopped)")
        elif validators and cache.startswith("127.0.0.1 "):
            stand_in = f"stayrtr on {router} in place of {next(iter(validators))}"
        else:
            stand_in = "not in the lab"
        found.append({"cache": cache, "stand_in": stand_in})
    return found


# The reason tasks.policy.rejection gives for each kind of the lab's sample
# (tasks/data/lab_sample.toml): the lab checks the report's reasons against what it sent.
SAMPLE_REASONS = {
    "bogon": "bogon",
    "bogon_asn": "bogon ASN",
    "too_specific": "too long",
    "too_short": "too short",
    "default": "default",
    "own": "own",
    "rpki_invalid_origin": "RPKI invalid (origin)",
    "rpki_invalid_length": "RPKI invalid (maxLength)",
}


def text(found: dict[str, Any]) -> str:
    """``ownas status``'s report, then what the lab adds."""
    lab = found["lab"]
    lines = ["", "In the lab: each upstream's side (BIRD)"]
    for upstream in lab["upstreams"]:
        lines.append(f"  {upstream['upstream']:<10} session {upstream['state']}")
        for route in upstream["received"]:
            extra = " ".join(route["communities"] + route["large_communities"])
            lines.append(
                f"  {'':<10} receives {route['prefix']} AS path "
                f"{' '.join(map(str, route['as_path']))}"
                + (f"  communities {extra}" if extra else "")
            )
    if lab["caches"]:
        lines += ["", "In the lab: RTR caches"]
        lines += [f"  {c['cache']:<28} {c['stand_in']}" for c in lab["caches"]]
    lines += ["", "In the lab: tunnel links"]
    for link in lab["links"]:
        state = ("up" if link["up"] else "down") if link["in_lab"] else "not in the lab (unmanaged)"
        lines.append(f"  {link['interface']:<6} to {link['site']:<10} {state}")
    return network_status.text(found) + "\n".join(lines) + "\n"
