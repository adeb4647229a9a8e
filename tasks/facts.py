"""pyinfra facts for the FreeBSD state ownas reads: each runs one command and parses its output.

Output formats are FreeBSD 14's, read from the sources that print them (sbin/ifconfig,
usr.bin/netstat, sbin/pfctl, net/frr10); the fixtures in tests/facts/ cite them. Commands come
from tasks.freebsd.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

from tasks import freebsd
from tasks.plan import Route, Tunnel


class Uname(FactBase):
    """``uname -sr``: the system and its release, e.g. FreeBSD 14.3-RELEASE-p2."""

    command = freebsd.UNAME

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        system, _, release = output[0].strip().partition(" ")
        match = re.match(r"(\d+)\.(\d+)", release)
        major, minor = (int(match[1]), int(match[2])) if match else (0, 0)
        return {"system": system, "release": release, "major": major, "minor": minor}


class LoginShell(FactBase):
    """The deploy user's login shell: field 7 of its passwd entry."""

    command = freebsd.LOGIN_SHELL

    @override
    def process(self, output: list[str]) -> str:
        return output[0].strip()


class SshClient(FactBase):
    """The address this SSH session comes from, as the host sees it ($SSH_CLIENT)."""

    command = freebsd.SSH_CLIENT

    @override
    def process(self, output: list[str]) -> str | None:
        words = output[0].split()
        return words[0] if words else None


class LoadedModules(FactBase):
    """Which of the given kernel modules are in the kernel (loaded, or built in)."""

    @override
    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, modules: tuple[str, ...]) -> str:
        return freebsd.loaded_modules(modules)

    @override
    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class _Flag(FactBase):
    """A yes/no fact: the command echoes ``word`` for yes (and always exits 0)."""

    word = ""

    @override
    @staticmethod
    def default() -> bool:
        return False

    @override
    def process(self, output: list[str]) -> bool:
        return output == [self.word]


class ReloadPending(_Flag):
    """Whether ``path`` was installed and is not loaded yet (its ``.ownas-pending`` marker)."""

    word = "pending"

    def command(self, path: str) -> str:
        return freebsd.pending_check(path)


class Exists(_Flag):
    """Whether ``path`` exists."""

    word = "yes"

    def command(self, path: str) -> str:
        return freebsd.exists(path)


class TimerArmed(_Flag):
    """Whether the restore timer of an earlier, unconfirmed run still waits."""

    word = "yes"
    command = freebsd.timer_armed()


@dataclass
class Interface:
    name: str
    flags: list[str] = field(default_factory=list)
    mtu: int = 0
    description: str = ""
    tunnel: tuple[str, str] | None = None  # outer (source, destination)
    inet: list[str] = field(default_factory=list)  # IPv4 addresses
    inet6: list[tuple[str, str | None, int]] = field(default_factory=list)  # (addr, peer, len)
    fib: int = 0  # not printed by ifconfig when 0
    tunnelfib: int = 0  # likewise
    up: bool = False  # UP and RUNNING
    nd6: list[str] = field(default_factory=list)  # ND options, e.g. ACCEPT_RTADV (af_nd6.c)


_HEADER = re.compile(r"^(\S+): flags=[0-9a-f]+<([^>]*)>.* mtu (\d+)$")
_TUNNEL = re.compile(r"^\ttunnel inet6? (\S+) --> (\S+)$")
_INET = re.compile(r"^\tinet (\S+) ")
_ND6 = re.compile(r"^\tnd6 options=[0-9a-f]+<([^>]*)>")
_INET6 = re.compile(r"^\tinet6 (\S+?)(?:%\S+)?(?: --> (\S+))? prefixlen (\d+)")


