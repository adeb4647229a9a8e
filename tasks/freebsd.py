"""Every FreeBSD command and argument string ownas produces, in one place.

The rc.conf fragments and the live reload must agree: the boot configuration writes
``ipv6_route_vps01="<route args>"`` and rc.d/routing runs ``route add -inet6 <route args>``; the
deploy runs the same ``route`` with the same arguments. Both take them from here.
"""

from __future__ import annotations

from tasks.plan import Route, Tunnel


def tunnel_args(tunnel: Tunnel) -> str:
    """ifconfig arguments that set a tunnel's outer endpoints, FIBs and MTU.

    ``fib`` puts the interface (its routes and received packets) in a FIB; ``tunnelfib 0`` keeps
    the encapsulated outer packets in FIB 0 so they leave through the provider's default route
    and cannot loop into the tunnel itself (gif(4); a new gif's tunnel FIB is otherwise the FIB
    of the process that created it).
    """
    words = ["tunnel", str(tunnel.source), str(tunnel.destination)]
    if tunnel.fib:
        words += ["fib", str(tunnel.fib), "tunnelfib", "0"]
    if not tunnel.default_mtu:
        words += ["mtu", str(tunnel.mtu)]
    return " ".join(words)


def tunnel_inet6(tunnel: Tunnel) -> str:
    """ifconfig arguments for a tunnel's inner point-to-point /128 pair."""
    return f"inet6 {tunnel.address} {tunnel.peer} prefixlen 128"


def route_args(route: Route) -> str:
    """route(8) arguments after ``add -inet6``, also the value of ``ipv6_route_<name>``."""
    words = [route.destination]
    if route.gateway is not None:
        words.append(str(route.gateway))
    if route.interface is not None:
        words += ["-interface", route.interface]
    if route.reject:
        words.append("-reject")
    if route.fib:
        words += ["-fib", str(route.fib)]
    return " ".join(words)
