"""Render every file each host needs from the plan, with jinja2 templates.

Templates live in ``templates/`` at the path of the file they become on the target, plus
``.j2``: ``templates/etc/pf.conf.j2`` becomes ``/etc/pf.conf``. Rendering is deterministic: the
same inventory gives byte-identical files (StrictUndefined, sorted data, no timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from netaddr import IPAddress, IPNetwork

from tasks import fields, freebsd
from tasks.model import GRACEFUL_SHUTDOWN, VALIDATOR_PORTS, Downstream, Service
from tasks.plan import (
    MAX_PREFIX_RESTART,
    RPKI_ROUTE_MAP,
    VALIDATOR_ADDRESS,
    HostPlan,
    Plan,
    rc_name,
    rtr_caches,
)
from tasks.policy import bogon_asn_filter, bogon_filter

# The project's templates/, or, in an installed ownas, the copy the distribution carries inside
# the package (pyproject.toml maps templates/ to tasks/templates).
_PACKAGED = Path(__file__).resolve().parent / "templates"
TEMPLATES = (
    _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent / "templates"
)

# Files ownas owns on every managed host, by role. Paths are absolute on the target.
COMMON_FILES = (
    freebsd.RC_CONF_LOCAL,
    freebsd.NETIF_CONF,
    freebsd.ROUTING_CONF,
    "/etc/rc.conf.d/kld",
    # The fallback before the fragment that enables it: an install interrupted in between
    # must not leave rc.d/pf's built-in fallback ("block drop log all", no SSH) in charge.
    freebsd.PF_FALLBACK,
    "/etc/rc.conf.d/pf",
    "/etc/rc.conf.d/pflog",
    freebsd.PF_CONF,
    freebsd.RESTORE_SCRIPT,
)
ROUTER_FILES = (
    "/etc/rc.conf.d/frr",
    freebsd.VTYSH_CONF,
    freebsd.FRR_CONF,
)
SECURELEVEL_FILE = "/etc/rc.conf.d/securelevel"
LOADER_FILE = "/boot/loader.conf.d/ownas.conf"
# Modules GENERIC has built in: listing them in kld_list only makes rc.d/kld warn at boot.
GENERIC_MODULES = frozenset({"if_gif"})
# The settings sheet for an unmanaged downstream's operator.
SHEET = "settings.txt"


# RFC 4890, 4.3.1 and 4.4.1: the ICMPv6 errors that must not be dropped, in pf's names.
ICMP6_ERRORS = ("unreach", "toobig", "timex", "paramprob")
# What arrives through a downstream's tunnel for its delegation is answered through it: a reply
# routed by FIB 0 would leave the uplink with a source the provider drops as spoofed.
TUNNEL_REPLY = "reply-to ($tun_if $router_inner)"


@dataclass(frozen=True)
class ServiceRule:
    """One inventory service as a pf rule: the words between ``pass in quick`` and
    ``keep state``, and whether it is for what comes through the tunnel."""

    words: tuple[str, ...]
    tunnel: bool


def _service_words(
    service: Service, af: str | None, to: str, sources: tuple[Any, ...], via: str | None = None
) -> tuple[str, ...]:
    """``[on IF [reply-to ...]] [AF] proto P [from SOURCES] to DEST port PORTS``."""
    words = ["on", via] if via else []
    words += [TUNNEL_REPLY] if via == "$tun_if" else []
    words += [af] if af else []
    words += ["proto", service.proto]
    if sources:
        listed = [_pf_address(s) for s in sources]
        words += ["from", listed[0] if len(listed) == 1 else f"{{ {', '.join(listed)} }}"]
    ports = [str(p) for p in service.ports]
    words += ["to", to, "port", ports[0] if len(ports) == 1 else f"{{ {', '.join(ports)} }}"]
    return tuple(words)


def service_rules(downstream: Downstream) -> list[ServiceRule]:
    """pf rules for a downstream's services: through the tunnel (to the delegation, with
    reply-to) first, then the rest (the host's own addresses, the provider's network)."""
    rules = []
    for service in downstream.services:
        v6_sources = tuple(s for s in service.sources if s.version == 6)
        if service.to is None:  # the host: its delegation address through the tunnel, and all
            if not service.sources or v6_sources:
                words = _service_words(service, "inet6", "$host_v6", v6_sources, "$tun_if")
                rules.append(ServiceRule(words, True))
            rules.append(
                ServiceRule(_service_words(service, None, "(self)", service.sources), False)
            )
        elif service.to.version == 4:
            words = _service_words(service, "inet", "$public_v4", service.sources)
            rules.append(ServiceRule(words, False))
        elif service.to in downstream.delegate:
            to = _pf_address(service.to)
            words = _service_words(service, "inet6", to, service.sources, "$tun_if")
            rules.append(ServiceRule(words, True))
        else:  # a jail's address in the provider's network
            to = _pf_address(service.to)
            words = _service_words(service, "inet6", to, service.sources, "$ext_if")
            rules.append(ServiceRule(words, False))
    return rules


def _communities(values: tuple[tuple[int, ...], ...]) -> str:
    """Communities as FRR stores them: sorted numerically, GRACEFUL_SHUTDOWN by its name
    (bgpd/bgp_community.c, community_str), so frr-reload sees no change."""
    return " ".join(
        "graceful-shutdown" if value == GRACEFUL_SHUTDOWN else ":".join(map(str, value))
        for value in sorted(values)
    )


def _pf_address(network: IPNetwork | IPAddress) -> str:
    """A table entry: a host as a bare address, a network with its length."""
    if not isinstance(network, IPNetwork):
        return str(network)
    full = 32 if network.version == 4 else 128
    return str(network.ip) if network.prefixlen == full else str(network.cidr)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        rcname=rc_name,
        communities=_communities,
        pfaddr=_pf_address,
        tunnel_args=freebsd.tunnel_args,
        tunnel_inet6=freebsd.tunnel_inet6,
        route_args=freebsd.route_args,
        preload=lambda modules: [m for m in modules if m not in GENERIC_MODULES],
    )
    env.globals.update(icmp6_errors=list(ICMP6_ERRORS), tunnel_reply=TUNNEL_REPLY)
    return env


def files_for(host: HostPlan) -> tuple[str, ...]:
    """The files ownas renders for ``host``, in the order the deploy installs them."""
    files = list(COMMON_FILES)
    if host.role == "router":
        files += ROUTER_FILES
    if host.validator is not None:
        files += [f"/etc/rc.conf.d/{host.validator}", freebsd.VALIDATORS[host.validator].config]
    if host.securelevel is not None:
        files.append(SECURELEVEL_FILE)
    if host.fibs > 1:
        files.append(LOADER_FILE)
    return tuple(files)


def _context(plan: Plan, host: HostPlan) -> dict[str, Any]:
    network = plan.network
    context: dict[str, Any] = {
        "network": network,
        "router": network.router,
        "host": host,
        "bogons": fields.bogons(),
        "restore": freebsd.restore_context(),
    }
    if host.role == "router":
        context["bogon_filter"] = bogon_filter(network)
        context["bogon_asn_filter"] = bogon_asn_filter()
        context["max_prefix_restart"] = MAX_PREFIX_RESTART
        context["bgp_peers"] = _wan_bgp_peers(plan)
        context["rpki"] = rpki = network.router.rpki
        context["rtr_caches"] = rtr_caches(rpki) if rpki else ()
        context["rpki_route_map"] = RPKI_ROUTE_MAP
        if host.validator is not None:
            port = VALIDATOR_PORTS[host.validator]
            context["validator_address"] = VALIDATOR_ADDRESS
            context["validator_port"] = port
            context["validator_listen"] = f"{VALIDATOR_ADDRESS}:{port}"
    elif host.role == "downstream":
        context["downstream"] = downstream = network.downstream(host.name)
        context["services"] = service_rules(downstream)
    return context


def _wan_bgp_peers(plan: Plan) -> dict[str, list[IPAddress]]:
    """BGP neighbors on the WAN subnet (not through a tunnel), by family, for pf's tables."""
    router = plan.router
    peers = [u.peer for u in router.upstreams if u.tunnel is None] + list(router.extra_bgp_peers)
    ordered = sorted(set(peers), key=lambda a: (a.version, a.value))
    return {
        "v4": [a for a in ordered if a.version == 4],
        "v6": [a for a in ordered if a.version == 6],
    }


def render_host(plan: Plan, name: str, env: Environment | None = None) -> dict[str, str]:
    """{absolute target path: content} for managed host ``name``."""
    env = env or environment()
    host = plan.host(name)
    context = _context(plan, host)
    return {
        path: env.get_template(f"{path.lstrip('/')}.j2").render(context) for path in files_for(host)
    }


def render_sheet(plan: Plan, downstream: Downstream, env: Environment | None = None) -> str:
    """The settings sheet for an unmanaged downstream's own operator."""
    env = env or environment()
    return env.get_template(f"{SHEET}.j2").render(
        network=plan.network,
        router=plan.router,
        downstream=downstream,
        tunnel=plan.tunnel_to(downstream),
    )


def render_all(plan: Plan) -> dict[str, dict[str, str]]:
    """{host: {path: content}}; an unmanaged downstream's sheet is at path ``settings.txt``."""
    env = environment()
    out = {name: render_host(plan, name, env) for name in sorted(plan.hosts)}
    for downstream in plan.network.downstreams:
        if not downstream.managed:
            out[downstream.name] = {SHEET: render_sheet(plan, downstream, env)}
    return out
