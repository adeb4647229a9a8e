"""FreeBSD 14's commands, as the deploy runs them, for a lab host. Test infrastructure.

No FreeBSD kernel runs here, so ``uname``, ``sysctl``, ``kldstat``, ``kldload``, ``ifconfig``,
``route``, ``pfctl``, ``service``, ``pkg``, ``ping`` and ``setfib`` are these stand-ins, first on
every lab host's PATH. Each accepts exactly the FreeBSD syntax the deploy uses. What FreeBSD
itself would refuse (a missing interface or module, a FIB that does not exist, a sysctl at
securelevel, a service not enabled, a route that exists) fails with FreeBSD's message; any
other syntax, even one FreeBSD accepts, fails with the lab's own message ("not syntax the
deploy uses"), so that a new command line cannot pass the lab unexamined. Where Linux has an
equivalent it is applied, so that packets really flow:

- interfaces, addresses, MTU, descriptions (ifalias); a tunnel is a veth pair that carries
  packets only while both ends' outer endpoints name each other (tasks.lab.links);
- routes, FIB N as routing table N (FIB 0: main), an interface in FIB N as
  ``ip rule iif IF lookup N``, reject routes as ``unreachable``;
- ``setfib N ping`` as a ping marked N with ``ip rule fwmark N lookup N``;
- pf's routing (``rtable``, ``reply-to``) as policy rules; pf's filtering is not applied;
- forwarding sysctls; FRR started for real (``service frr start``).

What has no equivalent is recorded in the host's state.json (pf enabled and the loaded rules,
packages, kernel modules, the securelevel, FreeBSD-only tunnel settings), and every call goes
to the host's log.jsonl (command, exit status, seconds, when it ended), which the tests and
``make bench`` read. pf.conf is parsed by tasks.lab.pf, a strict stand-in for pfctl's parser.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tasks.lab import alive, debian13, links

MODULE_OF = {"gif": "if_gif", "gre": "if_gre"}
# Modules FreeBSD 14 ships in /boot/kernel that the rendered configuration can ask for; kldload
# of any other name fails as it does there (no such file).
KERNEL_MODULES = ("if_bridge", "if_epair", "if_gif", "if_gre", "pf", "pflog", "pfsync")
RULE_PRIORITY = {"pf": 20000, "fib": 21000, "mark": 22000}
FRR_CONFDIR = "/usr/local/etc/frr"
# What the lab's pkg installs, and the versions FreeBSD's would (the lab runs FRR 10.3 from the
# Debian 13 root, and stayrtr in place of either validator).
PACKAGES = {
    "frr10": "10.5.1",
    "frr10-pythontools": "10.5.1",
    "routinator": "0.15.1",
    "fort": "1.6.8",
}


class Refused(Exception):
    """The command line is refused: message for stderr, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def unused(command: str, args: list[str]) -> Refused:
    """Syntax FreeBSD may well accept but the deploy never writes: the stand-in's own refusal,
    so that a new command line in tasks/freebsd.py cannot pass the lab unexamined."""
    line = " ".join([command, *args])
    return Refused(f"ownas lab: `{line}` is not syntax the deploy uses (stand-in refuses)", 64)


class Host:
    """One lab host: its state (state.json), the lab around it, and Linux inside its namespace."""

    def __init__(self) -> None:
        self.dir = Path(os.environ["OWNAS_LAB_HOST"])
        self.lab = Path(os.environ["OWNAS_LAB"])
        self.state = links.load_state(self.dir)

    def save(self) -> None:
        links.save_state(self.dir, self.state)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise Refused(result.stderr.strip() or f"ip {' '.join(args)} failed")
        return result

    def links(self) -> list[dict[str, Any]]:
        """Interfaces with their addresses and details (-d: the description, ifalias)."""
        return json.loads(self.ip("-j", "-d", "addr", "show").stdout or "[]")

    def table(self, fib: int) -> str:
        if fib >= self.state["fibs"]:
            raise Refused(f"route: invalid fib number: {fib}", 64)
        return "main" if fib == 0 else str(fib)

    def add_rule(self, kind: str, spec: list[str], interface: str | None = None) -> None:
        """A Linux policy rule the lab owns (recorded, so that it can be removed again)."""
        family = "-6" if any(":" in word for word in spec) or kind != "pf" else "-4"
        self.state["rule_serial"] = serial = self.state.get("rule_serial", 0) + 1
        priority = RULE_PRIORITY[kind] + serial
        self.ip(family, "rule", "add", "priority", str(priority), *spec)
        rule = {"kind": kind, "family": family, "priority": priority}
        if interface is not None:
            rule["interface"] = interface
        self.state["rules"].append(rule)

    def drop_rules(self, kind: str, interface: str | None = None) -> None:
        """Remove the lab's rules of ``kind`` (only those for ``interface``, if given)."""
        for rule in self.state["rules"][:]:
            if rule["kind"] != kind or (interface and rule.get("interface") != interface):
                continue
            self.ip(rule["family"], "rule", "del", "priority", str(rule["priority"]), check=False)
            self.state["rules"].remove(rule)


# --- uname, sysctl, kldstat, kldload ---------------------------------------------------------


def uname(host: Host, args: list[str]) -> int:
    if args != ["-sr"]:
        raise unused("uname", args)
    print(f"FreeBSD {host.state['release']}")
    return 0


RFC6204W3 = "net.inet6.ip6.rfc6204w3"  # recorded: the lab's uplinks send no RAs
SYSCTL_FILES = {
    "net.inet6.ip6.forwarding": "/proc/sys/net/ipv6/conf/all/forwarding",
    "net.inet.ip.forwarding": "/proc/sys/net/ipv4/ip_forward",
}