class Ifconfig(FactBase):
    """``ifconfig``: every interface with its flags, MTU, description, tunnel, IPv6, FIBs.

    Shape per sbin/ifconfig (FreeBSD 14): a header ``NAME: flags=HEX<FLAGS> metric N mtu N``,
    then tab-indented lines; ``fib:`` and ``tunnelfib:`` are printed only when not 0.
    """

    command = freebsd.IFCONFIG

    @override
    @staticmethod
    def default() -> dict[str, Interface]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, Interface]:
        interfaces: dict[str, Interface] = {}
        current: Interface | None = None
        for line in output:
            header = _HEADER.match(line)
            if header:
                current = Interface(
                    header[1], flags=header[2].split(",") if header[2] else [], mtu=int(header[3])
                )
                interfaces[current.name] = current
                continue
            if current is None:
                continue
            if line.startswith("\tdescription: "):
                current.description = line[len("\tdescription: ") :]
            elif tunnel := _TUNNEL.match(line):
                current.tunnel = (tunnel[1], tunnel[2])
            elif inet := _INET.match(line):
                current.inet.append(inet[1])
            elif inet6 := _INET6.match(line):
                current.inet6.append((inet6[1], inet6[2], int(inet6[3])))
            elif line.startswith("\tfib: "):
                current.fib = int(line.split()[1])
            elif line.startswith("\ttunnelfib: "):
                current.tunnelfib = int(line.split()[1])
            elif nd6 := _ND6.match(line):
                current.nd6 = nd6[1].split(",") if nd6[1] else []
        for interface in interfaces.values():
            interface.up = "UP" in interface.flags and "RUNNING" in interface.flags
        return interfaces


_ROUTE_FIELD = re.compile(r"^\s*(route to|destination|mask|gateway|fib|interface|flags): (.*)$")


class RouteLookup(FactBase):
    """``route -n -6 get -fib N DEST``: the route for exactly DEST in FIB N, or None.

    Format per sbin/route (print_getmsg): ``destination:``, ``mask:`` (absent for a /128),
    ``gateway:`` (only for a gateway route), ``fib:``, ``interface:``, ``flags: <UP,...>``.
    A destination with a prefix length is an exact lookup (RTM_F_PREFIX): a missing route is
    "not found", never the covering one. (``netstat --libxo json`` would list the whole FIB;
    on a router that takes a full table that is hundreds of thousands of routes per check.)
    """

    @override
    @staticmethod
    def default() -> None:
        return None

    def command(self, destination: str, fib: int) -> str:
        self.destination = destination
        return freebsd.route_lookup(destination, fib)

    @override
    def process(self, output: list[str]) -> dict[str, str] | None:
        found: dict[str, str] = {}
        for line in output:
            match = _ROUTE_FIELD.match(line)
            if match:
                found[match[1]] = match[2].strip()
        if "destination" not in found:
            return None
        if not _same_destination(self.destination, found):
            return None
        found["flags"] = found.get("flags", "").strip("<>")
        return found


def route_matches(route: Route, found: dict[str, str] | None) -> bool:
    """Whether the route ``route get`` found is the planned one (gateway, interface, reject)."""
    if found is None:
        return False
    flags = found.get("flags", "")
    if route.reject:
        return "REJECT" in flags
    if route.gateway is not None:
        return found.get("gateway") == str(route.gateway) and "REJECT" not in flags
    return found.get("interface") == route.interface and "GATEWAY" not in flags


@dataclass(frozen=True)
class Drift:
    """One way a live tunnel differs from its plan: ``what`` the deploy corrects, and the
    ``line`` the checks report."""

    what: str  # missing | fib | endpoints | tunnelfib | inner | mtu | description | down
    line: str


def tunnel_drift(tunnel: Tunnel, interface: Interface | None) -> list[Drift]:
    """How the live ``interface`` differs from ``tunnel``: the one place that judges a tunnel,
    for the tunnels operation and the checks alike (its far end's route: peer_route_problems)."""
    if interface is None:
        return [Drift("missing", "does not exist")]
    drift = []
    if interface.fib != tunnel.fib:
        drift.append(Drift("fib", f"is in FIB {interface.fib}, planned FIB {tunnel.fib}"))
    endpoints = (str(tunnel.source), str(tunnel.destination))
    if tuple(interface.tunnel or ()) != endpoints:
        live = " -> ".join(interface.tunnel) if interface.tunnel else "none"
        drift.append(Drift("endpoints", f"endpoints are {live}, planned {' -> '.join(endpoints)}"))
    if interface.tunnelfib != 0:
        drift.append(Drift("tunnelfib", f"tunnelfib {interface.tunnelfib}, planned 0"))
    if (str(tunnel.address), str(tunnel.peer), 128) not in [tuple(e) for e in interface.inet6]:
        drift.append(Drift("inner", f"has no inner pair {tunnel.address} -> {tunnel.peer}"))
    if interface.mtu != tunnel.mtu:
        drift.append(Drift("mtu", f"MTU {interface.mtu}, planned {tunnel.mtu}"))
    if interface.description != tunnel.description:
        drift.append(
            Drift(
                "description",
                f"description {interface.description!r}, planned {tunnel.description!r}",
            )
        )
    if not interface.up:
        drift.append(Drift("down", "is down"))
    return drift


