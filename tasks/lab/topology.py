"""The lab's network, derived from the plan: which namespaces, links and addresses it needs.

One network namespace per managed host (router, managed downstreams) and per upstream, plus
``inet``: the Internet between them (the router's WAN segment on a bridge, each downstream's
uplink). A tunnel is a bridge in ``inet``, named after the router's interface (``tgif0``),
joining one veth from each end; its ends are
made in advance under hidden names (``x`` + name) and take their FreeBSD names when the deploy
creates the tunnel (``service netif start IF``); an upstream's end is ready from the start,
configured as the upstream configured it. The lab cuts a tunnel at the bridge (the ``inet``
side of each veth goes down), so both ends keep their addresses and routes, as a gif does whose
far end is gone.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from netaddr import IPAddress, IPNetwork

from tasks.plan import Plan


@dataclass(frozen=True)
class TunnelEnd:
    host: str  # managed host or upstream name
    interface: str


@dataclass(frozen=True)
class TunnelLink:
    """Two veths and a bridge standing in for one tunnel; up only while both ends name each
    other."""

    site: str  # the far end: an upstream or a downstream, managed or not
    a: TunnelEnd  # the router's end
    b: TunnelEnd | None  # the far end (None: an unmanaged site the lab does not run)
    # For an upstream's end: the outer endpoints it is configured with (source, destination).
    b_endpoints: tuple[str, str] | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    asn: int
    router_id: str
    interface: str  # in the upstream's namespace
    address: str  # its BGP address
    prefixlen: int
    peer: str  # the router's address it peers with
    tunnel: bool


@dataclass(frozen=True)
class Topology:
    router: str
    managed: tuple[str, ...]  # managed hosts: router first
    upstreams: tuple[Upstream, ...]
    tunnels: tuple[TunnelLink, ...]
    controller: str  # the trusted address SSH comes from
    uplinks: dict[str, str] = field(default_factory=dict)  # host -> uplink interface name
    wan: dict[str, list[str]] = field(default_factory=dict)  # host -> uplink addresses/len
    gateways: dict[str, list[str]] = field(default_factory=dict)  # host -> default routers
    inet_addresses: dict[str, list[str]] = field(default_factory=dict)  # inet side of uplinks
    lan: dict[str, str] = field(default_factory=dict)  # host -> LAN interface (jail bridge)
    sample: dict[str, list[str]] = field(default_factory=dict)  # what the upstreams announce
    paths: dict[str, list[int]] = field(default_factory=dict)  # sample prefix -> AS path behind


# A downstream's provider network in the lab.
PROVIDER_PREFIXLEN = 29
# What the router accepts of the sample; every other kind is rejected.
ACCEPTED = ("valid", "not_found")


@cache
def _data() -> dict[str, Any]:
    return tomllib.loads(resources.files("tasks").joinpath("data/lab_sample.toml").read_text())


def _sample() -> dict[str, Any]:
    """The announced routes by kind (the data without its ROAs)."""
    return {
        kind: listed for kind, listed in _data().items() if kind not in ("roa", "graceful_shutdown")
    }


def graceful_shutdown(upstream: str) -> list[str]:
    """The sample prefixes ``upstream`` sends marked GRACEFUL_SHUTDOWN."""
    return list(_data().get("graceful_shutdown", {}).get(upstream, []))


def roas() -> list[dict[str, Any]]:
    """The ROAs the lab's RTR caches serve, as stayrtr reads them."""
    return [dict(roa) for roa in _data()["roa"]]


def sample(plan: Plan) -> dict[str, list[str]]:
    """The announced sample (tasks/data/lab_sample.toml) by kind, plus our own prefix, sent back."""
    kinds = {
        kind: [*listed.get("prefixes", []), *sorted(listed.get("paths", {}))]
        for kind, listed in _sample().items()
    }
    kinds["own"] = [str(plan.network.prefix)]
    return kinds