def sysctl(host: Host, args: list[str]) -> int:
    if args and all("=" not in a and not a.startswith("-") for a in args):
        # `name: value` each (sbin/sysctl/sysctl.c show_var); an unknown one is said and skipped.
        status = 0
        for name in args:
            value = _sysctl_value(host, name)
            if value is None:
                print(f"sysctl: unknown oid '{name}'", file=sys.stderr)
                status = 1
            else:
                print(f"{name}: {value}")
        return status
    if len(args) == 1 and "=" in args[0]:
        name, value = args[0].split("=", 1)
        old = _sysctl_value(host, name)
        if old is None:
            raise Refused(f"sysctl: unknown oid '{name}'")
        if name == "net.fibs":
            if not value.isdigit() or int(value) < host.state["fibs"]:
                print(f"{name}: {old}")
                raise Refused(f"sysctl: {args[0]}: Capabilities insufficient")
            host.state["fibs"] = int(value)
        elif name in SYSCTL_FILES and value in ("0", "1"):
            Path(SYSCTL_FILES[name]).write_text(value)
        elif name == RFC6204W3 and value in ("0", "1"):
            host.state["rfc6204w3"] = int(value)
        else:
            raise Refused(f"sysctl: oid '{name}' is read only")
        print(f"{name}: {old} -> {value}")
        return 0
    raise unused("sysctl", args)


def _sysctl_value(host: Host, name: str) -> str | None:
    if name == "kern.securelevel":
        return str(host.state["securelevel"])
    if name == RFC6204W3:
        return str(host.state.get("rfc6204w3", 0))
    if name == "net.fibs":
        return str(host.state["fibs"])
    if name in SYSCTL_FILES:
        return Path(SYSCTL_FILES[name]).read_text().strip()
    return None


def kldstat(host: Host, args: list[str]) -> int:
    if len(args) != 3 or args[:2] != ["-q", "-m"]:
        raise unused("kldstat", args)
    return 0 if args[2] in host.state["modules"] else 1


def kldload(host: Host, args: list[str]) -> int:
    if len(args) != 2 or args[0] != "-n":
        raise unused("kldload", args)
    return _load_module(host, args[1])


def _load_module(host: Host, module: str) -> int:
    if module in host.state["modules"]:
        return 0
    # kern_kldload checks the securelevel before it looks for the file (sys/kern/kern_linker.c).
    if host.state["securelevel"] >= 1:
        raise Refused(f"kldload: can't load {module}: Operation not permitted")
    if module not in KERNEL_MODULES:
        raise Refused(f"kldload: can't load {module}: No such file or directory")
    host.state["modules"].append(module)
    return 0


# --- ifconfig ---------------------------------------------------------------------------------


def ifconfig(host: Host, args: list[str]) -> int:
    if not args:
        _print_interfaces(host)
        return 0
    name, words = args[0], args[1:]
    present = {link["ifname"] for link in host.links()}
    if name not in present:
        raise Refused(f"ifconfig: interface {name} does not exist")
    tunnel = host.state["tunnels"].get(name)
    if words == ["destroy"] and tunnel is not None:
        _destroy(host, name)
    elif words == ["up"]:
        host.ip("link", "set", name, "up")
        if tunnel is not None:
            tunnel["up"] = True
    elif words[:1] == ["description"] and len(words) == 2:
        host.ip("link", "set", name, "alias", words[1])
    elif words[:1] == ["mtu"] and len(words) == 2 and words[1].isdigit():
        host.ip("link", "set", name, "mtu", words[1])
    elif words[:1] == ["inet6"] and words[-1:] == ["-alias"] and len(words) == 3:
        _del_inet6(host, name, words[1])
    elif words[:1] == ["inet6"] and words[-1:] == ["alias"]:
        _add_inet6(host, name, words[1:-1])
    elif tunnel is not None and words[:1] in (["tunnel"], ["fib"]):
        _tunnel_settings(host, name, words)
    else:
        raise unused("ifconfig", args)
    return 0


def _del_inet6(host: Host, name: str, address: str) -> None:
    """FreeBSD removes the address whatever its prefix length; Linux wants the length too."""
    wanted = ipaddress.ip_address(address.split("/")[0])
    for link in host.links():
        for info in link.get("addr_info", []) if link["ifname"] == name else []:
            if ipaddress.ip_address(info["local"]) == wanted:
                host.ip("-6", "addr", "del", f"{info['local']}/{info['prefixlen']}", "dev", name)
                return
    # sbin/ifconfig/ifconfig.c: a failed delete is err(1, "ioctl (SIOCDIFADDR)").
    raise Refused("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")


def _add_inet6(host: Host, name: str, words: list[str]) -> None:
    """``ADDR [PEER] prefixlen N`` as ifconfig takes it after ``inet6``.

    FreeBSD marks an interface up when it gets an address; Linux must have it up first, or
    the address's routes wait for a carrier.
    """
    if len(words) == 3 and words[1] == "prefixlen":
        address = [f"{words[0]}/{words[2]}"]
    elif len(words) == 4 and words[2] == "prefixlen" and words[3] == "128":
        address = [words[0], "peer", words[1]]
    else:
        raise Refused(f"ifconfig: {' '.join(words)}: bad value")
    host.ip("link", "set", name, "up")
    if name in host.state["tunnels"]:
        tunnel = host.state["tunnels"][name]
        tunnel["up"] = True
        # The peer's host route goes to the interface's FIB of this moment (in6.c).
        tunnel["route_fib"] = tunnel.get("fib", 0)
    host.ip("-6", "addr", "add", *address, "dev", name, "nodad")