def pf_problems(
    status: str | None, pending: bool, rules: Iterable[str], file_rules: Iterable[str]
) -> list[str]:
    """What keeps pf from running /etc/pf.conf: off, the file installed and not loaded (its
    tables and nat lines do not show in the loaded rules), or other rules loaded. The one place
    that judges it, for the pf operation and the checks alike."""
    if status != "Enabled":
        return ["pf is not enabled"]
    if pending:
        return ["pf: /etc/pf.conf is installed but not loaded"]
    rules, file_rules = list(rules), list(file_rules)
    if rules != file_rules:
        return [
            f"pf has {len(rules)} rules loaded, /etc/pf.conf expands to {len(file_rules)} that "
            "differ"
        ]
    return []


def peer_lookups(tunnel: Tunnel) -> list[tuple[str, int]]:
    """(destination, fib) of a tunnel's far end's host route: in the tunnel's FIB, and in FIB 0
    when that is another one. The kernel adds it in the FIB the interface had when the inner
    pair was added (sys/netinet6/in6.c), and SIOCSIFFIB moves nothing (sys/net/if.c), so a
    tunnel moved with ``ifconfig fib`` keeps it in the old FIB, where a ping cannot tell
    (FIB 1's default route is the tunnel itself)."""
    destination = f"{tunnel.peer}/128"
    return [(destination, tunnel.fib)] + ([(destination, 0)] if tunnel.fib else [])


def peer_route_problems(tunnel: Tunnel, routes: dict[Any, Any]) -> list[str]:
    """What is wrong with the far end's host route (``routes`` holds ``peer_lookups``' answers):
    the one place that judges it, for the tunnels operation and the checks alike."""
    lookups = peer_lookups(tunnel)
    planned = Route("", lookups[0][0], interface=tunnel.interface, fib=tunnel.fib)
    problems = []
    if not route_matches(planned, routes.get(lookups[0])):
        problems.append(f"no route to {tunnel.peer} in FIB {tunnel.fib}")
    for lookup in lookups[1:]:
        stray = routes.get(lookup)
        if stray is not None and stray.get("interface") == tunnel.interface:
            problems.append(
                f"its route to {tunnel.peer} is in FIB 0, planned FIB {tunnel.fib} (the tunnel "
                "was moved without re-creating it: the deploy re-creates it)"
            )
    return problems


def _same_destination(planned: str, found: dict[str, str]) -> bool:
    """Whether route get answered for ``planned`` itself, not for a covering route."""
    from netaddr import IPAddress, IPNetwork

    want = IPNetwork("::/0") if planned == "default" else IPNetwork(planned)
    destination = found["destination"]
    address = IPAddress("::") if destination == "default" else IPAddress(destination)
    mask = found.get("mask")
    if mask in (None, ""):
        length = 128
    elif mask == "default":
        length = 0
    else:
        length = IPAddress(mask).netmask_bits()
    return address == want.network and length == want.prefixlen


class PfStatus(FactBase):
    """``pfctl -s info``: "Enabled" or "Disabled" (first line ``Status: Enabled for ...``);
    None when pf is not in the kernel."""

    command = freebsd.PF_INFO

    @override
    def process(self, output: list[str]) -> str | None:
        match = re.match(r"Status: (\w+)", output[0]) if output else None
        return match[1] if match else None


