"""The address plan: tunnels, routes and FIBs per host, and the checks that relate fields.

Numbering is explicit and therefore stable: a downstream's ``tunnel`` number N gives the router's
interface ``gifN`` and the inner pair ``link_subnet + 2N+1`` (router) / ``+ 2N+2`` (downstream),
so adding or removing a downstream never renumbers another one's tunnel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from netaddr import IPAddress, IPNetwork

from tasks import fields
from tasks.model import (
    ALL_DATA,
    VALIDATOR_PORTS,
    Downstream,
    Network,
    Problems,
    Retired,
    Router,
    Rpki,
    RtrCache,
    at,
    build,
)

# FreeBSD's default MTUs: GIF_MTU (sys/net/if_gif.h) and GREMTU (sys/net/if_gre.h).
DEFAULT_MTU = {"gif": 1280, "gre": 1476}
# The largest MTU a tunnel can carry over a 1500-byte IPv4 underlay.
MAX_MTU = {"gif": 1480, "gre": 1476}
# TCP MSS for a given MTU. pf's max-mss is family-blind, so clamp to the IPv6 value
# (40-byte IPv6 header + 20-byte TCP header), which also fits IPv4 (20 + 20).
MSS_OVERHEAD = 60
# The aggregate's reject route, named as in the reference (ipv6_route_myblock).
AGGREGATE_ROUTE = "myblock"
# The router's own validator, as FRR reaches it: on loopback (nothing new may reach the
# router), asked before any other cache.
VALIDATOR_ADDRESS = IPAddress("127.0.0.1")
VALIDATOR_PREFERENCE = 1
# The inbound route-map of every upstream when RPKI is on: rejects RPKI invalid routes.
RPKI_ROUTE_MAP = "RM-UPSTREAM-IN"
# Minutes FRR waits before it reconnects an upstream that sent more than its max_prefixes
# (maximum-prefix ... restart): the session comes back by itself once the peer behaves.
MAX_PREFIX_RESTART = 15
# Kernel modules the rendered configuration needs besides the tunnels' if_gif/if_gre.
BASE_MODULES = ("pf", "pflog")
# What VNET jails need on the host (Bastille uses them but never loads them: ifconfig does, on
# demand, which securelevel >= 1 forbids): the bridge and the epair pairs.
VNET_MODULES = ("if_bridge", "if_epair")
# GTSM needs a minimum hop limit on the socket. FRR sets one for IPv6 only #ifdef
# IPV6_MINHOPCOUNT (lib/sockunion.c, sockopt_minttl; configure.ac defines it for Linux alone) and
# FreeBSD's netinet6/in6.h has no such option: bgp_set_socket_ttl fails, bgp_connect then gives
# up before connect() (the peer cycles Connect/Active) and bgp_accept goes on without the check
# (bgpd/bgp_network.c, FRR 10.5).
GTSM_REFUSED = (
    "FreeBSD cannot enforce GTSM on an IPv6 session (it has no IPV6_MINHOPCOUNT): FRR's "
    "ttl-security would never open the session itself and would accept the peer's without a "
    "hop-limit check; remove the field (pf admits TCP 179 only from this peer on its interface)"
)


def rc_name(text: str) -> str:
    """Map a name to an rc.conf variable suffix the way rc does (. - / + become _)."""
    return re.sub(r"[.\-/+]", "_", text)


@dataclass(frozen=True)
class Tunnel:
    """One end of a point-to-point tunnel, seen from the host that configures it."""

    interface: str
    source: IPAddress
    destination: IPAddress
    address: IPAddress
    peer: IPAddress
    description: str
    mtu: int
    fib: int = 0
    role: str = "downstream"  # what is at the far end: upstream, downstream or router
    far_end: str = ""  # the name of the host or upstream at the far end

    @property
    def kind(self) -> str:
        return self.interface.rstrip("0123456789")

    @property
    def mss(self) -> int:
        return self.mtu - MSS_OVERHEAD

    @property
    def default_mtu(self) -> bool:
        return self.mtu == DEFAULT_MTU[self.kind]


@dataclass(frozen=True)
class Route:
    """A static route: an rc.conf ``ipv6_route_<name>`` at boot, one ``route`` command live."""

    name: str
    destination: str  # "default" or a network
    gateway: IPAddress | None = None
    interface: str | None = None
    reject: bool = False
    fib: int = 0
    # The interface whose `service netif start` re-adds this route (rc.conf "NAME:IF").
    bound_to: str | None = None

    @property
    def label(self) -> str:
        """The entry in ipv6_static_routes."""
        return f"{self.name}:{self.bound_to}" if self.bound_to else self.name


@dataclass(frozen=True)
class HostPlan:
    """Everything one managed host needs, derived from the network."""

    name: str
    role: str  # "router" or "downstream"
    tunnels: tuple[Tunnel, ...]
    routes: tuple[Route, ...]
    loopback: IPNetwork | None
    fibs: int  # value for net.fibs: FIB numbers 0 .. fibs-1 exist
    modules: tuple[str, ...]  # kernel modules the configuration needs
    securelevel: int | None = None
    forwarding: tuple[str, ...] = ("ipv6",)  # families the host forwards
    # What rc.d/routing puts in every FIB at boot, for the FIBs above 0 (the deploy adds them
    # when it grows net.fibs live, which adds none: route_tables.c copies nothing by default).
    fib_routes: tuple[Route, ...] = ()
    # The uplink whose IPv6 default route (FIB 0) the checks expect, and its gateway (None:
    # learned from router advertisements, which keep_ra keeps working under forwarding).
    ipv6_uplink: str | None = None
    ipv6_gateway: IPAddress | None = None
    keep_ra: bool = False
    validator: str | None = None  # the RPKI validator the host runs (rpki.validator)


@dataclass(frozen=True)
class Plan:
    network: Network
    hosts: dict[str, HostPlan]
    # What the inventory asks that ownas builds but an operator should look at (a tunnel
    # endpoint in a documentation range): printed by ``ownas check`` and before a deploy.
    warnings: tuple[str, ...] = ()

    @property
    def router(self) -> Router:
        return self.network.router

    def host(self, name: str) -> HostPlan:
        return self.hosts[name]

    @property
    def upstream_peers(self) -> tuple[str, ...]:
        """Each upstream's BGP neighbor address, as the FRR facts are asked about it."""
        return tuple(str(u.peer) for u in self.router.upstreams)

    def tunnel_to(self, downstream: Downstream) -> Tunnel:
        """The router's end of the tunnel to ``downstream``."""
        return next(t for t in self.hosts[self.router.name].tunnels if t.far_end == downstream.name)