def _tunnel_settings(host: Host, name: str, words: list[str]) -> None:
    """``tunnel SRC DST``, ``fib N``, ``tunnelfib N``, ``mtu N``, in any order (ifconfig(8))."""
    tunnel = host.state["tunnels"][name]
    index = 0
    while index < len(words):
        word = words[index]
        if (
            word == "tunnel"
            and index + 2 < len(words)
            and _ipv4(words[index + 1])
            and _ipv4(words[index + 2])
        ):
            tunnel["tunnel"] = [words[index + 1], words[index + 2]]
            index += 3
        elif word in ("fib", "tunnelfib") and index + 1 < len(words) and words[index + 1].isdigit():
            fib = int(words[index + 1])
            if fib >= host.state["fibs"]:
                ioctl = "SIOCSIFFIB" if word == "fib" else "SIOCSTUNFIB"
                raise Refused(f"ifconfig: ioctl ({ioctl}): Invalid argument")
            # SIOCSIFFIB sets the FIB of what comes later; the routes of the addresses the
            # interface has stay where they are (sys/net/if.c): route_fib is not touched.
            tunnel[word] = fib
            index += 2
        elif word == "mtu" and index + 1 < len(words) and words[index + 1].isdigit():
            host.ip("link", "set", name, "mtu", words[index + 1])
            index += 2
        elif word == "tunnel":
            raise Refused("ifconfig: 'tunnel' requires 2 arguments")
        else:
            raise unused("ifconfig", words[index:])
    _apply_fib(host, name)


def _apply_fib(host: Host, name: str) -> None:
    """An interface in FIB N: received packets look up table N; its peer routes live there."""
    tunnel = host.state["tunnels"][name]
    host.drop_rules("fib", interface=name)
    fib = tunnel.get("fib", 0)
    if fib:
        host.add_rule("fib", ["iif", name, "lookup", str(fib)], interface=name)