_RULE = re.compile(r"^(pass|block|match|scrub|anchor) ")


def _rule_lines(output: list[str]) -> list[str]:
    """The filter and scrub rules, one per line, as pfctl's print_rule writes them."""
    return [" ".join(line.split()) for line in output if _RULE.match(line)]


class PfRules(FactBase):
    """``pfctl -sr``: the rules pf has loaded."""

    command = freebsd.PF_RULES

    @override
    @staticmethod
    def default() -> list[str]:
        return []

    @override
    def process(self, output: list[str]) -> list[str]:
        return _rule_lines(output)


class PfFileRules(FactBase):
    """``pfctl -nvf FILE``: the rules FILE expands to, printed the way ``pfctl -sr`` prints."""

    @override
    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, path: str) -> str:
        return freebsd.pf_file_rules(path)

    @override
    def process(self, output: list[str]) -> list[str]:
        return _rule_lines(output)


class RcConfVariables(FactBase):
    """The variables /etc/rc.conf sets (sourced by sh, printed by ``set``)."""

    command = freebsd.RC_CONF_VARIABLES

    @override
    @staticmethod
    def default() -> dict[str, str]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, str]:
        variables = {}
        for line in output:
            name, equals, value = line.partition("=")
            if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            variables[name] = " ".join(words) if len(words) != 1 else words[0]
        return variables


class BgpNeighbors(FactBase):
    """``vtysh -c 'show bgp neighbors json'``: per neighbor, its state and how often it came up.

    ``connectionsEstablished`` grows by one on every session (re)start: comparing it before and
    after a deploy proves a reload did not reset the session. ``lastResetDueTo`` (with
    ``lastNotificationReason`` when a NOTIFICATION ended it) and ``prefixesConfigExceedMax``
    (bgpd/bgp_vty.c, bgp_show_peer and bgp_show_peer_reset) say why a session is down.
    """

    command = freebsd.BGP_NEIGHBORS

    @override
    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        data = json.loads("\n".join(output) or "{}")
        return {
            peer: {
                "state": info.get("bgpState", ""),
                "connections": int(info.get("connectionsEstablished", 0)),
                "last_reset": ": ".join(
                    filter(None, (info.get("lastResetDueTo"), info.get("lastNotificationReason")))
                ),
                "over_limit": bool(info.get("prefixesConfigExceedMax", False)),
                "admin_shutdown": bool(info.get("adminShutDown", False)),
                # bgpTimerUpMsec: how long it has been Established (bgp_show_peer).
                "up_seconds": int(info.get("bgpTimerUpMsec", 0)) // 1000
                if info.get("bgpState") == "Established"
                else None,
            }
            for peer, info in data.items()
            if isinstance(info, dict)
        }


class BgpdModules(FactBase):
    """``show modules`` of bgpd: the names of the modules it loaded (None: bgpd not running).

    A module is loaded only when bgpd starts (``-M rpki``, rc.conf's bgpd_flags); without
    bgpd_rpki, bgpd refuses the ``rpki`` block and ``match rpki``.
    """

    command = freebsd.BGPD_MODULES

    @override
    @staticmethod
    def default() -> None:
        return None

    @override
    def process(self, output: list[str]) -> list[str] | None:
        # "Module Name  Version  Description", then one module a line, then "pid: N".
        names = []
        for line in output:
            words = line.split()
            if not words or words[0] in ("Module", "pid:", "from:"):
                continue
            names.append(words[0])
        return names or None


class RpkiState(FactBase):
    """FRR's RPKI state: ``caches``, each cache ("host port") and whether it is in sync (none
    while FRR answers with an error object: no cache in sync, or no RPKI), and ``roas``, how
    many ROAs it holds and validates with."""

    command = freebsd.RPKI_STATE

    @override
    @staticmethod
    def default() -> dict[str, Any]:
        return {"caches": {}, "roas": 0}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        marker = output.index("@") if "@" in output else len(output)
        connections = _json(output[:marker]).get("connections", [])
        counts = _json(output[marker + 1 :])
        return {
            "caches": {
                f"{c.get('host')} {c.get('port')}": c.get("state") == "connected"
                for c in connections
                if isinstance(c, dict)
            },
            "roas": int(counts.get("ipv4PrefixCount", 0)) + int(counts.get("ipv6PrefixCount", 0)),
        }