def inner_pair(link_subnet: IPNetwork, unit: int) -> tuple[IPAddress, IPAddress]:
    """(router, downstream) inner addresses of tunnel ``unit``: ::1/::2 for 0, ::3/::4 for 1."""
    base = link_subnet.network
    return IPAddress(base.value + 2 * unit + 1, 6), IPAddress(base.value + 2 * unit + 2, 6)


def _unit_key(interface: str) -> tuple[str, int]:
    kind = interface.rstrip("0123456789")
    return kind, int(interface[len(kind) :] or 0)


def _router_plan(network: Network) -> HostPlan:
    router = network.router
    source = router.wan.ipv4.ip
    tunnels = []
    for downstream in network.downstreams:
        address, peer = inner_pair(network.link_subnet, downstream.tunnel)
        tunnels.append(
            Tunnel(
                interface=f"gif{downstream.tunnel}",
                source=source,
                destination=downstream.endpoint,
                address=address,
                peer=peer,
                description=downstream.description,
                mtu=downstream.mtu or DEFAULT_MTU["gif"],
                far_end=downstream.name,
            )
        )
    for upstream in router.upstreams:
        if upstream.tunnel is None:
            continue
        kind = upstream.tunnel.interface.rstrip("0123456789")
        tunnels.append(
            Tunnel(
                interface=upstream.tunnel.interface,
                source=source,
                destination=upstream.tunnel.endpoint,
                address=upstream.tunnel.address,
                peer=upstream.peer,
                description=upstream.description,
                mtu=upstream.tunnel.mtu or DEFAULT_MTU[kind],
                role="upstream",
                far_end=upstream.name,
            )
        )
    routes = [Route(AGGREGATE_ROUTE, str(network.prefix), reject=True)]
    for downstream in sorted(network.downstreams, key=lambda d: d.tunnel):
        routes.append(
            Route(
                rc_name(downstream.name),
                str(downstream.delegate),
                gateway=inner_pair(network.link_subnet, downstream.tunnel)[1],
                bound_to=f"gif{downstream.tunnel}",
            )
        )
    tunnels.sort(key=lambda t: _unit_key(t.interface))
    return HostPlan(
        name=router.name,
        role="router",
        tunnels=tuple(tunnels),
        routes=tuple(routes),
        # The address alone, as a /128: a /64 on lo0 would put a prefix route to lo0 for the
        # whole loopback subnet, shadowing the aggregate's reject route there. The subnet the
        # inventory writes it in stays reserved (no delegation or tunnel may use it).
        loopback=IPNetwork(f"{router.loopback.ip}/128"),
        fibs=1,
        modules=_modules(tunnels),
        securelevel=router.securelevel,
        validator=router.rpki.validator if router.rpki else None,
    )