def _ipv4(text: str) -> bool:
    return bool(re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", text))


def _create(host: Host, name: str) -> None:
    """What ``ifconfig NAME create`` does for a gif/gre: the lab's veth takes the name."""
    kind = name.rstrip("0123456789")
    module = MODULE_OF.get(kind)
    if module is None:
        raise Refused(f"ifconfig: SIOCIFCREATE2 ({name}): Invalid argument")
    if module not in host.state["modules"]:
        try:
            _load_module(host, module)  # ifconfig loads if_<kind> itself, if it may
        except Refused:
            raise Refused(f"ifconfig: SIOCIFCREATE2 ({name}): Invalid argument") from None
    present = {link["ifname"] for link in host.links()}
    if links.HIDDEN + name in present:
        host.ip("link", "set", links.HIDDEN + name, "down")
        host.ip("link", "set", links.HIDDEN + name, "name", name)
    else:  # a site the lab does not run: a tunnel to nowhere
        host.ip("link", "add", name, "type", "veth", "peer", "name", f"{links.HIDDEN}{name}p")
    host.ip("link", "set", name, "mtu", "1280" if kind == "gif" else "1476")
    host.state["tunnels"][name] = {
        "created": True,
        "tunnel": [],
        "fib": 0,
        "tunnelfib": 0,
        "up": False,
    }


def _destroy(host: Host, name: str) -> None:
    for address in [
        a for link in host.links() if link["ifname"] == name for a in link.get("addr_info", [])
    ]:
        host.ip(
            "addr", "del", f"{address['local']}/{address['prefixlen']}", "dev", name, check=False
        )
    host.ip("link", "set", name, "down")
    host.ip("link", "set", name, "name", links.HIDDEN + name)
    del host.state["tunnels"][name]
    host.drop_rules("fib", interface=name)


def _print_interfaces(host: Host) -> None:
    """``ifconfig`` as FreeBSD 14 prints it (sbin/ifconfig): header, description, tunnel,
    addresses, fib/tunnelfib (only when not 0)."""
    for link in host.links():
        name = link["ifname"]
        if name.startswith(links.HIDDEN):
            continue
        tunnel = host.state["tunnels"].get(name)
        flags = [f for f in ("UP",) if "UP" in link.get("flags", [])]
        if name == "lo0":
            flags.append("LOOPBACK")
        elif tunnel is not None:
            flags.append("POINTOPOINT")
        else:
            flags.append("BROADCAST")
        if tunnel is not None:
            # gif(4)/gre(4) are RUNNING once their outer addresses are set, whatever the far end
            # does (FreeBSD's if_gif.c, if_gre.c: SIOCSIFPHYADDR).
            running = bool(tunnel.get("tunnel"))
        else:
            running = "UP" in link.get("flags", []) and link.get("operstate") != "DOWN"
        if running or name == "lo0":
            flags.append("RUNNING")
        flags.append("MULTICAST")
        print(f"{name}: flags=8051<{','.join(flags)}> metric 0 mtu {link['mtu']}")
        if link.get("ifalias"):
            print(f"\tdescription: {link['ifalias']}")
        if tunnel and tunnel.get("tunnel"):
            print(f"\ttunnel inet {tunnel['tunnel'][0]} --> {tunnel['tunnel'][1]}")
        for address in link.get("addr_info", []):
            if address["family"] == "inet":
                print(f"\tinet {address['local']} netmask 0x{_mask4(address['prefixlen'])}")
            else:
                scope = f"%{name}" if address["local"].startswith("fe80:") else ""
                peer = f" --> {address['address']}" if "address" in address else ""
                print(f"\tinet6 {address['local']}{scope}{peer} prefixlen {address['prefixlen']}")
        if tunnel and tunnel.get("fib"):
            print(f"\tfib: {tunnel['fib']}")
        if tunnel and tunnel.get("tunnelfib"):
            print(f"\ttunnelfib: {tunnel['tunnelfib']}")


def _mask4(length: int) -> str:
    return f"{(0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF:08x}"


# --- route ------------------------------------------------------------------------------------


def route(host: Host, args: list[str]) -> int:
    if args[:4] == ["-n", "-6", "get", "-fib"] and len(args) == 6 and args[4].isdigit():
        return _route_get(host, int(args[4]), args[5])
    if len(args) >= 3 and args[0] == "-6" and args[1] in ("add", "change", "delete"):
        return _route_change(host, args[1], args[2:])
    raise unused("route", args)


def _route_args(words: list[str]) -> dict[str, Any]:
    """route(8)'s ``DEST [GATEWAY] [-interface IF] [-reject] [-fib N]`` (what ownas writes)."""
    if not words or not re.fullmatch(r"default|[0-9a-f:]+/\d{1,3}", words[0]):
        raise Refused(f"route: bad address: {words[0] if words else ''}", 68)
    parsed: dict[str, Any] = {"destination": words[0], "fib": 0}
    rest = words[1:]
    if rest and not rest[0].startswith("-"):
        parsed["gateway"] = rest.pop(0)
    while rest:
        flag = rest.pop(0)
        if flag == "-interface" and rest:
            parsed["interface"] = rest.pop(0)
        elif flag == "-reject":
            parsed["reject"] = True
        elif flag == "-fib" and rest and rest[0].isdigit():
            parsed["fib"] = int(rest.pop(0))
        else:
            raise unused("route", [flag])
    return parsed


# A tunnel is point-to-point: FreeBSD sends a ``-interface gif0`` route's packets to the far
# end. The lab's tunnel is a veth, where Linux would look up each destination's neighbour
# there instead, so such a route goes to the tunnel's inner peer address, marked with this
# protocol to be shown as the interface route it is.
P2P_PROTO = "static"
OWN_PROTOS = ("boot", P2P_PROTO)  # routes the route command made (Linux's default: boot)


def _route_change(host: Host, action: str, words: list[str]) -> int:
    parsed = _route_args(words)
    table = host.table(parsed["fib"])
    destination = parsed["destination"]
    target = ["unreachable", destination] if parsed.get("reject") else [destination]
    proto = "boot"
    if "gateway" in parsed:
        target += ["via", parsed["gateway"]]
    if "interface" in parsed:
        peer = _tunnel_peer(host, parsed["interface"]) if "gateway" not in parsed else None
        if peer is not None:
            target += ["via", peer]
            proto = P2P_PROTO
        target += ["dev", parsed["interface"]]
    fib_text = f" fib {parsed['fib']}" if host.state["fibs"] > 1 else ""
    gateway = parsed.get("gateway") or parsed.get("interface") or "::1"
    label = f"{action} net {destination}: gateway {gateway}{fib_text}"
    existing = _routes(host, table, destination)
    if action == "add" and existing:
        print(f"{label}: route already in table")
        raise Refused("route: message indicates error: File exists")
    if action != "add" and not existing:
        print(f"{label}: not in table")
        return 1
    if action == "delete":
        old = existing[0].get("protocol", "boot")
        host.ip("-6", "route", "del", destination, "table", table, "proto", old)
    else:
        verb = "add" if action == "add" else "replace"  # change: in place, as route(8) does
        host.ip("-6", "route", verb, *target, "table", table, "proto", proto)
    print(label)
    return 0


def _tunnel_peer(host: Host, interface: str) -> str | None:
    """The inner peer address of tunnel ``interface`` (None: not a tunnel, or no pair yet)."""
    if interface not in host.state["tunnels"]:
        return None
    for link in host.links():
        if link["ifname"] == interface:
            for address in link.get("addr_info", []):
                if address["family"] == "inet6" and "address" in address:
                    return address["address"]
    return None


def _routes(host: Host, table: str, destination: str) -> list[dict[str, Any]]:
    """The routes the route command made for exactly ``destination`` in ``table``."""
    shown = host.ip("-6", "-j", "route", "show", "table", table, "exact", destination, check=False)
    routes = json.loads(shown.stdout or "[]")
    return [r for r in routes if r.get("protocol", "boot") in OWN_PROTOS]


def _peer_route(host: Host, fib: int, destination: str) -> list[dict[str, Any]]:
    """A tunnel's far end as FreeBSD routes it: a host route in the FIB the interface had when
    its inner pair was added (Linux keeps its peer route in main; the lab's state knows)."""
    if not destination.endswith("/128"):
        return []
    for name, tunnel in host.state["tunnels"].items():
        if tunnel.get("route_fib", 0) == fib and _tunnel_peer(host, name) == destination[:-4]:
            return [{"dev": name, "protocol": P2P_PROTO, "host": True}]
    return []


def _route_get(host: Host, fib: int, destination: str) -> int:
    """As sbin/route's print_getmsg prints it for ``route -n -6 get -fib N DEST``."""
    table = host.table(fib)
    found = _routes(host, table, destination) or _peer_route(host, fib, destination)
    if not found:
        print("route: route has not been found", file=sys.stderr)
        return 1
    entry = found[0]
    gateway = entry.get("gateway") if entry.get("protocol") != P2P_PROTO else None
    prefix, _, length = ("::/0" if destination == "default" else destination).partition("/")
    flags = ["UP"] + (["GATEWAY"] if gateway else []) + ["DONE", "STATIC"]
    if entry.get("host"):
        flags = ["UP", "HOST", "DONE"]
    if entry.get("type") == "unreachable":
        flags.append("REJECT")
    shown = "default" if length == "0" else prefix
    print(f"   route to: {shown}")
    print(f"destination: {shown}")
    if length == "0":
        print("       mask: default")
    elif int(length or 128) < 128:
        print(f"       mask: {_mask6(int(length))}")
    if gateway:
        print(f"    gateway: {gateway}")
    print(f"        fib: {fib}")
    print(f"  interface: {entry.get('dev', 'lo0')}")
    print(f"      flags: <{','.join(flags)}>")
    return 0


def _mask6(length: int) -> str:
    import ipaddress

    return str(ipaddress.IPv6Network(f"::/{length}").netmask)


# --- pfctl -------------------------------------------------------------------------------------


def pfctl(host: Host, args: list[str]) -> int:
    from tasks.lab import pf

    pf_state = host.state["pf"]
    # pfctl -n parses without /dev/pf (sbin/pfctl/pfctl.c opens it only to act).
    if "pf" not in host.state["modules"] and args[:1] not in (["-nf"], ["-nvf"]):
        raise Refused("pfctl: /dev/pf: No such file or directory")
    if args == ["-s", "info"]:
        status = "Enabled" if pf_state["enabled"] else "Disabled"
        # As sbin/pfctl/pfctl_parser.c print_status prints it; the stand-in keeps no states.
        print(f"{f'Status: {status} for 0 days 00:01:00':<44}{'Debug: Urgent':>15}")
        print("")
        print(f"{'State Table':<27} {'Total':>14} {'Rate':>16}")
        print(f"  {'current entries':<25} {0:>14} {'':>14}")
        return 0
    if args == ["-sr"]:
        print("\n".join(pf_state["rules"]))
        return 0
    if args == ["-d"]:
        if not pf_state["enabled"]:
            raise Refused("pfctl: pf not enabled")
        pf_state["enabled"] = False
        print("pf disabled", file=sys.stderr)
        return 0
    if args == ["-e"]:
        if pf_state["enabled"]:
            raise Refused("pfctl: pf already enabled")
        pf_state["enabled"] = True
        print("pf enabled", file=sys.stderr)
        return 0
    if len(args) == 2 and args[0] in ("-nf", "-nvf", "-f"):
        path = args[1]
        try:
            ruleset = pf.parse(Path(path).read_text(), path, fibs=host.state["fibs"])
        except FileNotFoundError:
            raise Refused(f"pfctl: {path}: No such file or directory") from None
        except pf.PfError as error:
            raise Refused(str(error)) from None
        if args[0] == "-nvf":
            print("\n".join(ruleset.rules))
        if args[0] == "-f":
            pf_state["rules"] = ruleset.rules
            _pf_routing(host, ruleset)
            _lock_out(host, Path(path).read_text())
        return 0
    raise unused("pfctl", args)


def _lock_out(host: Host, pf_conf: str) -> None:
    """The lab's fault (Lab.lock_out): a loaded pf.conf with the marker cuts the management
    path, one without it restores it."""
    marker = host.state.get("lockout")
    cut = host.dir / "cut"
    if marker and marker in pf_conf:
        cut.touch()
    else:
        cut.unlink(missing_ok=True)


def _pf_routing(host: Host, ruleset: Any) -> None:
    """pf's policy routing, as Linux rules: ``rtable N`` on ``pass in on IF from SRC`` and
    ``reply-to (IF GW)`` on rules to DST (replies from DST take IF's FIB)."""
    host.drop_rules("pf")
    for source, interface, table in ruleset.rtables:
        spec = ([] if source == "any" else ["from", source]) + ["iif", interface]
        host.add_rule("pf", [*spec, "lookup", str(table)])
    for destination, interface, _gateway in ruleset.reply_to:
        fib = host.state["tunnels"].get(interface, {}).get("fib", 0)
        if destination != "any" and fib:
            host.add_rule("pf", ["from", destination, "lookup", str(fib)])


# --- service ------------------------------------------------------------------------------------


def service(host: Host, args: list[str]) -> int:
    if args[:2] == ["-j", ""]:  # no jail (usr.sbin/service/service.sh: [ -n "${JAIL}" ])
        args = args[2:]
    if args == ["frr", "restart", "bgpd"]:  # bgpd alone, asked for (--data restart_bgpd=yes)
        return _frr(host, "restart", "bgpd")
    if len(args) >= 2 and args[1] == "restart" and args[0] in ("netif", "routing", "pf", "frr"):
        raise Refused(f"ownas lab: `service {' '.join(args)}` takes a live network down; refused")
    if len(args) == 2 and args[0] in VALIDATOR_CONFIGS and args[1] in VALIDATOR_ACTIONS:
        return _validator(host, args[0], args[1])
    if args[:2] == ["netif", "start"] and len(args) == 3:
        return _netif_start(host, args[2])
    if args in (["pflog", "start"], ["pflog", "status"]):
        return _pflog(host, args[1])
    if args in (["frr", "start"], ["frr", "status"], ["frr", "onestop"]):
        return _frr(host, args[1])
    raise unused("service", args)


def _rc(fragment: str, *names: str) -> dict[str, str]:
    """Variables as an rc script sees them: rc.conf, rc.conf.local, then /etc/rc.conf.d/NAME."""
    sources = ["/etc/rc.conf", "/etc/rc.conf.local", f"/etc/rc.conf.d/{fragment}"]
    script = "".join(f"[ -f {s} ] && . {s}; " for s in sources)
    script += "".join(f'printf "%s\\0" "${n}"; ' for n in names)
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return dict(zip(names, output.stdout.split("\0"), strict=False))


def _require_enabled(name: str) -> None:
    """rc.subr's check for ``service NAME start``: NAME_enable must say yes."""
    if _rc(name, f"{name}_enable")[f"{name}_enable"].upper() not in ("YES", "TRUE", "ON", "1"):
        raise Refused(
            f"Cannot 'start' {name}. Set {name}_enable to YES in /etc/rc.conf or use "
            "'onestart' instead of 'start'."
        )


def _netif_start(host: Host, name: str) -> int:
    variables = _rc(
        "netif",
        "cloned_interfaces",
        f"ifconfig_{name}",
        f"ifconfig_{name}_ipv6",
        f"ifconfig_{name}_descr",
    )
    if name not in variables["cloned_interfaces"].split():
        raise Refused(f"ifconfig: interface {name} does not exist")
    if name not in host.state["tunnels"]:
        _create(host, name)
    if variables[f"ifconfig_{name}"]:
        _tunnel_settings(host, name, variables[f"ifconfig_{name}"].split())
    inet6 = variables[f"ifconfig_{name}_ipv6"].split()
    if inet6[:1] == ["inet6"]:
        _add_inet6(host, name, inet6[1:])
    if variables[f"ifconfig_{name}_descr"]:
        host.ip("link", "set", name, "alias", variables[f"ifconfig_{name}_descr"])
    host.state["tunnels"][name]["up"] = True
    host.ip("link", "set", name, "up")
    # rc.d/routing static any IF: the routes named NAME:IF.
    routing = _rc("routing", "ipv6_static_routes")["ipv6_static_routes"].split()
    for entry in routing:
        if entry.endswith(f":{name}"):
            variable = "ipv6_route_" + re.sub(r"[.\-/+]", "_", entry.split(":")[0])
            args = _rc("routing", variable)[variable].split()
            try:
                _route_change(host, "add", args)
            except Refused as error:
                print(error, file=sys.stderr)
    return 0


def _pflog(host: Host, action: str) -> int:
    if action == "status":
        return 0 if "pflog" in host.state["services"] else 1
    _require_enabled("pflog")
    _load_module(host, "pflog")
    if "pflog" not in host.state["services"]:
        host.state["services"].append("pflog")
    return 0


def _frr(host: Host, action: str, daemon: str | None = None) -> int:
    running: dict[str, int] = host.state.get("frr_pids", {})
    running_now = bool(running) and all(alive(pid) for pid in running.values())
    if action == "onestop":
        for pid in running.values():  # the daemons this stand-in started, by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        host.state["frr_pids"] = {}
        return 0
    if action == "status":
        if running_now:
            print(f"watchfrr is running as pid {next(iter(running.values()))}.")
            return 0
        print("watchfrr is not running.")
        return 1
    if "frr10" not in host.state["packages"]:
        raise Refused("frr does not exist in /etc/rc.d or the local startup directories")
    _require_enabled("frr")
    if action == "restart":  # one daemon (rc.d/frr do_cmd stop, start), then `vtysh -b`
        if daemon not in running:
            raise Refused(f"frr: {daemon} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(running[daemon], signal.SIGTERM)
        for _ in range(100):
            if not alive(running[daemon]):
                break
            time.sleep(0.05)
        running[daemon] = _start_daemon(daemon)
    else:
        if running_now:
            print("frr already running?")
            return 1
        daemons = _rc("frr", "frr_daemons")["frr_daemons"].split()
        running = {name: _start_daemon(name) for name in daemons}
    host.state["frr_pids"] = running
    host.save()
    boot = subprocess.run(
        [str(host.lab / "bin/vtysh"), "-b", "--config_dir", FRR_CONFDIR],
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(boot.stdout)
    sys.stderr.write(boot.stderr)
    return boot.returncode


def _start_daemon(daemon: str) -> int:
    """Start one FRR daemon as watchfrr does (no vty port, no per-daemon file: FRR 10's mgmtd
    and bgpd have no -f, and the root's /etc/frr has no zebra.conf or staticd.conf), with its
    rc.conf flags; return its PID. FRR 10 from the Debian 13 root, where tasks.lab.init bound
    this host's /run/frr and /usr/local."""
    binary = f"/usr/lib/frr/{daemon}"
    if not (debian13.ROOT / binary.lstrip("/")).exists():
        raise Refused(f"frr: {daemon}: no such daemon")
    pid_file = f"/run/frr/{daemon}.pid"
    argv = ["chroot", str(debian13.ROOT), binary, "-d", "-P", "0", *_daemon_flags(daemon)]
    log = ["-i", pid_file, "--log", f"file:/run/frr/{daemon}.log"]
    # Its standard files on a file, not a pipe: the daemon keeps them open (FRR 10), and a
    # pipe's reader would wait for it to end.
    with open(f"/run/frr/{daemon}.start", "w+") as output:
        started = subprocess.run([*argv, *log], stdout=output, stderr=output, check=False)
        output.seek(0)
        if started.returncode != 0:
            raise Refused(f"frr: {daemon} did not start: {output.read().strip()}")
    return int(Path(pid_file).read_text().strip())


def _daemon_flags(daemon: str) -> list[str]:
    """rc.d/frr's ``DAEMON_flags`` (default ``-A 127.0.0.1``), of the words the deploy writes:
    ``-A 127.0.0.1`` (the vty address; the lab runs no vty port anyway) and ``-M rpki``."""
    variable = f"{daemon}_flags"
    words = (_rc("frr", variable)[variable] or "-A 127.0.0.1").split()
    pairs = list(zip(words[::2], words[1::2], strict=False))
    if len(words) % 2 or any(pair not in (("-A", "127.0.0.1"), ("-M", "rpki")) for pair in pairs):
        raise unused(f"rc.conf {variable}=", words)
    return [word for pair in pairs if pair[0] == "-M" for word in pair]


# --- RPKI validators: stayrtr serves the lab's ROAs in their place ---------------------------

# The config each FreeBSD rc script passes (rc.d/routinator: -c %%ETCDIR%%/routinator.conf;
# rc.d/fort: --configuration-file=%%ETCDIR%%/fort-config.json), and the directory its
# check_init wants before it starts ("Need to initialize ... with tals").
VALIDATOR_CONFIGS = {
    "routinator": "/usr/local/etc/routinator/routinator.conf",
    "fort": "/usr/local/etc/fort/fort-config.json",
}
VALIDATOR_INIT = {"routinator": "/var/routinator/tals", "fort": "/usr/local/etc/fort/tal"}
# routinator.conf keys the deploy writes; routinator refuses a config file without
# repository-dir, and unknown keys (src/config.rs, take_mandatory_path, check_exhausted).
ROUTINATOR_KEYS = ("repository-dir", "rtr-listen")
VALIDATOR_ACTIONS = ("start", "status", "restart")
RIR_TALS = ("afrinic", "apnic", "arin", "lacnic", "ripe-ncc")


def _add_user(name: str, uid: int) -> None:
    """A system user and its group in the host's own /etc, as pkg adds them."""
    passwd, group = Path("/etc/passwd"), Path("/etc/group")
    if not re.search(rf"^{name}:", passwd.read_text(), re.M):
        with passwd.open("a") as lines:
            lines.write(f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n")
    if not re.search(rf"^{name}:", group.read_text(), re.M):
        with group.open("a") as lines:
            lines.write(f"{name}:x:{uid}:\n")


def _routinator_listen(path: Path) -> list[str]:
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise Refused(f"Failed to read config file {path}: {error}") from None
    unknown = sorted(set(config) - set(ROUTINATOR_KEYS))
    if unknown:
        raise Refused(f"Unknown settings {', '.join(unknown)} in config file {path}")
    if "repository-dir" not in config:
        raise Refused(f"Failed in config file {path}: missing required 'repository-dir'.")
    return [str(address) for address in config.get("rtr-listen", [])]


def _fort_listen(path: Path) -> list[str]:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise Refused(f"{path}: {error}") from None
    if "tal" not in config:
        raise Refused("The TAL(s) location (--tal) is mandatory.")
    server = config.get("server", {})
    port = server.get("port", "323")
    # FORT's default on FreeBSD is every address (src/config.c): the deploy must name one.
    addresses = server.get("address", ["0.0.0.0", "::"])
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


def routinator(host: Host, args: list[str]) -> int:
    """``routinator -c FILE config``: the deploy's check of a staged routinator.conf."""
    if "routinator" not in host.state["packages"]:
        raise Refused("routinator: not found", 127)
    if len(args) != 3 or args[0] != "-c" or args[2] != "config":
        raise unused("routinator", args)
    listen = _routinator_listen(Path(args[1]))
    print(f"rtr-listen = {json.dumps(listen)}")
    return 0


def fort(host: Host, args: list[str]) -> int:
    """``fort --init-tals --tal DIR``: writes the five RIR TALs (stand-ins: fort fetches them)."""
    if "fort" not in host.state["packages"]:
        raise Refused("fort: not found", 127)
    if len(args) != 3 or args[:2] != ["--init-tals", "--tal"]:
        raise unused("fort", args)
    directory = Path(args[2])
    if not directory.is_dir():
        raise Refused(f"{directory}: not a directory")
    for rir in RIR_TALS:
        (directory / f"{rir}.tal").write_text("# ownas lab: stand-in (fort fetches the RIR's)\n")
    return 0


def _validator(host: Host, name: str, action: str) -> int:
    """``service routinator|fort start|status|restart``: stayrtr in its place, serving the lab's
    ROAs where the config ownas wrote says the validator listens."""
    if name not in host.state["packages"]:
        raise Refused(f"{name} does not exist in /etc/rc.d or the local startup directories")
    validators = host.state.setdefault("validators", {})
    pid = validators.get(name)
    running = pid is not None and alive(pid)
    if action == "status":
        print(f"{name} is running as pid {pid}." if running else f"{name} is not running.")
        return 0 if running else 1
    _require_enabled(name)
    if running and action == "start":
        print(f"{name} already running?  (pid={pid}).")
        return 1
    if running:
        os.kill(pid, signal.SIGTERM)
    if not Path(VALIDATOR_INIT[name]).is_dir():
        raise Refused(f"Need to initialize {name} with tals, {VALIDATOR_INIT[name]} is missing")
    config = Path(VALIDATOR_CONFIGS[name])
    listen = _routinator_listen(config) if name == "routinator" else _fort_listen(config)
    if len(listen) != 1:
        raise unused(f"{name} listening on", listen)
    with open(host.dir / f"{name}.log", "ab") as log:
        child = subprocess.Popen(
            debian13.stayrtr(host.lab / debian13.ROAS, listen[0]),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    validators[name] = child.pid
    print(f"ownas lab: stayrtr serves the lab's ROAs on {listen[0]} in place of {name}")
    return 0


# --- daemon -----------------------------------------------------------------------------------


def daemon(host: Host, args: list[str]) -> int:
    """``daemon -f -p PIDFILE COMMAND...`` (daemon(8)): COMMAND detached from the session,
    its standard files on /dev/null, its PID in PIDFILE."""
    if len(args) < 4 or args[:2] != ["-f", "-p"]:
        raise unused("daemon", args)
    child = subprocess.Popen(
        args[3:],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    Path(args[2]).write_text(f"{child.pid}\n")
    return 0


# --- sockstat ------------------------------------------------------------------------------------


def sockstat(host: Host, args: list[str]) -> int:
    """``sockstat -46lLq -P tcp,udp`` from what listens in the host's namespace (ss), printed
    as usr.bin/sockstat prints rows: USER COMMAND PID FD PROTO LOCAL FOREIGN."""
    if args != ["-46lLq", "-P", "tcp,udp"]:
        raise unused("sockstat", args)
    shown = subprocess.run(["ss", "-Hltunp"], capture_output=True, text=True, check=True)
    for line in shown.stdout.splitlines():
        words = line.split()
        proto, local = words[0], words[4]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address.startswith("127.") or address == "::1":
            continue  # -L
        family = "46" if address in ("*", "::", "0.0.0.0") else ("6" if ":" in address else "4")
        shown_address = "*" if address in ("*", "::", "0.0.0.0") else address
        command = re.search(r'"([^"]+)"', line)
        name = command[1] if command else "?"
        print(f"root     {name:<10.10} {1:5} 3   {proto + family:<6} {shown_address}:{port} *:*")
    return 0


# --- pkg, ping, setfib ---------------------------------------------------------------------------


def pkg(host: Host, args: list[str]) -> int:
    if len(args) == 4 and args[:3] == ["info", "-E", "--"]:
        if args[3] in host.state["packages"]:
            print(f"{args[3]}-{PACKAGES[args[3]]}")
            return 0
        return 1
    if len(args) == 4 and args[:3] == ["install", "-y", "--"]:
        package = args[3]
        if package not in PACKAGES:
            raise Refused(f"ownas lab: the lab's pkg has only {', '.join(PACKAGES)}, not {package}")
        if package == "frr10-pythontools":
            wrapper = Path("/usr/local/sbin/frr-reload.py")
            wrapper.parent.mkdir(parents=True, exist_ok=True)
            wrapper.write_text(debian13.wrapper("frr-reload.py"))
            wrapper.chmod(0o755)
        elif package == "frr10":
            Path(FRR_CONFDIR).mkdir(parents=True, exist_ok=True)
        elif package == "routinator":
            # net/routinator's USERS/GROUPS: pkg adds the user the rc script runs it as.
            _add_user("routinator", 245)
        elif package == "fort":
            # net/fort's post-install: the (empty) TAL and repository directories.
            for directory in ("/usr/local/etc/fort/tal", "/usr/local/etc/fort/repository"):
                Path(directory).mkdir(parents=True, exist_ok=True)
        if package not in host.state["packages"]:
            host.state["packages"].append(package)
        print(f"Installing {package}-{PACKAGES[package]}...")
        return 0
    raise unused("pkg", args)


def ping(host: Host, args: list[str]) -> int:
    words = list(args)
    if words[:2] != ["-6", "-c"] or len(words) < 4 or not words[2].isdigit():
        raise unused("ping", args)
    command = ["/usr/bin/ping", "-6", "-c", words[2], "-i", "0.2", "-W", "1"]
    rest = words[3:]
    if rest[:1] == ["-S"] and len(rest) == 3:
        command += ["-I", rest[1]]
        rest = rest[2:]
    if len(rest) != 1:
        raise unused("ping", args)
    mark = os.environ.get("OWNAS_LAB_FIB")
    if mark:
        command += ["-m", mark]
    result = subprocess.run([*command, rest[0]], check=False)
    return {0: 0, 1: 2}.get(result.returncode, 68)


def setfib(host: Host, args: list[str]) -> int:
    if len(args) < 2 or not args[0].isdigit() or args[1] != "ping":
        raise Refused("ownas lab: setfib runs only ping here")
    fib = int(args[0])
    host.table(fib)  # the FIB must exist
    if fib:
        priority = RULE_PRIORITY["mark"] + fib
        rules = host.ip("-6", "rule", "show", "priority", str(priority)).stdout
        if not rules.strip():
            host.ip(
                "-6",
                "rule",
                "add",
                "priority",
                str(priority),
                "fwmark",
                str(fib),
                "lookup",
                str(fib),
            )
        os.environ["OWNAS_LAB_FIB"] = str(fib)
    return ping(host, args[2:])


COMMANDS = {
    "uname": uname,
    "sysctl": sysctl,
    "kldstat": kldstat,
    "kldload": kldload,
    "ifconfig": ifconfig,
    "route": route,
    "pfctl": pfctl,
    "service": service,
    "pkg": pkg,
    "ping": ping,
    "setfib": setfib,
    "sockstat": sockstat,
    "daemon": daemon,
    "routinator": routinator,
    "fort": fort,
}
# What changes the state of a tunnel, and therefore its link.
TUNNEL_COMMANDS = ("ifconfig", "service")
# Stand-ins that change nothing the lab keeps (setfib's policy rule is the same each time).
READ_ONLY = ("ping", "setfib")


def _running_for() -> float:
    """Seconds since this process started: the launcher's sh and Python's own start included
    (proc(5): /proc/self/stat field 22, starttime, in clock ticks since boot)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    host = Host()
    with contextlib.ExitStack() as locks:
        # A command that changes tunnels changes the lab's links: the lab's lock, then the
        # host's. A ping only reads (several run at once, as a check sends them).
        if command in TUNNEL_COMMANDS:
            locks.enter_context(links.locked(host.lab))
        if command not in READ_ONLY:
            locks.enter_context(links.locked(host.dir))
        host.state = links.load_state(host.dir)
        try:
            status = COMMANDS[command](host, args)
            if command not in READ_ONLY:
                host.save()  # a refused command line records nothing of what it parsed so far
        except Refused as refused:
            print(refused, file=sys.stderr)
            status = refused.status
        except Exception as error:  # a stand-in bug: still logged, and no traceback on the host
            print(f"ownas lab: stand-in {command} failed: {error!r}", file=sys.stderr)
            status = 70
        if command in TUNNEL_COMMANDS:
            links.reconcile(host.lab)
    with open(host.dir / "log.jsonl", "a") as log:
        seconds, ended = round(_running_for(), 3), round(time.time(), 3)
        entry = {"command": [command, *args], "exit": status, "s": seconds, "t": ended}
        log.write(json.dumps(entry) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
