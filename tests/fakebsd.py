"""A strict in-memory FreeBSD 14 for flow tests of deploy.py, behind pyinfra's @fake connector.

Each simulated host keeps the state the deploy reads and changes (files, interfaces, routes per
FIB, pf, FRR, modules, sysctls) and understands exactly the command shapes tasks.freebsd and
pyinfra's file facts build. Any other command fails, as an unknown command would on FreeBSD.
Real programs do what they can here: ``sh -n`` checks staged rc fragments, ``vtysh --dryrun``
staged frr.conf, and ``service netif start`` reads the installed fragments with /bin/sh.
Only FreeBSD's own commands are simulated.

Run pyinfra with a world:  python -m tests.fakebsd WORLD.json -- <pyinfra arguments>
The world (hosts and every command they ran, in order) is read from and written back to the
JSON file, so a test can run the deploy several times and inspect what happened.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netaddr import IPAddress, IPNetwork

from tasks import freebsd
from tasks.lab import debian13, pf
from tasks.lab.standin import ROUTINATOR_KEYS

MISSING = "__pyinfra_missing_"
FORWARDING = ("net.inet6.ip6.forwarding", "net.inet.ip.forwarding")
RFC6204W3 = "net.inet6.ip6.rfc6204w3"
TIMER = "/var/db/ownas/timer.pid"


@dataclass
class Iface:
    tunnel: list[str] | None = None
    inet: list[str] = field(default_factory=list)
    inet6: list[list[Any]] = field(default_factory=list)  # [address, peer or None, prefixlen]
    fib: int = 0
    # The FIB its addresses' routes went to: the interface's FIB when they were added.
    # SIOCSIFFIB changes ``fib`` alone (sys/net/if.c), so a later move leaves them here.
    route_fib: int = 0
    tunnelfib: int = 0
    mtu: int = 1280
    description: str = ""
    up: bool = True
    kind: str = "ether"


@dataclass
class Host:
    name: str
    release: str = "14.3-RELEASE"
    securelevel: int = -1
    shell: str = "/bin/sh"
    ssh_client: str = "198.51.100.100"
    modules: list[str] = field(default_factory=lambda: ["if_gif"])
    fibs: int = 1
    forwarding: dict[str, int] = field(default_factory=dict)  # sysctl name -> value
    files: dict[str, str] = field(default_factory=dict)
    interfaces: dict[str, Iface] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)  # "fib dest" -> route
    packages: list[str] = field(default_factory=list)
    pf_enabled: bool = False
    pf_loaded: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    frr_running: str | None = None  # the configuration FRR runs
    frr_connections: dict[str, int] = field(default_factory=dict)
    bgpd_modules: list[str] = field(default_factory=list)  # what bgpd loaded when it started
    rtr_down: bool = False  # no RTR cache answers
    roas: int = 0  # the ROAs FRR holds (kept when the caches go away, freed by rpki reset)
    rpki_invalid: list[str] = field(default_factory=list)  # accepted routes FRR says are invalid
    policy_stale: bool = False  # a ROA changed and FRR did not apply the policy again
    fail: list[str] = field(default_factory=list)  # command prefixes that must fail
    # Listening sockets: [proto, address, port, command] (sockstat -l).
    sockets: list[list[Any]] = field(default_factory=lambda: [["tcp", "*", 22, "sshd"]])
    # A router on the uplink (vtnet0) that sends router advertisements, which vtnet0 accepts:
    # the FIB 0 default route comes from them, and goes when the host forwards IPv6 without
    # net.inet6.ip6.rfc6204w3 (nd6_ra_input zeroes the router lifetime; nd6_rtr.c).
    ra_router: str | None = None


@dataclass
class World:
    hosts: dict[str, Host]
    log: list[list[str]] = field(default_factory=list)  # [host, command] in order
    upstreams_down: list[str] = field(default_factory=list)  # BGP peers that never answer

    @staticmethod
    def load(path: Path) -> World:
        raw = json.loads(path.read_text())
        hosts = {}
        for name, data in raw["hosts"].items():
            data["interfaces"] = {k: Iface(**v) for k, v in data["interfaces"].items()}
            hosts[name] = Host(**data)
        return World(hosts, raw["log"], raw["upstreams_down"])

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    def run(self, name: str, command: str) -> tuple[bool, list[str], list[str]]:
        self.log.append([name, command])
        return Machine(self, self.hosts[name]).run(command)

    def upload(self, name: str, path: str, content: str) -> None:
        self.log.append([name, f"upload {path}"])
        self.hosts[name].files[path] = content


def pf_rules(content: str, fibs: int = 16) -> list[str]:
    """What pfctl prints for ``content``: the lab's strict stand-in parser does the parsing."""
    return pf.parse(content, fibs=fibs).rules


def rc_values(content: str, *names: str) -> dict[str, str]:
    """Source an rc fragment with the real /bin/sh and read variables from it."""
    with tempfile.NamedTemporaryFile("w", suffix=".rc") as fragment:
        fragment.write(content)
        fragment.flush()
        script = f'. "{fragment.name}"; ' + "".join(f'printf "%s\\0" "${n}"; ' for n in names)
        output = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return dict(zip(names, output.stdout.split("\0"), strict=False))