def _downstream_plan(network: Network, downstream: Downstream) -> HostPlan:
    router_address, address = inner_pair(network.link_subnet, downstream.tunnel)
    tunnel = Tunnel(
        interface=downstream.interface,
        source=downstream.endpoint,
        destination=network.router.wan.ipv4.ip,
        address=address,
        peer=router_address,
        description=f"Tunnel-to-{network.router.name}",
        mtu=downstream.mtu or DEFAULT_MTU["gif"],
        fib=downstream.fib,
        role="router",
        far_end=network.router.name,
    )
    fib = downstream.fib
    vnet = downstream.lan is not None and downstream.lan.jails == "vnet"
    routes = [
        Route(
            f"fib{fib}default",
            "default",
            interface=tunnel.interface,
            fib=fib,
            bound_to=tunnel.interface,
        )
    ]
    if downstream.lan is not None:
        # FIB 1 only holds what is added to it: reach the local jails from it too.
        if downstream.lan.provider is not None:
            routes.append(
                Route(
                    f"fib{fib}provider",
                    str(downstream.lan.provider),
                    interface=downstream.lan.interface,
                    fib=fib,
                    bound_to=downstream.lan.interface,
                )
            )
        routes.append(
            Route(
                f"fib{fib}delegate",
                str(downstream.delegate),
                interface=downstream.lan.interface,
                fib=fib,
                bound_to=downstream.lan.interface,
            )
        )
    return HostPlan(
        name=downstream.name,
        role="downstream",
        tunnels=(tunnel,),
        routes=tuple(routes),
        loopback=IPNetwork(f"{downstream.loopback}/128"),
        fibs=fib + 1,
        modules=_modules([tunnel], VNET_MODULES if vnet else ()),
        securelevel=downstream.securelevel,
        # The jails' private IPv4 is forwarded to be NATed.
        forwarding=("ipv6", "ipv4") if downstream.lan and downstream.lan.nat else ("ipv6",),
        fib_routes=fib_base_routes(fib + 1),
        **_ipv6_uplink(downstream),
    )


def _ipv6_uplink(host: Downstream | Retired) -> dict[str, Any]:
    """Where a downstream's IPv6 default route (FIB 0) comes from, as the checks expect it: its
    gateway on the uplink, or the uplink's router advertisements (kept under forwarding)."""
    managed = host.wan_ipv6_gateway is not None or host.wan_ipv6_ra
    return {
        "ipv6_uplink": host.wan_interface if managed else None,
        "ipv6_gateway": host.wan_ipv6_gateway,
        "keep_ra": host.wan_ipv6_ra,
    }