def _json(lines: list[str]) -> dict[str, Any]:
    try:
        data = json.loads("\n".join(lines) or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class _Prefixes(FactBase):
    """The prefixes a vtysh JSON answer keys under ``key`` (none while FRR is not running)."""

    key = ""

    @override
    @staticmethod
    def default() -> list[str]:
        return []

    @override
    def process(self, output: list[str]) -> list[str]:
        data = json.loads("\n".join(output) or "{}")
        return sorted(data.get(self.key, {}))


class RpkiInvalidAccepted(_Prefixes):
    """``show bgp ipv6 unicast rpki invalid json``: accepted routes FRR judges RPKI invalid."""

    command = freebsd.RPKI_INVALID_ACCEPTED
    key = "routes"


# filtered-routes' last line; 10.6 and later add ", total number of paths P" (P counted for
# advertised routes only).
_FILTERED_TOTAL = re.compile(r"^Total number of prefixes (\d+)")


class PolicyCounts(FactBase):
    """Per upstream: routes ``received`` (Adj-RIB-In), ``accepted``, and ``filtered`` by the
    inbound policy as it judges them now. While the accepted and the filtered do not add up
    to the received, some decision is stale (a ROA changed and FRR missed it)."""

    @override
    @staticmethod
    def default() -> dict[str, dict[str, int]]:
        return {}

    def command(self, peers: tuple[str, ...]) -> str:
        return freebsd.policy_counts(peers)

    @override
    def process(self, output: list[str]) -> dict[str, dict[str, int]]:
        sections: dict[str, list[str]] = {}
        for line in output:
            if line.startswith("@ "):
                sections[line[2:].strip()] = []
            elif sections:
                sections[list(sections)[-1]].append(line)
        counts = {}
        for peer, lines in sections.items():
            total = [m for line in lines if (m := _FILTERED_TOTAL.match(line))]
            text = "\n".join(line for line in lines if not _FILTERED_TOTAL.match(line))
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                continue  # no such neighbor, or FRR not running
            walk = data.get("ribTableWalkCounters", {})
            counts[peer] = {
                "received": int(walk.get("Adj-in", 0)),
                "accepted": int(data.get("pfxCounter", 0)),
                "filtered": int(total[0][1]) if total else 0,
            }
        return counts


class AdvertisedPrefixes(_Prefixes):
    """``show bgp ipv6 neighbors PEER advertised-routes json``: the prefixes we send PEER."""

    key = "advertisedRoutes"

    def command(self, peer: str) -> str:
        return freebsd.advertised_routes(peer)


# The JSON names FRR gives well-known communities (bgpd/bgp_community.c, community_com2str),
# as the numbers they stand for, the way the upstream receives them (RFC 1997, RFC 7999,
# RFC 8326).
WELL_KNOWN = {
    "gracefulShutdown": "65535:0",
    "acceptown": "65535:1",
    "routeFilterTranslatedV4": "65535:2",
    "routeFilterV4": "65535:3",
    "routeFilterTranslatedV6": "65535:4",
    "routeFilterV6": "65535:5",
    "llgrStale": "65535:6",
    "noLlgr": "65535:7",
    "acceptownnexthop": "65535:8",
    "blackhole": "65535:666",
    "noExport": "65535:65281",
    "noAdvertise": "65535:65282",
    "localAs": "65535:65283",
    "noPeer": "65535:65284",
}


class Announced(FactBase):
    """Per prefix we send PEER: the AS path as it leaves (our AS first, which bgpd adds when it
    sends, then the route-map's prepends) and the communities the route-map added."""

    @override
    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    def command(self, peer: str, asn: int) -> str:
        self.asn = asn
        return freebsd.announced(peer)

    @override
    def process(self, output: list[str]) -> list[dict[str, Any]]:
        routes = []
        for prefix, route in sorted(_json(output).get("advertisedRoutes", {}).items()):
            path = (route.get("paths") or [{}])[0]
            segments = path.get("aspath", {}).get("segments", [])
            as_path = [self.asn] + [asn for s in segments for asn in s.get("list", [])]
            routes.append(
                {
                    "prefix": prefix,
                    "as_path": as_path,
                    "communities": [
                        WELL_KNOWN.get(c, c) for c in path.get("community", {}).get("list", [])
                    ],
                    "large_communities": path.get("largeCommunity", {}).get("list", []),
                }
            )
        return routes


class FilteredRoutes(FactBase):
    """``filtered-routes json``: each route the inbound policy refuses now, with its AS path
    (keyed under receivedRoutes, as FRR 10.3 prints it)."""

    @override
    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def command(self, peer: str) -> str:
        return freebsd.filtered_routes(peer)

    @override
    def process(self, output: list[str]) -> dict[str, str]:
        routes = _json(output).get("receivedRoutes", {})
        return {prefix: route.get("path", "") for prefix, route in sorted(routes.items())}


class AcceptedRoutes(_Prefixes):
    """``show bgp ipv6 neighbors PEER routes json``: the prefixes accepted from PEER."""

    key = "routes"

    def command(self, peer: str) -> str:
        return freebsd.accepted_routes(peer)


class RoaTable(FactBase):
    """The ROAs FRR validates with: prefix, prefixLenMin, prefixLenMax, asn."""

    command = freebsd.ROA_TABLE

    @override
    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    @override
    def process(self, output: list[str]) -> list[dict[str, Any]]:
        return [r for r in _json(output).get("prefixes", []) if isinstance(r, dict)]


class PfStates(FactBase):
    """``pfctl -s info``: how many states pf holds (print_status in sbin/pfctl/pfctl_parser.c:
    ``  current entries`` under ``State Table``); None without pf."""

    command = freebsd.PF_INFO

    @override
    def process(self, output: list[str]) -> int | None:
        for line in output:
            words = line.split()
            if words[:2] == ["current", "entries"] and len(words) > 2 and words[2].isdigit():
                return int(words[2])
        return None


class FrrPending(FactBase):
    """``frr-reload.py --test FILE``: the lines a reload would delete and add (none: in sync)."""

    @override
    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, path: str) -> str:
        return freebsd.frr_pending(path)

    @override
    def process(self, output: list[str]) -> list[str]:
        ignored = {"Lines To Delete", "Lines To Add"}
        return [
            line
            for line in output
            if line.strip() and line.strip() not in ignored and set(line.strip()) != {"="}
        ]


