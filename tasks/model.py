"""The AS as typed dataclasses, built from a pyinfra inventory and checked field by field.

``build(inventory)`` reads the groups and data that pyinfra's own loader produced (see
``tasks.inventory``) and returns a ``Network``, or raises ``InventoryError`` carrying every problem
found, one line each, naming host and field. Checks that relate several fields (overlaps, pairs,
reachability) are in ``tasks.plan``; this module checks each value on its own.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netaddr import IPAddress, IPNetwork

from tasks import fields

# Inventory groups ownas reads. Hosts in them are reached over SSH by pyinfra.
ROUTERS = "routers"
DOWNSTREAMS = "downstreams"
# Managed downstreams taken out of the network: the next deploy removes what ownas made on them
# (README, "Retiring a downstream"). Only their connection settings are read.
RETIRED = "retired"

# Host data keys that belong to pyinfra (connection settings) rather than to ownas.
_PYINFRA_PREFIXES = ("ssh_", "_", "winrm_", "docker_", "chroot_", "local_", "terraform_")
# What a run may be asked on pyinfra's command line (--data NAME=yes), not inventory fields:
# restart bgpd so that it loads its rpki module (tasks.preflight), resetting every session.
RESTART_BGPD = "restart_bgpd"


class InventoryError(Exception):
    """The inventory describes a network ownas will not build; ``problems`` says why."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    """Collects problems so that every one is reported at once, and warnings: what ownas
    builds as asked but an operator should look at (they never stop a run)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, where: str, message: str) -> None:
        line = f"{where}: {message}"
        if line not in self.lines:
            self.lines.append(line)

    def warn(self, where: str, message: str) -> None:
        line = f"{where}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)

    def about(self, where: str) -> bool:
        """Whether a problem was already reported for ``where`` (so a follow-on is noise)."""
        return any(
            line.startswith(f"{where}: ") or line.startswith(f"{where}.") for line in self.lines
        )

    def raise_if_any(self) -> None:
        if self.lines:
            raise InventoryError(self.lines)


# Where the AS-wide data comes from, as messages name it.
ALL_DATA = "group_data/all.py"


def at(where: str, key: str) -> str:
    """How a message names field ``key`` of ``where``: ``vps01.delegate``, or, in the AS-wide
    file, ``group_data/all.py: prefix``."""
    return f"{where}: {key}" if where == ALL_DATA else f"{where}.{key}"


