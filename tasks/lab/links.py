"""Tunnel links of the lab: a tunnel's veth pair is up only while both ends name each other.

A FreeBSD gif/gre carries packets only between the outer addresses both ends are configured
with; this kernel has neither, so each tunnel is a veth pair, and this module sets its link up
when the router's end names (its WAN address, the far end's current address) and the far end
names the reverse — a VPS that moved comes back only when both ends were updated. Called by
``ownas lab up`` and by the stand-ins after every change to a tunnel. Standard library only:
the stand-ins import it on every call.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HIDDEN = "x"  # prefix of a tunnel end that FreeBSD's ifconfig does not see yet


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One change at a time to what ``directory`` keeps: the lab's (its links, which every
    host's tunnels change; hosts deploy in parallel), or one host's (its state.json). The
    lab's lock first, when both."""
    with open(directory / "lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_state(host_dir: Path) -> dict[str, Any]:
    return json.loads((host_dir / "state.json").read_text())


def save_state(host_dir: Path, state: dict[str, Any]) -> None:
    path = host_dir / "state.json"
    path.with_suffix(".tmp").write_text(json.dumps(state, indent=1, sort_keys=True))
    path.with_suffix(".tmp").replace(path)


def _ipv4(addresses: list[str]) -> str | None:
    return next((a.split("/")[0] for a in addresses if "." in a), None)


def configured(lab: dict[str, Any], host: str, interface: str) -> tuple[list[str], bool] | None:
    """(outer endpoints, administratively up) of a managed host's tunnel, None if not created."""
    state = load_state(Path(lab["hosts"][host]["dir"]))
    tunnel = state["tunnels"].get(interface)
    if tunnel is None or not tunnel.get("created"):
        return None
    return tunnel.get("tunnel") or [], tunnel.get("up", False)


def desired(lab: dict[str, Any], link: dict[str, Any]) -> bool:
    """Whether a tunnel link carries packets now."""
    wan = lab["topology"]["wan"]
    a, b = link["a"], link["b"]
    mine = configured(lab, a["host"], a["interface"])
    if mine is None or b is None:
        return False
    endpoints, up = mine
    if not up:
        return False
    if link["b_endpoints"] is not None:  # an upstream's end, configured by the upstream
        far_source, far_destination = link["b_endpoints"]
        far_up = True
    else:
        theirs = configured(lab, b["host"], b["interface"])
        if theirs is None or len(theirs[0]) != 2:
            return False
        (far_source, far_destination), far_up = theirs
        if far_source != _ipv4(wan[b["host"]]):  # the far end's address is not its own
            return False
    here = _ipv4(wan[a["host"]])
    return far_up and endpoints == [here, far_source] and far_destination == here


def ports(link: dict[str, Any]) -> tuple[str, str, str]:
    """The bridge of a tunnel link in ``inet`` and its two ports (router's end, far end),
    named after the router's interface, which adding or removing a downstream never renames."""
    bridge = f"t{link['a']['interface']}"
    return bridge, bridge + "a", bridge + "b"


def connected(lab: dict[str, Any], link: dict[str, Any]) -> bool:
    """Whether a tunnel link carries packets, read from the links themselves: both bridge
    ports and both ends (under their FreeBSD names) up with a carrier."""
    if link["b"] is None:
        return False
    _bridge, a, b = ports(link)
    ends = [("inet", a), ("inet", b)]
    ends += [(end["host"], end["interface"]) for end in (link["a"], link["b"])]
    for host, interface in ends:
        namespace = lab["namespaces"][host]
        listing = subprocess.run(
            ["ip", "-n", namespace, "-j", "link", "show", "dev", interface],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        flags = json.loads(listing or "[{}]")[0].get("flags", [])
        if "UP" not in flags or "LOWER_UP" not in flags:
            return False
    return True


def reconcile(lab_dir: Path) -> None:
    """Connect or cut every tunnel link at its bridge, as ``desired`` says."""
    lab = json.loads((lab_dir / "lab.json").read_text())
    inet = lab["namespaces"]["inet"]
    for link in lab["topology"]["tunnels"]:
        state = "up" if desired(lab, link) else "down"
        _bridge, a, b = ports(link)
        for port in (a, b) if link["b"] is not None else (a,):
            subprocess.run(
                ["ip", "-n", inet, "link", "set", port, state], capture_output=True, check=False
            )