class Pings(FactBase):
    """Which of the given pings (address, source, FIB) got a reply, all sent at once: ping(8)
    exits 0 on a reply. Each answer is one short line (one write: lines do not mix)."""

    @override
    @staticmethod
    def default() -> dict[tuple[str, str | None, int], bool]:
        return {}

    def command(self, pings: tuple[tuple[str, str | None, int], ...]) -> str:
        self.pings = tuple(tuple(p) for p in pings)
        return freebsd.pings(self.pings)

    @override
    def process(self, output: list[str]) -> dict[tuple[str, str | None, int], bool]:
        replied = {line.split()[1] for line in output if line.startswith("reply ")}
        return {ping: str(i) in replied for i, ping in enumerate(self.pings)}


@dataclass(frozen=True)
class Socket:
    proto: str  # tcp | udp
    address: str  # "*" for every address
    port: int
    command: str


class ListeningSockets(FactBase):
    """``sockstat -46lLq -P tcp,udp``: the TCP and UDP sockets that wait for connections or
    datagrams, loopback ones left out (-L); the host's and its shared-IP jails' (a VNET jail's
    sockets live in its own stack). Columns per usr.bin/sockstat/sockstat.c: USER COMMAND PID
    FD PROTO LOCAL FOREIGN; a wildcard address prints ``*``, IPv6 without brackets, so the
    port follows the last colon.
    """

    command = freebsd.LISTENING_SOCKETS

    @override
    @staticmethod
    def default() -> list[Socket]:
        return []

    @override
    def process(self, output: list[str]) -> list[Socket]:
        sockets = set()
        for line in output:
            words = line.split()
            if len(words) < 7:
                continue
            address, _, port = words[-2].rpartition(":")
            proto = words[-3].rstrip("46")
            if proto in ("tcp", "udp") and port.isdigit():
                sockets.add(Socket(proto, address.split("%")[0], int(port), words[1]))
        return sorted(sockets, key=lambda s: (s.proto, s.port, s.address, s.command))