def sample_paths() -> dict[str, list[int]]:
    """The AS numbers an upstream puts behind its own in the path of a sample prefix."""
    return {
        prefix: path
        for listed in _sample().values()
        for prefix, path in sorted(listed.get("paths", {}).items())
    }


def controller(plan: Plan) -> str:
    """An address inside the first trusted source: where the lab's SSH sessions come from."""
    source = plan.network.trusted_sources[0]
    return str(source.ip if source.size == 1 else IPAddress(source.first + 1, source.version))


def build(plan: Plan) -> Topology:
    router = plan.router
    wan = router.wan
    managed = [router.name] + [d.name for d in plan.network.downstreams if d.managed]
    tunnels = []
    upstreams = []
    for upstream in router.upstreams:
        if upstream.tunnel is not None:
            interface = upstream.tunnel.interface
            address, prefixlen, peer = str(upstream.peer), 128, str(upstream.tunnel.address)
            tunnels.append(
                TunnelLink(
                    upstream.name,
                    TunnelEnd(router.name, interface),
                    TunnelEnd(upstream.name, interface),
                    (str(upstream.tunnel.endpoint), str(wan.ipv4.ip)),
                )
            )
            router_id = str(upstream.tunnel.endpoint)
        else:
            interface = "eth0"
            address, prefixlen, peer = str(upstream.peer), wan.ipv6.prefixlen, str(wan.ipv6.ip)
            router_id = str(IPAddress(wan.ipv4.first + 2 + len(upstreams)))
        upstreams.append(
            Upstream(
                upstream.name,
                upstream.asn,
                router_id,
                interface,
                address,
                prefixlen,
                peer,
                upstream.tunnel is not None,
            )
        )
    for downstream in plan.network.downstreams:
        tunnel = plan.tunnel_to(downstream)
        far = TunnelEnd(downstream.name, downstream.interface) if downstream.managed else None
        near = TunnelEnd(router.name, tunnel.interface)
        tunnels.append(TunnelLink(downstream.name, near, far))

    topology = Topology(
        router=router.name,
        managed=tuple(managed),
        upstreams=tuple(upstreams),
        tunnels=tuple(tunnels),
        controller=controller(plan),
        sample=sample(plan),
        paths=sample_paths(),
    )
    topology.uplinks[router.name] = wan.interface
    topology.wan[router.name] = [str(wan.ipv4)] + ([str(wan.ipv6)] if wan.ipv6 else [])
    topology.gateways[router.name] = [
        str(g) for g in (wan.ipv4_gateway, wan.ipv6_gateway) if g is not None
    ]
    # The colo segment: the gateways, and the WAN upstreams' own addresses.
    inet = [f"{wan.ipv4_gateway}/{wan.ipv4.prefixlen}"] if wan.ipv4_gateway else []
    if wan.ipv6 is not None and wan.ipv6_gateway is not None:
        inet.append(f"{wan.ipv6_gateway}/{wan.ipv6.prefixlen}")
    topology.inet_addresses[router.name] = inet
    for downstream in plan.network.downstreams:
        if not downstream.managed:
            continue
        # The provider's network: a /29 around the VPS's address (VPSs 8 addresses apart never
        # share one), the gateway its first host.
        length = PROVIDER_PREFIXLEN
        subnet = IPNetwork(f"{downstream.endpoint}/{length}")
        gateway = IPAddress(subnet.first + 1)
        if gateway == downstream.endpoint:
            gateway = IPAddress(subnet.first + 2)
        topology.uplinks[downstream.name] = downstream.wan_interface
        topology.wan[downstream.name] = [f"{downstream.endpoint}/{length}"]
        topology.gateways[downstream.name] = [str(gateway)]
        topology.inet_addresses[downstream.name] = [f"{gateway}/{length}"]
        if downstream.lan is not None:
            topology.lan[downstream.name] = downstream.lan.interface
    return topology