def route_key(destination: str, fib: int) -> str:
    network = IPNetwork("::/0") if destination == "default" else IPNetwork(destination)
    return f"{fib} {network.cidr}"


class Machine:
    """Runs one command on one simulated host."""

    def __init__(self, world: World, host: Host) -> None:
        self.world, self.host = world, host

    def run(self, command: str) -> tuple[bool, list[str], list[str]]:
        if any(command.startswith(prefix) for prefix in self.host.fail):
            return False, [], [f"{command.split()[0]}: failed (fakebsd: told to fail)"]
        self.command = command
        for pattern, handler in HANDLERS:
            match = re.fullmatch(pattern, command)
            if match:
                return handler(self, *match.groups())
        return False, [], [f"fakebsd: unsupported command: {command}"]

    # --- reading ---------------------------------------------------------------------------

    def uname(self):
        return True, [f"FreeBSD {self.host.release}"], []

    def sysctl_show(self, names):
        """sysctl(8) without -n: ``name: value`` (sbin/sysctl/sysctl.c show_var)."""
        values = {"kern.securelevel": self.host.securelevel, "net.fibs": self.host.fibs}
        values.update({n: self.host.forwarding.get(n, 0) for n in (*FORWARDING, RFC6204W3)})
        return self.ok(*[f"{n}: {values[n]}" for n in names.split()])

    def composite(self):
        """facts.HostState: sections, each ``echo '@@ownas-TOKEN N@@'; COMMAND``, joined by
        ``; ``, run in turn."""
        output = []
        for part in re.split(f"; (?=echo '{_MARK}')", self.command):
            section = re.fullmatch(f"echo '({_MARK})'(?:; (.+))?", part)
            if section is None:
                return False, [], [f"fakebsd: not a section of a composite read: {part}"]
            output.append(section[1])
            if section[2]:
                output += Machine(self.world, self.host).run(section[2])[1]
        return self.ok(*output)

    def ok(self, *lines):
        return True, list(lines), []

    def shell(self):
        return self.ok(self.host.shell)

    def ssh_client(self):
        return self.ok(f"{self.host.ssh_client} 50222 22")

    def kldstat(self, names):
        return self.ok(*[m for m in names.split() if m in self.host.modules])

    def cat(self, path, flag):
        if path in self.host.files:
            return self.ok(*self.host.files[path].splitlines())
        return self.ok(flag)

    def sha256(self, path):
        import hashlib

        if path not in self.host.files:
            return self.ok()
        digest = hashlib.sha256(self.host.files[path].encode()).hexdigest()
        return self.ok(f"SHA256 ({path}) = {digest}")

    def rc_conf(self):
        lines = [f"{k}={shlex.quote(v)}" for k, v in self._rc_conf().items()]
        return self.ok("OPTIND=1", *lines)

    def _rc_conf(self) -> dict[str, str]:
        content = self.host.files.get("/etc/rc.conf", "")
        return dict(re.findall(r'^([A-Za-z_][A-Za-z0-9_]*)="(.*)"$', content, re.M))

    def ifconfig(self):
        lines = []
        for name, i in self.host.interfaces.items():
            flags = ["UP"] if i.up else []
            flags += (
                ["LOOPBACK"] if name == "lo0" else ["POINTOPOINT"] if i.tunnel is not None else []
            )
            flags += ["RUNNING", "MULTICAST"] if i.up else ["MULTICAST"]
            lines.append(f"{name}: flags=8051<{','.join(flags)}> metric 0 mtu {i.mtu}")
            if i.description:
                lines.append(f"\tdescription: {i.description}")
            if i.tunnel:
                lines.append(f"\ttunnel inet {i.tunnel[0]} --> {i.tunnel[1]}")
            lines += [f"\tinet {a} netmask 0xffffff00" for a in i.inet]
            for address, peer, length in i.inet6:
                arrow = f" --> {peer}" if peer else ""
                lines.append(f"\tinet6 {address}{arrow} prefixlen {length}")
            if i.fib:
                lines.append(f"\tfib: {i.fib}")
            if i.tunnelfib:
                lines.append(f"\ttunnelfib: {i.tunnelfib}")
            if name == "vtnet0" and self.host.ra_router:
                lines.append("\tnd6 options=23<PERFORMNUD,ACCEPT_RTADV,AUTO_LINKLOCAL>")
        return self.ok(*lines)

    def _ra_default(self) -> dict[str, Any] | None:
        forwarding = self.host.forwarding.get(FORWARDING[0], 0) == 1
        if self.host.ra_router is None or (forwarding and not self.host.forwarding.get(RFC6204W3)):
            return None
        return {"gateway": f"{self.host.ra_router}%vtnet0", "interface": "vtnet0", "ra": True}

    def route_get(self, fib, destination):
        route = self.host.routes.get(route_key(destination, int(fib)))
        if route is None and destination == "default" and fib == "0":
            route = self._ra_default()
        if route is None:
            route = self._peer_route(destination, int(fib))
        if route is None:
            return self.ok()
        network = IPNetwork("::/0") if destination == "default" else IPNetwork(destination)
        lines = [
            f"   route to: {network.network}",
            f"destination: {network.network}",
            f"       mask: {network.netmask}",
        ]
        flags = ["UP", "HOST", "DONE"] if route.get("peer") else ["UP", "DONE", "STATIC"]
        if route.get("ra"):
            flags = ["UP", "DONE"]
        if route.get("gateway"):
            lines.append(f"    gateway: {route['gateway']}")
            flags.insert(1, "GATEWAY")
        if route.get("reject"):
            flags.append("REJECT")
        lines += [f"        fib: {fib}", f"  interface: {route.get('interface') or 'lo0'}"]
        lines.append(f"      flags: <{','.join(flags)}>")
        return self.ok(*lines)

    def _peer_route(self, destination: str, fib: int) -> dict[str, Any] | None:
        """The host route to a point-to-point far end, in the FIB its address went to."""
        if not destination.endswith("/128"):
            return None
        for name, interface in self.host.interfaces.items():
            for _address, peer, _length in interface.inet6:
                if peer and f"{peer}/128" == destination and interface.route_fib == fib:
                    return {"interface": name, "peer": True}
        return None

    def sockstat(self):
        """As usr.bin/sockstat prints -46lLq rows: USER COMMAND PID FD PROTO LOCAL FOREIGN."""
        rows = []
        for index, (proto, address, port, command) in enumerate(self.host.sockets):
            family = "6" if ":" in address else "4" if address != "*" else "46"
            local = f"{address}:{port}"
            pid, proto = 1000 + index, proto + family
            rows.append(f"root     {command:<10.10} {pid:5} 3   {proto:<6} {local:<21} *:*")
        return self.ok(*rows)

    def pf_info(self):
        if "pf" not in self.host.modules:
            return self.ok()
        state = "Enabled" if self.host.pf_enabled else "Disabled"
        # sbin/pfctl/pfctl_parser.c print_status
        return self.ok(
            f"{f'Status: {state} for 0 days 00:10:00':<44}{'Debug: Urgent':>15}",
            "",
            f"{'State Table':<27} {'Total':>14} {'Rate':>16}",
            f"  {'current entries':<25} {len(self.host.pf_loaded):>14} {'':>14}",
        )

    def pf_shown(self):
        return self.ok(*self.host.pf_loaded)

    def pf_expanded(self, path):
        return self.ok(*pf_rules(self.host.files.get(path, ""), self.host.fibs))

    def service_status(self, service):
        running = service in self.host.services or (service == "frr" and self.host.frr_running)
        return self.ok("running" if running else "")

    def pkg_info(self, package):
        return self.ok(f"{package}-10.5.1" if package in self.host.packages else "")

    def bgp_neighbors(self):
        return self.ok(json.dumps(self._sessions()))

    def _sessions(self) -> dict[str, Any]:
        if not self.host.frr_running:
            return {}
        sessions = {}
        for peer in re.findall(r"^ neighbor (\S+) remote-as", self.host.frr_running, re.M):
            up = peer not in self.world.upstreams_down and self._reaches(peer)
            sessions[peer] = {
                "bgpState": "Established" if up else "Active",
                "connectionsEstablished": self.host.frr_connections.get(peer, 0),
            }
        return sessions

    def _reaches(self, peer: str) -> bool:
        """The peer is on a configured, up link (WAN subnet or a tunnel's far inner end)."""
        for interface in self.host.interfaces.values():
            for address, far, length in interface.inet6:
                if not interface.up:
                    continue
                if far == peer or (
                    far is None and IPAddress(peer) in IPNetwork(f"{address}/{length}")
                ):
                    return True
        return False

    def advertised(self, peer):
        running = self.host.frr_running or ""
        sessions = self._sessions()
        routes = {}
        if sessions.get(peer, {}).get("bgpState") == "Established":
            for prefix in re.findall(r"^  network (\S+)$", running, re.M):
                # bgp network import-check: only a prefix with that exact route in zebra's RIB
                # (a kernel route, or a static of FRR's own) is announced.
                static = re.search(rf"^ipv6 route {re.escape(prefix)} ", running, re.M)
                if route_key(prefix, 0) in self.host.routes or static:
                    routes[prefix] = {"network": prefix}
        return self.ok(json.dumps({"advertisedRoutes": routes}))

    def frr_test(self, path, quiet):
        if not self.host.frr_running:
            return False, [], ["vtysh: failed to connect to any daemons."]
        if self.host.files.get(path) is None:
            return False, [], [f"Filename {path} does not exist"]
        if quiet or self.host.files[path] == self.host.frr_running:
            return self.ok()
        return self.ok("", "Lines To Add", "============", "(the configuration differs)")

    def pings(self, _last):
        """freebsd.pings: every ``{ PING >/dev/null 2>&1 && echo 'reply N'; } &``, then wait."""
        job = (
            r"\{ (?:setfib (\d+) )?ping -6 -c 3 (?:-S (\S+) )?(\S+) >/dev/null 2>&1 "
            r"&& echo 'reply (\d+)'; \} &"
        )
        replies = [
            f"reply {m[4]}" for m in re.finditer(job, self.command) if self.ping(*m.groups()[:3])
        ]
        return self.ok(*replies, "pinged")

    def ping(self, fib, source, address) -> bool:
        fib_n = int(fib or 0)
        for name, interface in self.host.interfaces.items():
            for local, far, _length in interface.inet6:
                if far != address or interface.fib != fib_n or not interface.up:
                    continue
                if source and source != local and not self._own_address(source):
                    continue
                return self._far_end_answers(name, interface)
        return False

    def _own_address(self, address: str) -> bool:
        return any(a == address for i in self.host.interfaces.values() for a, _p, _l in i.inet6)

    def _far_end_answers(self, name: str, interface: Iface) -> bool:
        """A tunnel works when the far host has a tunnel naming us back with the mirrored pair."""
        if interface.tunnel is None:
            return False
        for other in self.world.hosts.values():
            if other is self.host:
                continue
            for far in other.interfaces.values():
                if far.tunnel == [interface.tunnel[1], interface.tunnel[0]] and far.up:
                    mine = {(a, p) for a, p, _l in interface.inet6}
                    theirs = {(p, a) for a, p, _l in far.inet6}
                    return bool(mine & theirs)
        # An upstream (not simulated) answers on its configured tunnel.
        return name.startswith("gre")

    # --- changing --------------------------------------------------------------------------

    def mkdir(self, _path):
        return self.ok()

    def validate_real(self, path):
        """sh -n, vtysh --dryrun and grep are real here: run the very command on a copy (in
        /tmp, where FRR 10's vtysh from the Debian 13 root sees it too)."""
        content = self.host.files.get(path)
        if content is None:
            return False, [], [f"{path}: No such file or directory"]
        with tempfile.NamedTemporaryFile("w") as copy:
            copy.write(content)
            copy.flush()
            command = self.command.replace(path, copy.name)
            path_with_frr10 = f"{debian13.BIN}:{os.environ['PATH']}"
            result = subprocess.run(
                ["sh", "-c", command],
                capture_output=True,
                text=True,
                env={**os.environ, "PATH": path_with_frr10},
            )
        return result.returncode == 0, result.stdout.splitlines(), result.stderr.splitlines()

    def validate_pf(self, path):
        content = self.host.files.get(path)
        if content is None:
            return False, [], [f"pfctl: {path}: No such file or directory"]
        try:
            pf.parse(content, path, fibs=self.host.fibs)
        except pf.PfError as error:
            refused = re.search(r"echo '([^']*)' >&2", self.command)
            return False, [], [str(error)] + ([refused.group(1)] if refused else [])
        return self.ok()

    def install(self, target, _target2, _prev, new, _target3, marker=None):
        if new not in self.host.files:
            return False, [], [f"mv: rename {new} to {target}: No such file or directory"]
        if target in self.host.files:
            self.host.files[target + ".ownas-prev"] = self.host.files[target]
        self.host.files[target] = self.host.files.pop(new)
        if marker:
            self.host.files[marker] = ""
        return self.ok()

    def record_run(self, tests):
        """freebsd.record_run: which of the paths exist now, and a copy of each that does."""
        paths = re.findall(r"if \[ -e (\S+) \]", tests)
        lines = [f"{p} {'existed' if p in self.host.files else 'new'}" for p in paths]
        for path in paths:
            if path in self.host.files:
                self.host.files[path + ".ownas-prev"] = self.host.files[path]
            else:
                self.host.files.pop(path + ".ownas-prev", None)
        self.host.files["/var/db/ownas/run"] = "".join(line + "\n" for line in lines)
        return self.ok()

    def read(self, path):
        return self.ok(*self.host.files.get(path, "").splitlines())

    def exists(self, path):
        return self.ok("yes" if path in self.host.files else "")

    def remove(self, *paths):
        for path in (*paths, TIMER):
            self.host.files.pop(path, None)
        return self.ok()

    def arm(self, pidfile, script, seconds):
        """daemon(8) starting the restore timer: recorded (the flow tests never let it fire)."""
        if script not in self.host.files:
            return False, [], [f"/bin/sh: cannot open {script}: No such file or directory"]
        self.host.files[pidfile] = f"armed {seconds}"
        return self.ok()

    def restore(self):
        """The restore script, as far as this model goes: the recorded files put back, pf and
        FRR given them again (tunnels and routes are re-applied by the real script in the lab)."""
        self.host.files.pop(TIMER, None)
        run = self.host.files.pop("/var/db/ownas/run", None)
        if run is None:
            return self.ok()
        restored, new = [], []
        for line in run.splitlines():
            path, how = line.split()
            previous = self.host.files.pop(path + ".ownas-prev", None)
            if how == "new":
                self.host.files.pop(path, None)
                new.append(path)
            elif previous is not None:
                self.host.files[path] = previous
            else:
                continue
            restored.append(path)
        if "/etc/pf.conf" in new:
            self.host.pf_enabled = False  # pfctl -d: what ran before the first pf.conf
        elif "/etc/pf.conf" in restored:
            self.host.pf_loaded = pf_rules(self.host.files.get("/etc/pf.conf", ""), self.host.fibs)
        if "/usr/local/etc/frr/frr.conf" in new:
            self.host.frr_running = None  # service frr onestop
        elif "/usr/local/etc/frr/frr.conf" in restored and self.host.frr_running:
            self.host.frr_running = self.host.files.get("/usr/local/etc/frr/frr.conf", "")
        stamp = "2026-12-03T07:00:00Z"
        self.host.files["/var/db/ownas/restored"] = f"{stamp} restored {' '.join(restored)}\n"
        return self.ok("restored " + " ".join(restored))

    def pending(self, marker):
        return self.ok("pending" if marker in self.host.files else "")

    def kldload(self, module):
        if self.host.securelevel >= 1:
            return False, [], [f"kldload: can't load {module}: Operation not permitted"]
        self.host.modules.append(module)
        return self.ok()

    def sysctl_forwarding(self, name, value):
        self.host.forwarding[name] = int(value)
        return self.ok(f"{name}: 0 -> {value}")

    def sysctl_set(self, count):
        if int(count) < self.host.fibs:
            return (
                False,
                [f"net.fibs: {self.host.fibs}"],
                ["sysctl: net.fibs=1: Capabilities insufficient"],
            )
        self.host.fibs = int(count)
        return self.ok(f"net.fibs: {self.host.fibs} -> {count}")

    def netif_start(self, name):
        netif = self.host.files.get("/etc/rc.conf.d/netif", "")
        names = [
            f"ifconfig_{name}",
            f"ifconfig_{name}_ipv6",
            f"ifconfig_{name}_descr",
            "cloned_interfaces",
        ]
        values = rc_values(netif, *names)
        if name not in values["cloned_interfaces"].split():
            return False, [], [f"ifconfig: interface {name} does not exist"]
        if f"if_{name.rstrip('0123456789')}" not in self.host.modules:
            return False, [], [f"ifconfig: SIOCIFCREATE2 ({name}): Invalid argument"]
        words = values[f"ifconfig_{name}"].split()
        interface = Iface(
            kind=name.rstrip("0123456789"), mtu=1280 if name.startswith("gif") else 1476
        )
        interface.tunnel = [words[1], words[2]]
        if "fib" in words:
            interface.fib = interface.route_fib = int(words[words.index("fib") + 1])
            if interface.fib >= self.host.fibs:
                return False, [], ["ifconfig: ioctl (SIOCSIFFIB): Invalid argument"]
        if "mtu" in words:
            interface.mtu = int(words[words.index("mtu") + 1])
        inner = values[f"ifconfig_{name}_ipv6"].split()
        interface.inet6 = [[inner[1], inner[2], int(inner[4])]]
        interface.description = values[f"ifconfig_{name}_descr"]
        self.host.interfaces[name] = interface
        routing = self.host.files.get("/etc/rc.conf.d/routing", "")
        listed = rc_values(routing, "ipv6_static_routes")["ipv6_static_routes"].split()
        for entry in listed:
            if entry.endswith(f":{name}"):
                args = rc_values(routing, f"ipv6_route_{entry.split(':')[0]}")
                self._route("add", args[f"ipv6_route_{entry.split(':')[0]}"])
        return self.ok()

    def ifconfig_set(self, name, rest):
        interface = self.host.interfaces.get(name)
        if interface is None:
            return False, [], [f"ifconfig: interface {name} does not exist"]
        words = rest.split()
        if words == ["destroy"]:
            del self.host.interfaces[name]
            for key in [k for k, r in self.host.routes.items() if r.get("via") == name]:
                del self.host.routes[key]
            return self.ok()
        if words == ["up"]:
            interface.up = True
        elif words[0] == "tunnel" and len(words) == 3:
            interface.tunnel = words[1:]
        elif words[0] in ("fib", "tunnelfib") and len(words) == 2:
            if int(words[1]) >= self.host.fibs:
                ioctl = "SIOCSIFFIB" if words[0] == "fib" else "SIOCSTUNFIB"
                return False, [], [f"ifconfig: ioctl ({ioctl}): Invalid argument"]
            setattr(interface, words[0], int(words[1]))  # routes stay where they are
        elif words[0] == "mtu" and len(words) == 2:
            interface.mtu = int(words[1])
        elif words[0] == "description":
            interface.description = shlex.split(rest)[1]
        elif words[0] == "inet6" and words[-1] == "-alias":
            interface.inet6 = [e for e in interface.inet6 if e[0] != words[1]]
        elif words[0] == "inet6" and words[-1] == "alias" and words[-3] == "prefixlen":
            peer = words[2] if len(words) == 6 else None
            interface.inet6.append([words[1], peer, int(words[-2])])
            interface.route_fib = interface.fib
        else:
            return False, [], [f"ifconfig: {words[0]}: bad value"]
        return self.ok()

    def route(self, action, args):
        return self._route(action, args)

    def _route(self, action: str, args: str):
        words = args.split()
        fib = int(words[words.index("-fib") + 1]) if "-fib" in words else 0
        if fib >= self.host.fibs:
            return False, [], [f"route: invalid fib number: {fib}"]
        key = route_key(words[0], fib)
        if action == "delete":
            if self.host.routes.pop(key, None) is None:
                return False, [f"delete net {words[0]}: not in table"], []
            return self.ok()
        route: dict[str, Any] = {"reject": "-reject" in words}
        if "-interface" in words:
            route["interface"] = words[words.index("-interface") + 1]
            route["via"] = route["interface"]
            if route["interface"] not in self.host.interfaces:
                return False, [], [f"route: interface '{route['interface']}' does not exist"]
        elif not route["reject"]:
            route["gateway"] = words[1]
            route["via"] = next(
                (
                    n
                    for n, i in self.host.interfaces.items()
                    for a, p, _l in i.inet6
                    if p == words[1]
                ),
                "",
            )
            route["interface"] = route["via"]
        if action == "add" and key in self.host.routes:
            return (
                False,
                [f"add net {words[0]}: route already in table"],
                ["route: message indicates error: File exists"],
            )
        if action == "change" and key not in self.host.routes:
            return False, [f"change net {words[0]}: not in table"], []
        self.host.routes[key] = route
        return self.ok(f"{action} net {words[0]}")

    def pf_reload(self):
        content = self.host.files.get("/etc/pf.conf", "")
        if "pf" not in self.host.modules:
            return False, [], ["pfctl: /dev/pf: No such file or directory"]
        self.host.pf_loaded = pf_rules(content, self.host.fibs)
        self.host.files.pop("/etc/pf.conf.ownas-pending", None)
        return self.ok()

    def pf_enable(self):
        self.host.pf_enabled = True
        return self.ok("pf enabled")

    def service_start(self, service):
        if service == "frr":
            if "frr10" not in self.host.packages:
                return (
                    False,
                    [],
                    ["frr does not exist in /etc/rc.d or the local startup directories"],
                )
            self._start_bgpd()
        elif service in ("routinator", "fort"):
            if service not in self.host.packages:
                return False, [], [f"{service} does not exist in /etc/rc.d"]
            self.host.services.append(service)
        elif service == "pflog":
            if "pflog" not in self.host.modules:
                return False, [], ["kldload: can't load pflog: Operation not permitted"]
            self.host.services.append("pflog")
        else:
            return False, [], [f"{service} does not exist in /etc/rc.d"]
        return self.ok()

    def frr_reload(self):
        if not self.host.frr_running:
            return False, [], ["vtysh: failed to connect to any daemons."]
        new = self.host.files["/usr/local/etc/frr/frr.conf"]
        if re.search(r"^rpki$", new, re.M) and "bgpd_rpki" not in self.host.bgpd_modules:
            # bgpd without its module refuses the block; vtysh then stops reading the file.
            return False, [], ["% [BGP] Unknown command: rpki"]
        self.host.frr_running = new
        return self.ok()

    def _start_bgpd(self):
        """bgpd (re)starts: modules from rc.conf's bgpd_flags, every session anew."""
        fragment = self.host.files.get("/etc/rc.conf.d/frr", "")
        flags = rc_values(fragment, "bgpd_flags")["bgpd_flags"].split()
        self.host.bgpd_modules = ["libfrr", "bgpd"] + [
            f"bgpd_{flags[i + 1]}" for i, word in enumerate(flags[:-1]) if word == "-M"
        ]
        self.host.frr_running = self.host.files.get("/usr/local/etc/frr/frr.conf", "")
        for peer in re.findall(r"^ neighbor (\S+) remote-as", self.host.frr_running, re.M):
            self.host.frr_connections[peer] = self.host.frr_connections.get(peer, 0) + 1

    def bgpd_restart(self):
        if not self.host.frr_running:
            return False, [], ["bgpd not running? (check /var/run/frr/bgpd.pid)."]
        self._start_bgpd()
        if "bgpd_rpki" not in self.host.bgpd_modules:
            return False, [], []  # the wait for the module gives up
        return self.ok()

    def bgpd_modules(self):
        if not self.host.frr_running:
            return self.ok()
        rows = [f"{name:<12} 10.5.1" for name in self.host.bgpd_modules]
        return self.ok("Module information for bgpd:", "Module Name  Version", "", *rows, "pid: 9")

    def _caches(self):
        return re.findall(
            r"^ rpki cache tcp (\S+) (\d+) preference (\d+)$", self.host.frr_running or "", re.M
        )

    def _synced(self) -> bool:
        """A cache answers: FRR is in sync with it and holds its ROAs."""
        if self._caches() and not self.host.rtr_down:
            self.host.roas = 5
            return True
        return False

    def rpki_state(self):
        error = '{"error":"No connection to RPKI cache server."}'
        if not self._caches() or (self.host.rtr_down and not self.host.roas):
            return self.ok(error, "@", error)
        state = "connected" if self._synced() else "disconnected"
        connections = [
            {"mode": "tcp", "host": h, "port": p, "preference": int(n), "state": state}
            for h, p, n in self._caches()
        ]
        counts = {"ipv4PrefixCount": 0, "ipv6PrefixCount": self.host.roas}
        return self.ok(json.dumps({"connections": connections}), "@", json.dumps(counts))

    def rpki_reset(self):
        """freebsd.rpki_reset: nothing while FRR holds ROAs, or unless a cache answers
        (nc -z); then start over."""
        if self.host.roas or self.host.rtr_down:
            return self.ok()
        return self.rpki_settle()

    def rpki_settle(self):
        return self.soft_in() if self._synced() else self.ok()

    def soft_in_with_roas(self):
        return self.soft_in() if self.host.roas else self.ok()

    def rpki_invalid_accepted(self):
        routes = {prefix: [{"rpkiInvalid": True}] for prefix in self.host.rpki_invalid}
        return self.ok(json.dumps({"routes": routes}))

    def soft_in(self):
        self.host.rpki_invalid = []
        self.host.policy_stale = False
        return self.ok()

    def policy_counts(self):
        """Each upstream sent 20 routes: 5 accepted, 15 filtered, unless a decision is stale."""
        lines = []
        for peer in re.findall(r"echo '@ (\S+)'", self.command):
            if peer not in self._sessions():
                continue
            accepted = 6 if self.host.policy_stale else 5
            counts = {"pfxCounter": accepted, "ribTableWalkCounters": {"Adj-in": 20}}
            lines += [f"@ {peer}", json.dumps(counts), "Total number of prefixes 15"]
        return self.ok(*lines)

    def validate_routinator(self, path):
        """routinator -c FILE config: repository-dir is mandatory, unknown keys are fatal
        (routinator src/config.rs)."""
        try:
            config = tomllib.loads(self.host.files.get(path, ""))
        except tomllib.TOMLDecodeError as error:
            return False, [], [str(error)]
        if "repository-dir" not in config or set(config) - set(ROUTINATOR_KEYS):
            return False, [], [f"Failed in config file {path}"]
        return self.ok()

    def validator_prepare(self, _command):
        return self.ok()

    def service_restart(self, service):
        if service not in self.host.services:
            return False, [], [f"{service} not running?"]
        return self.ok()

    def pkg_install(self, package):
        self.host.packages.append(package)
        return self.ok(f"Installing {package}")