class Fields:
    """Reads one mapping of inventory data; a bad value becomes a problem and reads as None."""

    def __init__(
        self,
        data: Any,
        where: str,
        problems: Problems,
        known: Iterable[str],
        *,
        strict: bool = True,
        reported: Iterable[str] = (),
    ) -> None:
        self.where = where
        self.problems = problems
        self.known = tuple(known)
        if not isinstance(data, Mapping):
            problems.add(where, f"{data!r} is not a mapping of fields")
            data = {}
        self.data = data
        for key in sorted(str(k) for k in data):
            if (
                key in self.known
                or key in reported  # AS-wide data, judged once where it is written
                or (not strict and (key.startswith(_PYINFRA_PREFIXES) or key == RESTART_BGPD))
            ):
                continue
            guess = difflib.get_close_matches(key, self.known, n=1, cutoff=0.75)
            if strict:
                hint = f" (did you mean {guess[0]}?)" if guess else ""
                problems.add(at(where, key), f"unknown field{hint}")
            elif guess:
                problems.add(at(where, key), f"unknown field (did you mean {guess[0]}?)")

    def _parse(self, key: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(self.data[key])
        except ValueError as error:
            self.problems.add(at(self.where, key), str(error))
            return None

    def required(self, key: str, parse: Callable[[Any], Any]) -> Any:
        if key not in self.data or self.data[key] is None:
            self.problems.add(at(self.where, key), "is required")
            return None
        return self._parse(key, parse)

    def optional(self, key: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        return self._parse(key, parse)

    def nested(self, key: str, known: Iterable[str], *, required: bool = True) -> Fields | None:
        if key not in self.data or self.data[key] is None:
            if required:
                self.problems.add(at(self.where, key), "is required")
            return None
        return Fields(self.data[key], at(self.where, key), self.problems, known)


@dataclass(frozen=True)
class Wan:
    """The router's uplink: where the upstreams and every tunnel's outer packets are."""

    interface: str
    ipv4: IPNetwork | None
    ipv4_gateway: IPAddress | None
    ipv6: IPNetwork | None
    ipv6_gateway: IPAddress | None
    ifconfig_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamTunnel:
    """A tunnel an upstream terminates (iFog's GRE). Its inner addresses are the upstream's."""

    interface: str
    endpoint: IPAddress
    address: IPAddress
    mtu: int | None


GRACEFUL_SHUTDOWN = (65535, 0)  # RFC 8326's well-known community


@dataclass(frozen=True)
class Upstream:
    name: str
    description: str
    asn: int
    peer: IPAddress
    tunnel: UpstreamTunnel | None
    communities: tuple[tuple[int, int], ...]
    large_communities: tuple[tuple[int, int, int], ...]
    prepend: int
    ttl_security: bool
    max_prefixes: int | None  # FRR's maximum-prefix: more accepted routes tear the session down
    # Maintenance (README, "Draining an upstream"): "graceful" keeps the session and drains it
    # (RFC 8326), "admin" closes it with ``shutdown_message`` (RFC 8203); None: normal service.
    shutdown: str | None = None
    shutdown_message: str = ""

    @property
    def outbound_communities(self) -> tuple[tuple[int, int], ...]:
        """What the outbound route-map adds: the inventory's communities and, while drained,
        GRACEFUL_SHUTDOWN (RFC 8326). FRR's ``neighbor X graceful-shutdown`` marks only what we
        receive (bgpd/bgp_route.c, bgp_update); what we send needs the route-map."""
        drained = (GRACEFUL_SHUTDOWN,) if self.shutdown == "graceful" else ()
        return self.communities + drained

    @property
    def route_map(self) -> str:
        """The outbound route-map's name, as the reference spells it (RM-IFOG-OUT)."""
        return f"RM-{self.name.upper()}-OUT"


# Validators ownas can run on the router, and the port each serves RTR on (127.0.0.1 only, as
# ownas configures it): FreeBSD packages that serve RTR themselves (net/routinator: 3323, the
# port its documentation uses; net/fort: 8323, the port's own sample config). rpki-client writes
# files and serves no RTR. How FreeBSD installs and runs them: tasks.freebsd.VALIDATORS.
VALIDATOR_PORTS = {"routinator": 3323, "fort": 8323}


@dataclass(frozen=True)
class RtrCache:
    """An RTR cache (RFC 8210) FRR asks which origin AS may announce a prefix."""

    address: IPAddress
    port: int
    preference: int  # FRR's rpki cache preference: the lowest is asked first


@dataclass(frozen=True)
class Rpki:
    """Route origin validation on the router: where FRR gets validated ROA payloads."""

    caches: tuple[RtrCache, ...]
    validator: str | None  # one of VALIDATOR_PORTS, run on the router (a cache on 127.0.0.1)


@dataclass(frozen=True)
class Router:
    name: str
    wan: Wan
    loopback: IPNetwork
    router_id: IPAddress
    securelevel: int | None
    upstreams: tuple[Upstream, ...]
    extra_bgp_peers: tuple[IPAddress, ...]
    rpki: Rpki | None = None


# How the jails on a downstream's LAN reach the network (README, "Jails"):
# vnet: each jail has its own stack on an epair joined to the host's bridge (bastille create -B),
#   so its packets arrive `in on` the bridge and pf's `rtable` steers them into the tunnel's FIB;
# shared: the jails' addresses are aliases on the host (bastille0 a cloned lo1), their packets
#   are the host's own and never arrive on the bridge: pf's `route-to` on the way out does it.
JAIL_STYLES = ("vnet", "shared")


@dataclass(frozen=True)
class Lan:
    """A managed downstream's inside: the bridge its jails sit on (made by Bastille, not ownas)."""

    interface: str
    nat: IPNetwork | None
    provider: IPNetwork | None
    jails: str = "vnet"


@dataclass(frozen=True)
class Service:
    """A port a downstream opens inbound; everything else is closed (default deny)."""

    proto: str  # tcp | udp
    ports: tuple[int, ...]
    to: IPNetwork | None  # None: the host itself (every address it has)
    sources: tuple[IPNetwork, ...] = ()  # empty: from anywhere
    index: int = 0  # its place in the inventory's list, for messages

    @property
    def label(self) -> str:
        return f"{self.proto}/{','.join(str(p) for p in self.ports)}"


@dataclass(frozen=True)
class Downstream:
    """A site that receives a delegation from the prefix over a gif tunnel to the router."""

    name: str
    managed: bool
    platform: str
    tunnel: int
    endpoint: IPAddress
    delegate: IPNetwork
    description: str
    mtu: int | None
    # An unmanaged site whose side is not configured yet: the router's side is, and its
    # unanswered ping is not a warning on every run (README, "Adding a downstream").
    pending: bool = False
    # Only for managed (FreeBSD) downstreams:
    interface: str = "gif0"
    fib: int = 1
    wan_interface: str | None = None
    lan: Lan | None = None
    loopback: IPAddress | None = None
    securelevel: int | None = None
    # The provider's IPv6 default route in FIB 0: a static gateway, or learned from router
    # advertisements on the uplink (which IPv6 forwarding would otherwise turn off); None:
    # the host has none, or it is not ownas's business (the pre-flight checks which).
    wan_ipv6_gateway: IPAddress | None = None
    wan_ipv6_ra: bool = False
    services: tuple[Service, ...] = ()
    # (proto, port) of listening sockets the operator agrees to close (pre-flight).
    may_close: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Retired:
    """A managed downstream being taken out (README, "Retiring a downstream"). Of its fields
    only how its uplink gets its IPv6 default route is kept: that must outlive ownas."""

    name: str
    wan_interface: str | None = None
    wan_ipv6_gateway: IPAddress | None = None
    wan_ipv6_ra: bool = False


@dataclass(frozen=True)
class Network:
    asn: int
    prefix: IPNetwork
    link_subnet: IPNetwork
    trusted_sources: tuple[IPNetwork, ...]
    router: Router
    downstreams: tuple[Downstream, ...] = field(default=())
    # How long the deploy waits for the network to converge (BGP, pings), in seconds.
    check_timeout: int = 180
    # Managed downstreams being retired (the inventory's `retired` group).
    retired: tuple[Retired, ...] = ()
    # How long a host waits, once changed, for the run to confirm it from a new SSH connection
    # before it puts its previous files back by itself; 0: no timer (dangerous).
    confirm_timeout: int = 120

    def downstream(self, name: str) -> Downstream:
        return next(d for d in self.downstreams if d.name == name)


AS_FIELDS = (
    "asn",
    "prefix",
    "link_subnet",
    "trusted_sources",
    "unmanaged_downstreams",
    "check_timeout",
    "confirm_timeout",
)
ROUTER_FIELDS = (
    "wan",
    "loopback",
    "router_id",
    "securelevel",
    "upstreams",
    "extra_bgp_peers",
    "rpki",
)
RPKI_FIELDS = ("caches", "validator")
RTR_CACHE_FIELDS = ("address", "port", "preference", "source")
WAN_FIELDS = ("interface", "ipv4", "ipv4_gateway", "ipv6", "ipv6_gateway", "ifconfig_options")
UPSTREAM_FIELDS = (
    "name",
    "description",
    "asn",
    "peer",
    "tunnel",
    "communities",
    "large_communities",
    "prepend",
    "ttl_security",
    "max_prefixes",
    "shutdown",
    "shutdown_message",
)
SHUTDOWN_MODES = ("graceful", "admin")
# What the upstream is told when ownas closes the session and no shutdown_message is given.
SHUTDOWN_MESSAGE = "planned maintenance"
UPSTREAM_TUNNEL_FIELDS = ("interface", "endpoint", "address", "mtu")
DOWNSTREAM_FIELDS = ("endpoint", "tunnel", "delegate", "description", "mtu")
MANAGED_FIELDS = (
    *DOWNSTREAM_FIELDS,
    "interface",
    "fib",
    "wan_interface",
    "lan",
    "loopback",
    "securelevel",
    "wan_ipv6_gateway",
    "services",
    "may_close",
)
UNMANAGED_FIELDS = ("name", "platform", "pending", *DOWNSTREAM_FIELDS)
LAN_FIELDS = ("interface", "nat", "provider", "jails")
SERVICE_FIELDS = ("proto", "port", "to", "from")
# wan_ipv6_gateway's word for "from router advertisements".
RA = "ra"

# Tunnel MTU bounds: IPv6 needs 1280; a 1500-byte IPv4 underlay leaves 1480 for gif (20 bytes of
# outer header) and 1476 for gre (24).
TUNNEL_MTU = fields.integer(1280, 1480)
# FRR's maximum-prefix takes (1-4294967295); ten million is far above any full table.
MAX_PREFIXES = 10_000_000
# A gif/gre unit number: FreeBSD's IF_MAXUNIT is 0x7fff.
TUNNEL_UNIT = fields.integer(0, 0x7FFF)


def _group_hosts(inventory: Any, group: str) -> list[Any]:
    return list(inventory.get_group(group, default=[]))


def host_name(host: Any) -> str:
    """A host's name in ownas: pyinfra's, without a connector prefix (``@fake/vps01``)."""
    return host.name.rsplit("/", 1)[-1] if host.name.startswith("@") else host.name


def _read_as(data: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    f = Fields(data, ALL_DATA, problems, AS_FIELDS, strict=False)
    return {
        "asn": f.required("asn", fields.asn),
        "prefix": f.required("prefix", fields.ipv6_network),
        "link_subnet": f.optional("link_subnet", fields.ipv6_network),
        "trusted_sources": f.required(
            "trusted_sources", fields.list_of(fields.source, empty=False)
        ),
        "unmanaged": f.optional("unmanaged_downstreams", _list_of_mappings, ()),
        "check_timeout": f.optional("check_timeout", fields.integer(0, 3600), 180),
        "confirm_timeout": f.optional("confirm_timeout", fields.integer(0, 86400), 120),
    }


def _list_of_mappings(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{value!r} is not a list")
    return tuple(value)


def _read_wan(f: Fields) -> Wan | None:
    w = f.nested("wan", WAN_FIELDS)
    if w is None:
        return None
    wan = Wan(
        interface=w.required("interface", fields.interface),
        ipv4=w.required("ipv4", fields.ipv4_interface),
        ipv4_gateway=w.optional("ipv4_gateway", fields.ipv4_address),
        ipv6=w.optional("ipv6", fields.ipv6_interface),
        ipv6_gateway=w.optional("ipv6_gateway", fields.ipv6_gateway),
        ifconfig_options=w.optional("ifconfig_options", fields.ifconfig_options, ()),
    )
    if wan.ipv6_gateway is not None and "ipv6" not in w.data:
        f.problems.add(f"{w.where}.ipv6_gateway", "needs wan.ipv6 (the gateway must be on-link)")
    return wan


def _label(raw: Any, fallback: str) -> str:
    """How a list entry is named in messages: by its ``name`` when it has a usable one."""
    label = raw.get("name") if isinstance(raw, Mapping) else None
    return label if isinstance(label, str) else fallback


def _read_upstream(raw: Any, index: int, router: str, problems: Problems) -> Upstream:
    where = f"{router}.upstreams[{_label(raw, str(index))}]"
    f = Fields(raw, where, problems, UPSTREAM_FIELDS)
    name = f.required("name", fields.name)
    tunnel = None
    t = f.nested("tunnel", UPSTREAM_TUNNEL_FIELDS, required=False)
    if t is not None:
        tunnel = UpstreamTunnel(
            interface=t.required("interface", fields.interface),
            endpoint=t.required("endpoint", fields.ipv4_address),
            address=t.required("address", fields.ipv6_address),
            mtu=t.optional("mtu", TUNNEL_MTU),
        )
        if tunnel.interface and not tunnel.interface.startswith(("gif", "gre")):
            problems.add(f"{t.where}.interface", f"{tunnel.interface!r} is not a gif or gre tunnel")
    shutdown = f.optional("shutdown", fields.one_of(SHUTDOWN_MODES), None)
    message = f.optional("shutdown_message", fields.shutdown_message, "")
    if message and shutdown != "admin":
        problems.add(
            f"{where}.shutdown_message",
            "is sent only when the session is closed: it needs shutdown: 'admin'",
        )
    return Upstream(
        name=name,
        description=f.optional("description", fields.description, name),
        asn=f.required("asn", fields.asn),
        peer=f.required("peer", fields.ipv6_address),
        tunnel=tunnel,
        communities=f.optional("communities", fields.list_of(fields.community), ()),
        large_communities=f.optional(
            "large_communities", fields.list_of(fields.large_community), ()
        ),
        prepend=f.optional("prepend", fields.integer(0, 10), 0),
        ttl_security=f.optional("ttl_security", fields.boolean, False),
        max_prefixes=f.optional("max_prefixes", fields.integer(1, MAX_PREFIXES), None),
        shutdown=shutdown,
        shutdown_message=message or (SHUTDOWN_MESSAGE if shutdown == "admin" else ""),
    )


def _wrong_kind(data: Mapping[str, Any], where: str, kind: str, problems: Problems) -> None:
    """A field of the other kind of host, which this one would silently ignore."""
    mine, other, other_kind = (
        (ROUTER_FIELDS, MANAGED_FIELDS, "downstream")
        if kind == "the router"
        else (MANAGED_FIELDS, ROUTER_FIELDS, "router")
    )
    theirs = [field for field in other if field not in mine]
    for key in sorted(k for k in data if k in theirs):
        problems.add(
            f"{where}.{key}", f"not a field of {kind} ({other_kind} fields: {', '.join(theirs)})"
        )


def _read_router(host: Any, problems: Problems, shared: Iterable[str]) -> Router:
    data = host.data.dict()
    name = host_name(host)
    f = Fields(data, name, problems, ROUTER_FIELDS + AS_FIELDS, strict=False, reported=shared)
    _wrong_kind(data, name, "the router", problems)
    wan = _read_wan(f)
    raw_upstreams = f.required("upstreams", _list_of_mappings) or ()
    if "upstreams" in data and not raw_upstreams and isinstance(data["upstreams"], list):
        problems.add(f"{name}.upstreams", "is empty: the router needs at least one upstream")
    upstreams = tuple(_read_upstream(raw, i, name, problems) for i, raw in enumerate(raw_upstreams))
    default_id = wan.ipv4.ip if wan and wan.ipv4 else None
    return Router(
        name=name,
        wan=wan,
        loopback=f.required("loopback", fields.ipv6_interface),
        router_id=f.optional("router_id", fields.router_id, default_id),
        securelevel=f.optional("securelevel", _securelevel),
        upstreams=tuple(sorted(upstreams, key=lambda u: str(u.name))),
        extra_bgp_peers=f.optional("extra_bgp_peers", fields.list_of(fields.any_address), ()),
        rpki=_read_rpki(f),
    )


def _read_rpki(f: Fields) -> Rpki | None:
    r = f.nested("rpki", RPKI_FIELDS, required=False)
    if r is None:
        return None
    raw_caches = r.optional("caches", _list_of_mappings, ())
    caches = []
    for index, raw in enumerate(raw_caches):
        c = Fields(raw, f"{r.where}.caches[{index}]", f.problems, RTR_CACHE_FIELDS)
        if "source" in c.data:
            # FRR 10 parses `source A.B.C.D` but never binds it: bgpd hands rtrlib its own
            # socket (bgpd/bgp_rpki.c rpki_create_socket, no bind()), and rtrlib binds the
            # source only to a socket it made itself (rtrlib/transport/tcp/tcp_transport.c).
            f.problems.add(
                f"{c.where}.source",
                "FRR 10 accepts a cache's source address but never uses it (bgpd makes the "
                "socket without bind()); the router's route to the cache picks the source: "
                "leave it out",
            )
        caches.append(
            RtrCache(
                address=c.required("address", fields.any_address),
                port=c.required("port", fields.integer(1, 65535)),
                preference=c.required("preference", fields.integer(1, 255)),
            )
        )
    return Rpki(
        caches=tuple(caches),
        validator=r.optional("validator", fields.one_of(tuple(VALIDATOR_PORTS))),
    )


def _securelevel(value: Any) -> int:
    level = fields.integer(-1, 3)(value)
    if level == 3:
        raise ValueError(
            "3 forbids changing pf rules (securelevel(7)); ownas manages pf, so use 2 at most"
        )
    return level


def _read_downstream(
    where: str,
    data: Mapping[str, Any],
    problems: Problems,
    *,
    managed: bool,
    name: str,
    shared: Iterable[str] = (),
) -> Downstream:
    f = Fields(
        data,
        where,
        problems,
        (MANAGED_FIELDS + ROUTER_FIELDS + AS_FIELDS) if managed else UNMANAGED_FIELDS,
        strict=not managed,
        reported=shared,
    )
    if managed:
        _wrong_kind(data, where, "a downstream", problems)
    if managed and "endpoint" not in data and "ssh_hostname" in data:
        # The public IPv4 is written once: as the SSH address, which is also the tunnel endpoint.
        try:
            endpoint = fields.ipv4_address(data["ssh_hostname"])
        except ValueError as error:
            problems.add(
                f"{where}.endpoint",
                f"not set, and ssh_hostname is not usable as the tunnel endpoint: {error}",
            )
            endpoint = None
    else:
        endpoint = f.required("endpoint", fields.ipv4_address)
    delegate = f.required("delegate", fields.ipv6_network)
    common = {
        "name": name,
        "managed": managed,
        "platform": "freebsd" if managed else f.optional("platform", fields.name, "other"),
        "tunnel": f.required("tunnel", TUNNEL_UNIT),
        "endpoint": endpoint,
        "delegate": delegate,
        "description": f.optional("description", fields.description, f"Tunnel-to-{name}"),
        "mtu": f.optional("mtu", TUNNEL_MTU),
    }
    if not managed:
        return Downstream(**common, pending=f.optional("pending", fields.boolean, False))
    lan = None
    lan_fields = f.nested("lan", LAN_FIELDS, required=False)
    if lan_fields is not None:
        lan = Lan(
            interface=lan_fields.required("interface", fields.interface),
            nat=lan_fields.optional("nat", fields.ipv4_network),
            provider=lan_fields.optional("provider", fields.ipv6_network),
            jails=lan_fields.optional("jails", fields.one_of(JAIL_STYLES), "vnet"),
        )
    default_loopback = delegate.network + 1 if delegate is not None else None
    ipv6 = _read_ipv6_uplink(f)
    raw_services = f.optional("services", _list_of_mappings, ())
    return Downstream(
        **common,
        interface=f.optional("interface", fields.interface, "gif0"),
        fib=f.optional("fib", fields.integer(1, 15), 1),
        wan_interface=f.required("wan_interface", fields.interface),
        lan=lan,
        loopback=f.optional("loopback", fields.ipv6_address, default_loopback),
        securelevel=f.optional("securelevel", _securelevel),
        **ipv6,
        services=tuple(
            service
            for i, raw in enumerate(raw_services)
            if (service := _read_service(raw, i, where, problems)) is not None
        ),
        may_close=f.optional("may_close", fields.list_of(fields.port_of_proto), ()),
    )


def _read_ipv6_uplink(f: Fields) -> dict[str, Any]:
    """``wan_ipv6_gateway`` as the model keeps it: a gateway, or router advertisements."""
    gateway = f.optional("wan_ipv6_gateway", _wan_ipv6_gateway)
    return {"wan_ipv6_gateway": gateway if gateway != RA else None, "wan_ipv6_ra": gateway == RA}


def _wan_ipv6_gateway(value: Any) -> IPAddress | str:
    if value == RA:
        return RA
    try:
        return fields.ipv6_gateway(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither an IPv6 gateway address nor {RA!r} (router advertisements)"
        ) from None


def _read_service(raw: Any, index: int, host: str, problems: Problems) -> Service | None:
    f = Fields(raw, f"{host}.services[{index}]", problems, SERVICE_FIELDS)
    proto = f.required("proto", fields.one_of(("tcp", "udp")))
    ports = f.required("port", fields.ports)
    to = f.optional("to", _service_destination)
    sources = f.optional("from", fields.list_of(fields.source, empty=False), ())
    if proto is None or ports is None:
        return None
    return Service(proto, ports, None if to == "host" else to, sources, index)


def _service_destination(value: Any) -> IPNetwork | str:
    """``host`` (every address of the host), or an address or network of its jails."""
    if value == "host":
        return "host"
    try:
        return fields.source(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither 'host' nor an address or network") from None


def build(inventory: Any, problems: Problems) -> Network | None:
    """Build the ``Network`` from a pyinfra ``Inventory``, recording problems as it goes.

    A value that failed its check reads as None, so that ``tasks.plan`` can still run the checks
    that relate fields and every problem is reported in one go. The result is only trustworthy
    when ``problems`` stays empty; ``tasks.plan.load`` makes sure of that.
    """
    as_data = _read_as(inventory.get_data(), problems)
    # Every host sees group_data/all.py's variables: a problem there is reported once, there.
    shared = tuple(inventory.get_data())

    routers = _group_hosts(inventory, ROUTERS)
    managed = _group_hosts(inventory, DOWNSTREAMS)
    if len(routers) != 1:
        found = ", ".join(host_name(h) for h in routers) or "none"
        problems.add(f"inventory.{ROUTERS}", f"needs exactly one BGP router (found {found})")
    for host in sorted(set(routers) & set(managed), key=host_name):
        problems.add(host_name(host), f"is in both {ROUTERS} and {DOWNSTREAMS}")
    if not routers:
        return None
    router = _read_router(routers[0], problems, shared)
    _name_ok(router.name, problems)

    downstreams: list[Downstream] = []
    for host in managed:
        name = host_name(host)
        if _name_ok(name, problems):
            downstreams.append(
                _read_downstream(
                    name, host.data.dict(), problems, managed=True, name=name, shared=shared
                )
            )
    for index, raw in enumerate(as_data["unmanaged"]):
        where = _label(raw, at(ALL_DATA, f"unmanaged_downstreams[{index}]"))
        if not isinstance(raw, Mapping):
            problems.add(where, f"{raw!r} is not a mapping of fields")
            continue
        name = Fields(raw, where, problems, UNMANAGED_FIELDS).required("name", fields.name)
        if name is not None:
            downstreams.append(_read_downstream(where, raw, problems, managed=False, name=name))

    retired = [_read_retired(h, problems) for h in _group_hosts(inventory, RETIRED)]
    names = [router.name] + [d.name for d in downstreams]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.add(duplicate, "is defined twice (host names must be unique)")
    for name in sorted({r.name for r in retired} & set(names)):
        problems.add(
            name,
            f"is in {RETIRED} and still in the network: take it out of {DOWNSTREAMS} "
            "(or unmanaged_downstreams) to retire it",
        )

    prefix = as_data["prefix"]
    link_subnet = as_data["link_subnet"]
    if link_subnet is None and prefix is not None and "link_subnet" not in inventory.get_data():
        link_subnet = _last_64(prefix)
    return Network(
        asn=as_data["asn"],
        prefix=prefix,
        link_subnet=link_subnet,
        trusted_sources=tuple(sorted(set(as_data["trusted_sources"] or ()), key=_network_key)),
        router=router,
        downstreams=tuple(sorted(downstreams, key=lambda d: d.name)),
        check_timeout=as_data["check_timeout"],
        confirm_timeout=as_data["confirm_timeout"],
        retired=tuple(sorted(retired, key=lambda r: r.name)),
    )


def _read_retired(host: Any, problems: Problems) -> Retired:
    """A retired host's entry: its fields as they were under ``downstreams`` may stay; only its
    uplink's IPv6 default route is read (everything else of it is gone from the network)."""
    name = host_name(host)
    _name_ok(name, problems)
    uplink = ("wan_interface", "wan_ipv6_gateway")
    f = Fields(host.data.dict(), name, problems, uplink, strict=False)
    ipv6 = _read_ipv6_uplink(f)
    interface = f.optional("wan_interface", fields.interface)
    if (ipv6["wan_ipv6_gateway"] or ipv6["wan_ipv6_ra"]) and interface is None:
        problems.add(f"{name}.wan_ipv6_gateway", "needs wan_interface (the uplink it is on)")
    return Retired(name=name, wan_interface=interface, **ipv6)


def _name_ok(value: str, problems: Problems) -> bool:
    try:
        fields.name(value)
    except ValueError as error:
        problems.add(value, f"host name {error}")
        return False
    return True


def _last_64(prefix: IPNetwork) -> IPNetwork:
    """The default link subnet: the last /64 of the prefix (2a06:9801:1c:ffff::/64)."""
    return IPNetwork(f"{IPAddress(prefix.last - (2**64 - 1), 6)}/64")


def _network_key(network: IPNetwork) -> tuple[int, int, int]:
    return network.version, network.value, network.prefixlen