@dataclass(frozen=True)
class Read:
    """One question a composite read answers: a fact class and the arguments it is asked with
    (as ``host.get_fact(fact, **kwargs)`` would ask it)."""

    fact: type[FactBase]
    kwargs: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(fact: type[FactBase], **kwargs: Any) -> Read:
        return Read(fact, tuple(sorted(kwargs.items())))


class Reads(tuple):
    """The questions of one composite read; pyinfra prints a fact's arguments when the read
    fails, and a few lines say more than every question in full."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} facts>"


def answer(answers: dict[Read, Any], fact: type[FactBase], **kwargs: Any) -> Any:
    """What a composite read answered to ``fact`` with ``kwargs`` (its default if not asked)."""
    return answers.get(Read.of(fact, **kwargs), fact.default())


# A section's first line; the prefix is what the previous section printed without a newline.
# The run's own token: nothing a host prints (a file shown with --diff, a description) can
# pass for a section's start.
_TOKEN = secrets.token_hex(4)
_SECTION = re.compile(rf"^(.*)@@ownas-{_TOKEN} (\d+)@@$")


class HostState(FactBase):
    """Many facts read with one remote command: pyinfra runs a command for every fact read and
    keeps no answer, so reading each separately costs a round trip each, every time. Each
    section runs one fact's own command and is parsed by that fact's own ``process`` (empty:
    its ``default``), so a section answers exactly what the fact alone would. A read that ends
    early (a connection lost, output that could not be decoded) or a section that cannot be
    parsed fails the read, and with it the host: no question is answered by a default.

    One line, sections joined by ``;``: pyinfra hands ``sh -c '...'`` to the login shell,
    and csh refuses a newline inside quotes (the pre-flight then says the shell is wrong)."""

    @override
    @staticmethod
    def default() -> dict[Read, Any]:
        return {}

    def command(self, reads: tuple[Read, ...]) -> str:
        self.reads = tuple(reads)
        self.facts = [read.fact() for read in self.reads]
        sections = [
            f"echo '@@ownas-{_TOKEN} {index}@@'; {_command_of(fact, read)}"
            for index, (fact, read) in enumerate(zip(self.facts, self.reads, strict=True))
        ]
        return "; ".join([*sections, f"echo '@@ownas-{_TOKEN} {len(sections)}@@'"])

    @override
    def process(self, output: list[str]) -> dict[Read, Any]:
        sections: dict[int, list[str]] = {}
        current: int | None = None
        for line in output:
            mark = _SECTION.match(line)
            if mark is None:
                if current is not None:
                    sections[current].append(line)
                continue
            if mark[1] and current is not None:
                sections[current].append(mark[1])
            current = int(mark[2])
            sections[current] = []
        if len(self.reads) not in sections:
            ran = max(sections, default=-1)
            raise FactProcessError(
                f"the read ended early, in {_name(self.reads[ran]) if ran >= 0 else 'its start'}"
            )
        answers = {}
        for index, (fact, read) in enumerate(zip(self.facts, self.reads, strict=True)):
            try:
                answers[read] = fact.process(sections[index]) if sections[index] else fact.default()
            except Exception as error:  # any parse error fails the read
                raise FactProcessError(f"{_name(read)}: {error}") from error
        return answers


def _name(read: Read) -> str:
    arguments = ", ".join(f"{key}={value}" for key, value in read.kwargs)
    return f"{read.fact.__name__}({arguments})"


def _command_of(fact: FactBase, read: Read) -> str:
    command = fact.command(**dict(read.kwargs)) if callable(fact.command) else fact.command
    return command.get_raw_value() if hasattr(command, "get_raw_value") else str(command)