_Q = r"'?([^' ]+)'?"
_DISARM = (
    r"pkill -F /var/db/ownas/timer\.pid -f /usr/local/libexec/ownas-restore 2>/dev/null; "
    r"rm -f /var/db/ownas/timer\.pid"
)
# freebsd.refuse_unless around a validation: the message when it fails.
_REFUSED = r" \|\| \{ echo '[^']*' >&2; exit 1; \}"
# What starts a section of facts.HostState's composite read.
_MARK = r"@@ownas-[0-9a-f]+ \d+@@"
HANDLERS: list[tuple[str, Any]] = [
    (r"uname -sr", Machine.uname),
    (r"echo '@@ownas-[0-9a-f]+ 0@@'; .*", Machine.composite),
    (r"sysctl ((?:[a-z0-9.]+ )+)2>/dev/null \|\| true", Machine.sysctl_show),
    (r'getent passwd "\$\(id -un\)" \| cut -d: -f7', Machine.shell),
    (r'echo "\$SSH_CLIENT"', Machine.ssh_client),
    (r'for m in ([a-z_ ]+); do kldstat -q -m "\$m" && echo "\$m"; done; true', Machine.kldstat),
    (r"\( test -e (\S+) && cat \S+ \) \|\| echo (\S+)", Machine.cat),
    (r"test -e (\S+) && \( sha256sum .* \) \|\| true", Machine.sha256),
    (r"env -i /bin/sh -c '\. /etc/rc\.conf >/dev/null 2>&1; set'", Machine.rc_conf),
    (r"ifconfig", Machine.ifconfig),
    (r"route -n -6 get -fib (\d+) (\S+) 2>/dev/null; true", Machine.route_get),
    (r"pfctl -s info 2>/dev/null; true", Machine.pf_info),
    (r"sockstat -46lLq -P tcp,udp", Machine.sockstat),
    (r"pfctl -sr 2>/dev/null; true", Machine.pf_shown),
    (r"pfctl -nvf (\S+) 2>/dev/null; true", Machine.pf_expanded),
    (
        r"service -j '' (\w+) status > /dev/null 2>&1; if \[ \$\? -eq 0 \]; then echo running; fi",
        Machine.service_status,
    ),
    (r"pkg info -E -- (\S+) 2> /dev/null \|\| true", Machine.pkg_info),
    (r"vtysh -c 'show bgp neighbors json' 2>/dev/null; true", Machine.bgp_neighbors),
    (
        r"vtysh -c 'show bgp ipv6 neighbors (\S+) advertised-routes json' 2>/dev/null; true",
        Machine.advertised,
    ),
    (
        r"/usr/local/sbin/frr-reload\.py --test --confdir /usr/local/etc/frr --rundir "
        r"/var/run/frr (\S+)( >/dev/null)?(?:" + _REFUSED + ")?",
        Machine.frr_test,
    ),
    (r"(\{ .* \} & )+wait; echo pinged", Machine.pings),
    (r"mkdir -p (\S+)", Machine.mkdir),
    (r"sh -n (\S+)" + _REFUSED, Machine.validate_real),
    (r"pfctl -nf (\S+\.ownas-new)" + _REFUSED, Machine.validate_pf),
    (r"vtysh --dryrun -f (\S+)" + _REFUSED, Machine.validate_real),
    (r"! grep -Ev .* (\S+)" + _REFUSED, Machine.validate_real),
    (
        r"if \[ -e (\S+) \]; then ln -f (\S+) (\S+); fi && mv -f (\S+) (\S+)"
        r"(?: && touch (\S+\.ownas-pending))?",
        Machine.install,
    ),
    (r"test -e (\S+\.ownas-pending) && echo pending; true", Machine.pending),
    (r"test -e (\S+) && echo yes; true", Machine.exists),
    (r"cat (/var/db/ownas/restored) 2>/dev/null; true", Machine.read),
    (
        r"pgrep -F (/var/db/ownas/timer\.pid) -f /usr/local/libexec/ownas-restore "
        r">/dev/null 2>&1 && echo yes; true",
        Machine.exists,
    ),
    (r"mkdir -p /var/db/ownas && \{ (.*) \} > /var/db/ownas/run", Machine.record_run),
    (_DISARM + r"; rm -f (/var/db/ownas/run) (/var/db/ownas/restored)", Machine.remove),
    (_DISARM + r"; /bin/sh /usr/local/libexec/ownas-restore", Machine.restore),
    (r"mkdir -p /var/db/ownas && daemon -f -p (\S+) /bin/sh (\S+) after (\d+)", Machine.arm),
    (r"kldload -n (\S+)", Machine.kldload),
    (r"sysctl net\.fibs=(\d+)", Machine.sysctl_set),
    (r"sysctl (net\.inet6?\.ip6?\.(?:forwarding|rfc6204w3))=([01])", Machine.sysctl_forwarding),
    (r"service netif start (\S+)", Machine.netif_start),
    (r"ifconfig (\S+) (.+)", Machine.ifconfig_set),
    (r"route -6 (add|change|delete) (.+)", Machine.route),
    (
        r"pfctl -nf /etc/pf\.conf && pfctl -f /etc/pf\.conf && rm -f /etc/pf\.conf\.ownas-pending"
        r" \|\| \{ .* \}",
        Machine.pf_reload,
    ),
    (r"pfctl -e", Machine.pf_enable),
    (r"service (\w+) start", Machine.service_start),
    (
        r"test -x /usr/local/sbin/frr-reload\.py \|\| \{ .* \}; "
        r"/usr/local/sbin/frr-reload\.py --reload .* \|\| \{ .* \}",
        Machine.frr_reload,
    ),
    (r"pkg install -y -- (\S+)", Machine.pkg_install),
    (r"vtysh -d bgpd -c 'show modules' 2>/dev/null; true", Machine.bgpd_modules),
    (
        r"vtysh -c 'show rpki cache-connection json' 2>/dev/null; echo '@'; "
        r"vtysh -c 'show rpki prefix-count json' 2>/dev/null; true",
        Machine.rpki_state,
    ),
    (
        r"vtysh -c 'show bgp ipv6 unicast rpki invalid json' 2>/dev/null; true",
        Machine.rpki_invalid_accepted,
    ),
    (r"vtysh -c 'clear bgp ipv6 unicast \* soft in'", Machine.soft_in),
    (
        r"if vtysh -c 'show rpki prefix-count' .*; then :; elif nc -z -w 3 .*; then "
        r"vtysh -c 'rpki reset'; " + re.escape(freebsd.RPKI_SETTLE) + "; fi",
        Machine.rpki_reset,
    ),
    (re.escape(freebsd.RPKI_SETTLE), Machine.rpki_settle),
    (re.escape(freebsd.RPKI_SOFT_IN_WITH_ROAS), Machine.soft_in_with_roas),
    (r"echo '@ .*; true", Machine.policy_counts),
    (r"service frr restart bgpd; i=0; until .*", Machine.bgpd_restart),
    (r"service (routinator|fort) restart", Machine.service_restart),
    (r"routinator -c (\S+) config >/dev/null" + _REFUSED, Machine.validate_routinator),
    (r"test -s (\S+)" + _REFUSED, Machine.validate_real),
    (
        r"(install -d -o routinator -g routinator /var/routinator /var/routinator/tals "
        r"/var/routinator/repository|\[ \"\$\(ls /usr/local/etc/fort/tal/\*\.tal 2>/dev/null "
        r"\| wc -l\)\" -ge 5 \] \|\| fort --init-tals --tal /usr/local/etc/fort/tal)",
        Machine.validator_prepare,
    ),
]