# rc.d/routing's static_inet6 adds these to each FIB (0 to net.fibs-1) at boot: the loopback
# address, and reject routes for link-local and link-scope multicast destinations and the
# IPv4-mapped and -compatible ranges, so that a FIB whose default route is a tunnel does not
# send them into it.
FIB_BASE_ROUTES = (
    ("loopback", "::1/128", "lo0"),
    ("lla", "fe80::/10", None),
    ("llma", "ff02::/16", None),
    ("v4mapped", "::ffff:0:0/96", None),
    ("v4compat", "::/96", None),
)


def fib_base_routes(fibs: int) -> tuple[Route, ...]:
    return tuple(
        Route(f"fib{fib}{name}", destination, interface=via, reject=via is None, fib=fib)
        for fib in range(1, fibs)
        for name, destination, via in FIB_BASE_ROUTES
    )


def _modules(tunnels: list[Tunnel], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(sorted({f"if_{t.kind}" for t in tunnels} | set(BASE_MODULES) | set(extra)))


def _retired_plan(retired: Retired) -> HostPlan:
    """A retired downstream: nothing of the network is left on it. The pre-flight finds the
    tunnel, loopback alias and routes an earlier deploy made in ownas's own fragments, and the
    deploy removes them; pf keeps only SSH from the trusted sources (the fallback's rules).
    Its uplink keeps its IPv6 default route: the gateway (rc.d/routing) or the router
    advertisements (ipv6_cpe_wanif, which also makes netif accept them: network.subr)."""
    return HostPlan(
        name=retired.name,
        role="retired",
        tunnels=(),
        routes=(),
        loopback=None,
        fibs=1,
        modules=_modules([]),
        forwarding=(),
        **_ipv6_uplink(retired),
    )


def plan(network: Network) -> Plan:
    hosts = {network.router.name: _router_plan(network)}
    for downstream in network.downstreams:
        if downstream.managed:
            hosts[downstream.name] = _downstream_plan(network, downstream)
    for retired in network.retired:
        hosts[retired.name] = _retired_plan(retired)
    return Plan(network=network, hosts=hosts)


def load(inventory: Any) -> Plan:
    """Model and plan for a pyinfra inventory, or ``InventoryError`` naming every problem."""
    problems = Problems()
    network = build(inventory, problems)
    if network is not None:
        check(network, problems)
    problems.raise_if_any()
    assert network is not None
    return replace(plan(network), warnings=tuple(problems.warnings))


# --- checks that relate fields -------------------------------------------------------------
#
# They run on a network whose values may be None where a field failed its own check, and skip
# what they cannot judge, so that one run reports every problem.


def check(network: Network, problems: Problems) -> None:
    _check_prefix(network, problems)
    _check_router(network, problems)
    _check_upstreams(network, problems)
    _check_rpki(network, problems)
    _check_downstreams(network, problems)
    _check_interfaces(network, problems)
    _check_endpoints(network, problems)


def _check_prefix(network: Network, problems: Problems) -> None:
    prefix, link = network.prefix, network.link_subnet
    if prefix is None:
        return
    bogons = fields.bogons()
    if prefix not in bogons.global_unicast:
        problems.add(
            at(ALL_DATA, "prefix"),
            f"{prefix} is not global unicast (outside {bogons.global_unicast})",
        )
    for bogon in bogons.ipv6:
        if prefix in bogon or bogon in prefix:
            problems.add(at(ALL_DATA, "prefix"), f"{prefix} is a bogon (overlaps {bogon})")
    if prefix.prefixlen > 48:
        problems.add(
            at(ALL_DATA, "prefix"),
            f"{prefix} is longer than /48: upstreams filter it, it would not be reachable",
        )
    if link is None:
        return
    if link not in prefix:
        problems.add(at(ALL_DATA, "link_subnet"), f"{link} is not inside {prefix}")
    if link.prefixlen > 126:
        problems.add(at(ALL_DATA, "link_subnet"), f"{link} is too small to hold a tunnel pair")


def _check_router(network: Network, problems: Problems) -> None:
    router, prefix = network.router, network.prefix
    wan = router.wan
    name = router.name
    if wan is not None:
        if wan.ipv4 is not None and wan.ipv4_gateway is not None:
            if wan.ipv4_gateway not in wan.ipv4.cidr:
                problems.add(
                    f"{name}.wan.ipv4_gateway",
                    f"{wan.ipv4_gateway} is not on the WAN subnet {wan.ipv4.cidr}",
                )
            elif wan.ipv4_gateway == wan.ipv4.ip:
                problems.add(f"{name}.wan.ipv4_gateway", "is the router's own address")
        if wan.ipv6 is not None and wan.ipv6_gateway is not None:
            link_local = wan.ipv6_gateway in IPNetwork("fe80::/10")
            if not link_local and wan.ipv6_gateway not in wan.ipv6.cidr:
                problems.add(
                    f"{name}.wan.ipv6_gateway",
                    f"{wan.ipv6_gateway} is not on the WAN subnet {wan.ipv6.cidr}",
                )
            elif wan.ipv6_gateway == wan.ipv6.ip:
                problems.add(f"{name}.wan.ipv6_gateway", "is the router's own address")
        for peer in router.extra_bgp_peers or ():
            family = "ipv4" if peer.version == 4 else "ipv6"
            subnet = getattr(wan, family)
            if problems.about(f"{name}.wan.{family}"):
                continue
            if subnet is None or peer not in subnet.cidr or peer == subnet.ip:
                where = f"{name}.extra_bgp_peers"
                problems.add(where, f"{peer} is not a neighbor on the WAN subnet")
    if router.loopback is not None and prefix is not None:
        if router.loopback.cidr not in prefix:
            problems.add(f"{name}.loopback", f"{router.loopback.cidr} is not inside {prefix}")
        elif network.link_subnet is not None and _overlap(
            router.loopback.cidr, network.link_subnet
        ):
            problems.add(
                f"{name}.loopback",
                f"{router.loopback.cidr} overlaps the link subnet {network.link_subnet}",
            )


def _check_upstreams(network: Network, problems: Problems) -> None:
    router = network.router
    wan = router.wan
    names: dict[Any, str] = {}
    peers: dict[Any, str] = {}
    addresses: dict[Any, str] = {}  # our inner addresses on upstream tunnels
    for upstream in router.upstreams:
        where = f"{router.name}.upstreams[{upstream.name}]"
        if upstream.name in names:
            problems.add(where, "is defined twice")
        names[upstream.name] = upstream.name
        if upstream.ttl_security:
            problems.add(f"{where}.ttl_security", GTSM_REFUSED)
        if upstream.asn is not None and upstream.asn == network.asn:
            problems.add(
                f"{where}.asn", f"{upstream.asn} is our own AS; upstreams are eBGP neighbors"
            )
        if upstream.peer is None:
            continue
        if upstream.peer in peers:
            problems.add(f"{where}.peer", f"{upstream.peer} is also {peers[upstream.peer]}'s peer")
        peers[upstream.peer] = upstream.name
        tunnel = upstream.tunnel
        if tunnel is not None:
            if tunnel.address is not None and tunnel.address == upstream.peer:
                problems.add(f"{where}.tunnel.address", "is the peer's address, not ours")
            if tunnel.address is not None and tunnel.address in addresses:
                problems.add(
                    f"{where}.tunnel.address",
                    f"{tunnel.address} is also our address on {addresses[tunnel.address]}'s tunnel",
                )
            if tunnel.address is not None:
                addresses[tunnel.address] = upstream.name
            for field, address in (("peer", upstream.peer), ("tunnel.address", tunnel.address)):
                planned = _planned_space(network, address)
                if planned:
                    problems.add(f"{where}.{field}", f"{address} is inside {planned}")
            kind = (tunnel.interface or "").rstrip("0123456789")
            if tunnel.mtu and kind in MAX_MTU and tunnel.mtu > MAX_MTU[kind]:
                problems.add(
                    f"{where}.tunnel.mtu", f"{tunnel.mtu} is above {MAX_MTU[kind]} for {kind}"
                )
            if wan is not None and wan.ipv4 is not None and tunnel.endpoint == wan.ipv4.ip:
                problems.add(f"{where}.tunnel.endpoint", "is the router's own WAN address")
            continue
        on_wan = wan is not None and wan.ipv6 is not None and upstream.peer in wan.ipv6.cidr
        if problems.about(f"{router.name}.wan"):
            continue
        if not on_wan:
            subnet = f"wan.ipv6 {wan.ipv6.cidr}" if wan and wan.ipv6 else "no wan.ipv6"
            problems.add(
                f"{where}.peer",
                f"{upstream.peer} is not on a configured link ({subnet}, and no tunnel)",
            )
        elif upstream.peer == wan.ipv6.ip:
            problems.add(f"{where}.peer", f"{upstream.peer} is the router's own WAN address")


def rtr_caches(rpki: Rpki) -> tuple[RtrCache, ...]:
    """The caches FRR asks, in order of preference: the router's own validator first."""
    local = ()
    if rpki.validator is not None:
        port = VALIDATOR_PORTS[rpki.validator]
        local = (RtrCache(VALIDATOR_ADDRESS, port, VALIDATOR_PREFERENCE),)
    return tuple(sorted(local + rpki.caches, key=lambda cache: cache.preference))


def _check_rpki(network: Network, problems: Problems) -> None:
    router = network.router
    rpki = router.rpki
    if rpki is None:
        return
    where = f"{router.name}.rpki"
    if not rpki.caches and rpki.validator is None and not problems.about(where):
        problems.add(where, "needs at least one cache or a validator")
    seen: dict[int, str] = {}
    if rpki.validator is not None:
        seen[VALIDATOR_PREFERENCE] = f"the router's own {rpki.validator} (rpki.validator)"
    endpoints: dict[tuple[Any, int], int] = {}
    for index, cache in enumerate(rpki.caches):
        here = f"{where}.caches[{index}]"
        if cache.preference is not None:
            if cache.preference in seen:
                problems.add(
                    f"{here}.preference",
                    f"{cache.preference} is already {seen[cache.preference]}: each cache "
                    "needs its own preference (the lowest is asked first)",
                )
            else:
                seen[cache.preference] = f"the preference of caches[{index}]"
        if cache.address is not None and cache.port is not None:
            key = (cache.address, cache.port)
            if key in endpoints:
                problems.add(
                    f"{here}.address",
                    f"{cache.address} port {cache.port} is caches[{endpoints[key]}] again",
                )
            endpoints.setdefault(key, index)


def _planned_space(network: Network, address: Any) -> str | None:
    """What of our own plan ``address`` falls into (the link subnet whose /128 pairs ownas
    hands out, the router's loopback subnet, a delegation), or None."""
    if address is None:
        return None
    spaces = [(network.link_subnet, "the link subnet")]
    if network.router.loopback is not None:
        spaces.append((network.router.loopback.cidr, "the router's loopback subnet"))
    spaces += [(d.delegate, f"{d.name}'s delegation") for d in network.downstreams]
    for space, what in spaces:
        if space is not None and address.version == 6 and address in space:
            return f"{what} {space}"
    return None


def _check_downstreams(network: Network, problems: Problems) -> None:
    prefix, link, router = network.prefix, network.link_subnet, network.router
    taken: list[tuple[IPNetwork, str]] = []
    if link is not None:
        taken.append((link, f"the link subnet {link}"))
    if router.loopback is not None:
        taken.append((router.loopback.cidr, f"{router.name}.loopback {router.loopback.cidr}"))
    units: dict[int, str] = {}
    endpoints: dict[Any, str] = {}
    if router.wan is not None and router.wan.ipv4 is not None:
        endpoints[router.wan.ipv4.ip] = f"{router.name}'s WAN address"
    for upstream in router.upstreams:
        if upstream.tunnel is not None and upstream.tunnel.endpoint is not None:
            endpoints[upstream.tunnel.endpoint] = f"upstream {upstream.name}'s tunnel endpoint"

    for downstream in sorted(network.downstreams, key=lambda d: (d.tunnel is None, d.tunnel)):
        name = downstream.name
        delegate = downstream.delegate
        if delegate is not None and prefix is not None:
            if delegate not in prefix:
                problems.add(f"{name}.delegate", f"{delegate} is not inside {prefix}")
            elif delegate.prefixlen <= prefix.prefixlen:
                problems.add(f"{name}.delegate", f"{delegate} is the whole prefix {prefix}")
            elif delegate.prefixlen > 64:
                problems.add(
                    f"{name}.delegate", f"{delegate} is longer than /64; delegate a /64 or more"
                )
            else:
                for other, label in taken:
                    if _overlap(delegate, other):
                        problems.add(f"{name}.delegate", f"{delegate} overlaps {label}")
                taken.append((delegate, f"{name}.delegate {delegate}"))
        if downstream.tunnel is not None:
            if downstream.tunnel in units:
                problems.add(
                    f"{name}.tunnel",
                    f"{downstream.tunnel} is also {units[downstream.tunnel]}'s tunnel",
                )
            units[downstream.tunnel] = name
            if link is not None:
                far_end = inner_pair(link, downstream.tunnel)[1]
                if far_end not in link:
                    problems.add(
                        f"{name}.tunnel",
                        f"{downstream.tunnel} puts the inner pair outside the link subnet {link}",
                    )
        if downstream.endpoint is not None:
            if downstream.endpoint in endpoints:
                problems.add(
                    f"{name}.endpoint",
                    f"{downstream.endpoint} is also {endpoints[downstream.endpoint]}",
                )
            endpoints[downstream.endpoint] = f"{name}'s endpoint"
        if downstream.managed:
            _check_managed(network, downstream, problems)


def _check_managed(network: Network, downstream: Downstream, problems: Problems) -> None:
    name = downstream.name
    delegate = downstream.delegate
    loopback = downstream.loopback
    if loopback is not None and delegate is not None and loopback not in delegate:
        problems.add(f"{name}.loopback", f"{downstream.loopback} is not inside {delegate}")
    lan = downstream.lan
    provider = lan.provider if lan is not None else None
    if provider is not None and network.prefix is not None and _overlap(provider, network.prefix):
        problems.add(
            f"{name}.lan.provider",
            f"{provider} overlaps our own prefix; it is the provider's space",
        )
    for service in downstream.services:
        _check_service(downstream, service, f"{name}.services[{service.index}]", problems)


def _check_service(downstream: Downstream, service: Any, where: str, problems: Problems) -> None:
    """A service opens a port on the host, or on addresses its jails hold in the delegation or
    the provider's network; the jails' private IPv4 is behind NAT and gets no inbound port."""
    to = service.to
    shown = str(to.ip) if to is not None and to.size == 1 else str(to)
    if to is not None:
        own = [downstream.delegate]
        if downstream.lan is not None and downstream.lan.provider is not None:
            own.append(downstream.lan.provider)
        if to.version == 4:
            if to.cidr != IPNetwork(f"{downstream.endpoint}/32"):
                problems.add(
                    f"{where}.to",
                    f"{shown} is not this host's IPv4 {downstream.endpoint}: the jails' IPv4 is "
                    "NATed and ownas opens no port to it; use 'host' or a jail's IPv6 address",
                )
        elif not any(n is not None and to in n for n in own):
            where_ok = " or ".join(str(n) for n in own if n is not None)
            problems.add(f"{where}.to", f"{shown} is not inside {where_ok}")
    if to is not None and any(s.version != to.version for s in service.sources):
        problems.add(f"{where}.from", f"has addresses of another family than {shown}")


def _check_interfaces(network: Network, problems: Problems) -> None:
    """Interface names must be unique per host."""
    router = network.router
    used: dict[str, str] = {"lo0": "the loopback"}
    if router.wan is not None and router.wan.interface is not None:
        _claim(used, router.wan.interface, "the WAN", f"{router.name}.wan.interface", problems)
    units = {d.tunnel for d in network.downstreams if d.tunnel is not None}
    for unit in sorted(units):
        # A unit two downstreams share is reported once, by _check_downstreams.
        owner = next(d for d in network.downstreams if d.tunnel == unit)
        _claim(used, f"gif{unit}", f"the tunnel to {owner.name}", f"{owner.name}.tunnel", problems)
    for upstream in router.upstreams:
        if upstream.tunnel is not None and upstream.tunnel.interface is not None:
            where = f"{router.name}.upstreams[{upstream.name}].tunnel.interface"
            _claim(
                used, upstream.tunnel.interface, f"the tunnel to {upstream.name}", where, problems
            )

    for downstream in network.downstreams:
        if not downstream.managed:
            continue
        local: dict[str, str] = {"lo0": "the loopback"}
        name = downstream.name
        _claim(local, downstream.interface, "the tunnel", f"{name}.interface", problems)
        _claim(local, downstream.wan_interface, "the WAN", f"{name}.wan_interface", problems)
        if downstream.lan is not None:
            _claim(local, downstream.lan.interface, "the LAN", f"{name}.lan.interface", problems)
        if downstream.interface is not None and not downstream.interface.startswith("gif"):
            problems.add(f"{name}.interface", f"{downstream.interface!r} is not a gif interface")


UNROUTED = "not routed on the Internet"


def _check_endpoints(network: Network, problems: Problems) -> None:
    """Warn (never refuse) about tunnel outer addresses the Internet does not route
    (bogons.toml's IPv4 list), unless on the router's own WAN subnet, which both ends share: a
    documentation address is right for the example inventory and the lab only; elsewhere the
    far end must be written as the router reaches it, and a managed downstream, whose endpoint
    is its own tunnel source too, cannot be behind NAT: gif runs only with a local source and
    takes in only packets whose outer addresses match its pair exactly (sys/netinet/in_gif.c,
    in_gif_set_running and in_gif_lookup)."""
    router = network.router
    wan = router.wan.ipv4 if router.wan is not None else None
    example = f"{UNROUTED}; right for the example inventory and the lab only"

    def off_link(address: IPAddress | None) -> fields.SpecialIPv4 | None:
        if address is None or (wan is not None and address in wan.cidr):
            return None
        return fields.special_ipv4(address)

    if wan is not None:
        special = fields.special_ipv4(wan.ip)
        remote = any(
            d.endpoint is not None and d.endpoint not in wan.cidr for d in network.downstreams
        )
        if special is not None and remote:
            problems.warn(
                f"{router.name}.wan.ipv4",
                f"{wan.ip} is {special.what}, and every downstream (and settings.txt) gets it as "
                "its tunnel's far end: "
                + (
                    example
                    if special.example
                    else f"{UNROUTED}; they reach it only across a "
                    "network they share, not through NAT"
                ),
            )
    for upstream in router.upstreams:
        endpoint = upstream.tunnel.endpoint if upstream.tunnel is not None else None
        special = off_link(endpoint)
        if special is not None:
            problems.warn(
                f"{router.name}.upstreams[{upstream.name}].tunnel.endpoint",
                f"{endpoint} is {special.what}: "
                + (
                    example
                    if special.example
                    else f"{UNROUTED}; write the address {router.name} reaches {upstream.name} at"
                ),
            )
    for downstream in network.downstreams:
        special = off_link(downstream.endpoint)
        if special is None:
            continue
        if special.example:
            why = example
        elif downstream.managed:
            why = (
                f"{UNROUTED}, and {downstream.name} is the tunnel's source there too: "
                f"{router.name} must reach it at this very address, across a network both share, "
                "not through NAT"
            )
        else:
            why = (
                f"{UNROUTED}; write the address {router.name} reaches it at (its public one if "
                "it is behind NAT)"
            )
        problems.warn(
            f"{downstream.name}.endpoint", f"{downstream.endpoint} is {special.what}: {why}"
        )


def _claim(
    used: dict[str, str], interface: str | None, what: str, where: str, problems: Problems
) -> None:
    if interface is None:
        return
    if interface in used:
        problems.add(where, f"{interface} is already {used[interface]}")
        return
    used[interface] = what


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last