def _install(world: World) -> None:
    """Route pyinfra's @fake connector to the world."""
    import gevent
    from pyinfra.connectors.fake import FakeConnector
    from pyinfra.connectors.util import CommandOutput, OutputLine

    def lookup(self: Any, command: str) -> tuple[bool, Any]:
        ok, stdout, stderr = world.run(self.host.name.split("/", 1)[-1], command)
        lines = [OutputLine("stdout", line) for line in stdout]
        lines += [OutputLine("stderr", line) for line in stderr]
        return ok, CommandOutput(lines)

    def put_file(self: Any, filename_or_io: Any, remote_filename: str, *args: Any, **kwargs: Any):
        filename_or_io.seek(0)
        data = filename_or_io.read()
        world.upload(
            self.host.name.split("/", 1)[-1],
            remote_filename,
            data.decode() if isinstance(data, bytes) else data,
        )
        return True

    FakeConnector._lookup_response = lookup  # type: ignore[method-assign]
    FakeConnector.put_file = put_file  # type: ignore[method-assign]
    # A host's commands take ``fake_delay`` seconds (none unless a test sets it), yielding to
    # the other hosts' greenlets as a slow link would.
    FakeConnector._sleep = lambda self: gevent.sleep(float(self.data.get("fake_delay") or 0))  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    world_path = Path(argv[0])
    world = World.load(world_path)
    _install(world)
    if argv[1] == "--ownas":  # the ownas command (ownas status) against the world
        from tasks.cli import main as ownas_main

        try:
            return ownas_main(argv[2:])
        finally:
            world.save(world_path)
    from pyinfra_cli.main import main as pyinfra_main

    sys.argv = ["pyinfra", *argv[2:]]
    try:
        pyinfra_main()
    except SystemExit as exit:
        return int(exit.code or 0)
    finally:
        world.save(world_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
