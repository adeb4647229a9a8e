"""``ownas lab``: the whole deploy, end to end, on one Linux machine (root; FRR 10 from a Debian 13
root (tasks.lab.debian13), Debian's bird2, openssh-server, socat).

Every managed host is a network namespace with its own mount, UTS and PID namespaces (see
tasks.lab.init): its own /etc (a copy of this machine's, root's shell /bin/sh), /usr/local, /var/db,
/boot and /run, and sshd listening on the trusted controller address, reached through
``socat`` as an SSH ProxyCommand, so the root namespace gets no address. FreeBSD's commands are
stand-ins on PATH (tasks.lab.standin). Every upstream is a namespace running BIRD 2 with the
upstream's ASN and a sample of a full table. ``inet`` joins the router's WAN segment (a bridge
with the gateways and the WAN upstreams), each downstream's uplink, and the tunnels (a bridge
each; tasks.lab.links).

Only addresses inside these namespaces are touched. ``down`` ends the processes running in the
lab's namespaces (found by namespace, so only what the lab started) and deletes the namespaces,
also after a failed run: it finds them by the lab's prefix, not only through lab.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jinja2 import Environment

from tasks.inventory import load_inventory
from tasks.lab import debian13, links, running
from tasks.lab.links import HIDDEN
from tasks.lab.topology import Topology, Upstream, build, graceful_shutdown, roas
from tasks.plan import Plan, load
from tasks.render import environment

PROJECT = Path(__file__).resolve().parents[2]
# What the stand-ins answer for; everything else is the real Linux program.
STANDINS = (
    "ifconfig",
    "kldload",
    "kldstat",
    "pfctl",
    "ping",
    "pkg",
    "route",
    "service",
    "setfib",
    "sockstat",
    "daemon",
    "routinator",
    "fort",
    "sysctl",
    "uname",
)
RELEASE = "14.3-RELEASE"
# In a host's directory: its management path is cut (the lab's fault: a change that locks the
# controller out). The pfctl stand-in makes and removes it (see Lab.lock_out).
CUT = "cut"
VAR_DB = "/var/db"
# In a host's directory: every command SSH ran on the host, NUL-terminated (Lab.remote_commands).
REMOTE_LOG = "remote.log"
INITIAL_MODULES = ("if_gif",)  # in GENERIC
PROGRAMS = ("ip", "unshare", "nsenter", "chroot", "socat", "nc", "bird", "birdc", "ssh-keygen")


class LabError(Exception):
    """The lab cannot be built or used (not root, a program missing, a namespace taken)."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces)")


def _cache_key(address: object, port: int) -> str:
    """How lab.json names an RTR cache."""
    return f"{address} {port}"


def _netns_names() -> list[str]:
    listing = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


class Lab:
    """One lab, kept in ``directory`` (lab.json, keys, host roots, logs)."""

    def __init__(self, directory: Path, prefix: str = "ownas") -> None:
        self.dir = directory.resolve()
        self.prefix = prefix
        self._children: list[subprocess.Popen[bytes]] = []
        self._templates: Environment | None = None

    # --- where things are --------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def inventory(self) -> Path:
        """The inventory pyinfra uses to deploy to the lab's hosts."""
        return self.dir / "inventory.py"

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def host_dir(self, name: str) -> Path:
        return self.dir / "hosts" / name

    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            raise LabError(
                f"no lab in {self.dir} (no lab.json): `ownas lab up --dir {self.dir} "
                f"--prefix {self.prefix}` first"
            )
        return json.loads(self.state_path.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state, indent=1, sort_keys=True))

    # --- running things in the lab -------------------------------------------------------------

    def ip(self, name: str, *args: str, check: bool = True) -> None:
        """``ip`` in lab namespace ``name`` (always ``-n``: the root namespace is not the lab's)."""
        _run(["ip", "-n", self.namespace(name), *args], check=check)

    def run_in(self, name: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` inside lab host ``name`` (its network, mount, UTS and PID namespaces)."""
        init = self.state()["inits"][name]["init"]
        return _run(["nsenter", "-t", str(init), "-m", "-u", "-n", "-p", "--", *argv], check=check)

    def vtysh(self, name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """``vtysh -c command`` on lab host ``name``: its FRR 10, as the deploy reaches it."""
        return self.run_in(name, [str(self.dir / "bin/vtysh"), "-c", command], check=check)

    # --- up ------------------------------------------------------------------------------------

    def up(self, inventory: Path) -> Path:
        """Build the lab for ``inventory``, or bring a running one in line with it; return the
        lab inventory."""
        self._preconditions()
        inventory = inventory.resolve()
        plan = load(load_inventory(inventory, cwd=inventory.parent))
        topology = build(plan)
        if self.state_path.exists():
            self._update(plan, topology)
        else:
            wanted = set(self._namespaces(topology).values())
            taken = [n for n in _netns_names() if n in wanted]
            if taken:
                raise LabError(
                    f"namespaces {', '.join(taken)} exist, made by another lab or by hand: "
                    "`ownas lab down` with the --dir and --prefix that made them, or another "
                    "--prefix"
                )
            try:
                self._create(plan, topology)
            except BaseException:
                self.down()
                raise
        self._write_inventory(inventory)
        with links.locked(self.dir):
            links.reconcile(self.dir)
        return self.inventory

    def _preconditions(self) -> None:
        _require_root()
        for program in PROGRAMS:
            if shutil.which(program) is None:
                raise LabError(f"{program} is missing: `make deps` installs it")
        try:
            debian13.require()
        except debian13.RootMissing as missing:
            raise LabError(str(missing)) from None
        if not Path("/usr/sbin/sshd").exists():
            raise LabError("/usr/sbin/sshd is missing: `make deps` installs openssh-server")
        for path in (PROJECT, Path(sys.prefix), Path(sys.base_prefix)):
            if path.is_relative_to("/usr/local"):
                raise LabError(
                    f"{path} is under /usr/local, which each lab host replaces with its own"
                )

    def _namespaces(self, topology: Topology) -> dict[str, str]:
        """The lab's hosts and the namespaces they run in."""
        names = [*topology.managed, *(u.name for u in topology.upstreams), "inet"]
        return {name: self.namespace(name) for name in names}

    def _create(self, plan: Plan, topology: Topology) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        namespaces = self._namespaces(topology)
        state: dict[str, Any] = {
            "prefix": self.prefix,
            "asn": plan.network.asn,
            "namespaces": {},
            "hosts": {},
            "upstreams": {},
            "inits": {},
            "topology": asdict(topology),
            "made": [],  # the namespaces this lab created: all that `down` may remove
        }
        if not Path(VAR_DB).exists():
            # FreeBSD's /var/db (ownas's record of a run) is each lab host's own, bound over
            # an empty mount point that Debian does not have: made here, removed by `down`.
            Path(VAR_DB).mkdir(mode=0o755)
            state["made_var_db"] = True
        self._save(state)
        for name in namespaces:
            self._namespace(name, state)
        self._sysctl("inet", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1")
        self._operator_key()
        self._launchers()
        self._wan_segment(topology)
        for name in topology.managed[1:]:
            self._downstream_uplink(topology, name)
        for link in topology.tunnels:
            self._link(asdict(link))
        self._upstream_tunnel_ends(topology)
        for name in topology.managed:
            self._host(topology, name, state)
        self._ssh_files(topology.managed)
        for upstream in topology.upstreams:
            self._upstream(plan, topology, upstream, state)
        self._rtr_caches(plan, state)

    def _namespace(self, name: str, state: dict[str, Any]) -> None:
        """A lab namespace for ``name``, recorded as the lab's before anything goes in it."""
        namespace = self.namespace(name)
        _run(["ip", "netns", "add", namespace])
        state["namespaces"][name] = namespace
        state["made"].append(namespace)
        self._save(state)
        self.ip(name, "link", "set", "lo", "up")
        self._sysctl(name, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")

    def _update(self, plan: Plan, topology: Topology) -> None:
        """A running lab follows the inventory: a downstream added gets its namespace, uplink
        and tunnel link, one removed loses them (its tunnel on the router too: the link is
        gone); a VPS that moved gets its new address (as its provider would give it); an sshd
        that was stopped is started again. Anything else needs a new lab."""
        state = self.state()
        existing = set(_netns_names())
        gone = [
            name
            for name, info in state["inits"].items()
            if state["namespaces"][name] not in existing or not running(info["init"])
        ]
        if gone:
            raise LabError(
                f"the lab in {self.dir} is not running any more ({', '.join(gone)} gone, e.g. "
                f"after a reboot): {self._again()}"
            )
        old = state["topology"]
        new = json.loads(json.dumps(asdict(topology)))  # as lab.json holds it: lists
        _keep_retired(old, new, [r.name for r in plan.network.retired])
        before = {link["site"]: link for link in old["tunnels"]}
        after = {link["site"]: link for link in new["tunnels"]}
        removed = [site for site in before if site not in after]
        added = [site for site in after if site not in before]
        kept = [name for name in old["managed"] if name in new["managed"]]
        if (
            any(old[key] != new[key] for key in ("router", "upstreams", "controller", "sample"))
            or any(before[site] != after[site] for site in before if site in after)
            or any(old["lan"].get(name) != new["lan"].get(name) for name in kept)
        ):
            raise LabError(
                "the inventory's router, upstreams or tunnels changed (not only downstreams "
                f"added or removed): {self._again()}"
            )
        for site in removed:
            self._remove_link(state, before[site])
            if site in old["managed"]:
                self._remove_host(site, state)
        for site in added:
            try:
                if site in new["managed"]:
                    self._namespace(site, state)
                    self._downstream_uplink(topology, site)
                self._link(after[site])
                if site in new["managed"]:
                    self._host(topology, site, state)
            except BaseException:
                # Undone, so that the next `up` adds it again from nothing.
                self._remove_link(state, after[site])
                if site in state["namespaces"]:
                    self._remove_host(site, state)
                raise
        for name in kept:
            if old["wan"][name] != new["wan"][name]:
                uplink = new["uplinks"][name]
                for address in old["wan"][name]:
                    self.ip(name, "addr", "del", address, "dev", uplink, check=False)
                for address in old["inet_addresses"][name]:
                    self.ip("inet", "addr", "del", address, "dev", f"u-{name}", check=False)
                self._uplink_addresses(topology, name)
            if not self._sshd_running(name):
                self._start_sshd(name)
        state["topology"] = new
        self._save(state)
        self._ssh_files(new["managed"])

    def _again(self) -> str:
        """How to start this lab over, with its own folder and prefix."""
        where = f"--dir {self.dir} --prefix {self.prefix}"
        return f"`ownas lab down {where}`, then `ownas lab up {where}`"

    def _remove_host(self, name: str, state: dict[str, Any]) -> None:
        """End a downstream's namespace (what runs in it, its links) and forget it."""
        namespace = state["namespaces"].pop(name)
        self._end([namespace])
        state["made"].remove(namespace)
        state["hosts"].pop(name, None)
        state["inits"].pop(name, None)
        self._save(state)
        shutil.rmtree(self.host_dir(name), ignore_errors=True)
        shutil.rmtree(self.dir / "init" / name, ignore_errors=True)

    def _remove_link(self, state: dict[str, Any], link: dict[str, Any]) -> None:
        """Delete a tunnel link's bridge and ports (each port's veth takes its far end with it,
        the router's end included), and the router's record of that tunnel."""
        bridge, *ports = links.ports(link)
        for name in (*ports, bridge):
            self.ip("inet", "link", "del", name, check=False)
        router = link["a"]
        directory = Path(state["hosts"][router["host"]]["dir"])
        with links.locked(self.dir), links.locked(directory):
            record = links.load_state(directory)
            record["tunnels"].pop(router["interface"], None)
            links.save_state(directory, record)

    def _sysctl(self, name: str, *settings: str) -> None:
        _run(["ip", "netns", "exec", self.namespace(name), "sysctl", "-q", "-w", *settings])

    def _operator_key(self) -> None:
        """The operator's key, which every lab host lets in."""
        key = self.dir / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ownas-lab", "-f", str(key)])
        shutil.copy(key.with_suffix(".pub"), self.dir / "authorized_keys")

    def _host_key(self, topology: Topology, name: str) -> None:
        """A managed host's SSH host key and the ProxyCommand that reaches it."""
        controller = topology.controller
        family, address = ("TCP6", f"[{controller}]") if ":" in controller else ("TCP4", controller)
        directory = self.host_dir(name)
        directory.mkdir(parents=True)
        host_key = directory / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        # The session starts at the controller address inside the namespace, so the host sees
        # SSH from a trusted source, as it would in production. While the host's management
        # path is cut (CUT, see Lab.lock_out), no session starts and the open ones end: the
        # proxy ends the socat it started.
        connect = f"{family}:{address}:22,bind={address}"
        (directory / "proxy.sh").write_text(
            f"[ -e {directory / CUT} ] && exit 1\n"
            # A background job's standard input is /dev/null unless it is redirected
            # explicitly: from a copy of ours (fd 3), where ssh writes.
            "exec 3<&0\n"
            f"nsenter --net=/run/netns/{self.namespace(name)} socat STDIO {connect} 0<&3 &\n"
            "pid=$!\n"
            'while kill -0 "$pid" 2>/dev/null; do\n'
            f'    [ -e {directory / CUT} ] && {{ kill "$pid"; exit 1; }}\n'
            "    sleep 0.2\n"
            "done\n"
            'wait "$pid"\n'
        )

    def _ssh_files(self, managed: Iterable[str]) -> None:
        """known_hosts and the SSH config for the managed hosts the lab runs now."""
        known, config = [], []
        for name in managed:
            alias, directory = self.namespace(name), self.host_dir(name)
            public = (directory / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"{alias} {' '.join(public)}")
            config += [
                f"Host {alias}",
                "  User root",
                f"  IdentityFile {self.dir / 'id_ed25519'}",
                f"  ProxyCommand /bin/sh {directory / 'proxy.sh'}",
                "",
            ]
        (self.dir / "known_hosts").write_text("\n".join(known) + "\n")
        (self.dir / "ssh_config").write_text("\n".join(config))

    def _launchers(self) -> None:
        """LAB/bin/<command>: the stand-ins, first on every lab host's PATH."""
        bin_dir = self.dir / "bin"
        bin_dir.mkdir()
        for command in STANDINS:
            launcher = bin_dir / command
            launcher.write_text(
                f"#!/bin/sh\nPYTHONPATH={PROJECT} exec {sys.executable} "
                f'-m tasks.lab.standin {command} "$@"\n'
            )
            launcher.chmod(0o755)
        # FRR 10's vtysh, from the Debian 13 root, as the deploy and `ownas lab status` run it.
        # root's login shell: /bin/sh, after it counted the command SSH runs (REMOTE_LOG).
        shell = self.dir / "shell/sh"
        shell.parent.mkdir()
        shell.write_text(
            "#!/bin/sh\n"
            f'[ "$1" = -c ] && printf \'%s\\0\' "$2" >> "$OWNAS_LAB_HOST/{REMOTE_LOG}"\n'
            'exec /bin/sh "$@"\n'
        )
        shell.chmod(0o755)
        # (frr-reload.py comes with `pkg install frr10-pythontools`: tasks.lab.standin.pkg)
        debian13.write_wrappers(bin_dir, programs=("vtysh",))

    def _veth(self, a: str, a_name: str, b: str, b_name: str, up: bool = True) -> None:
        near = [a_name, "netns", self.namespace(a)]
        far = [b_name, "netns", self.namespace(b)]
        _run(["ip", "link", "add", *near, "type", "veth", "peer", "name", *far])
        if up:
            self.ip(a, "link", "set", a_name, "up")
            self.ip(b, "link", "set", b_name, "up")

    def _wan_segment(self, topology: Topology) -> None:
        """The router's WAN segment (bridge ``wan``, with the gateways and the WAN upstreams)."""
        self.ip("inet", "link", "add", "wan", "type", "bridge")
        self.ip("inet", "link", "set", "wan", "up")
        for address in topology.inet_addresses[topology.router]:
            self.ip("inet", "addr", "add", address, "dev", "wan", "nodad")
        router = topology.router
        self._veth(router, topology.uplinks[router], "inet", f"u-{router}")
        self.ip("inet", "link", "set", f"u-{router}", "master", "wan")
        for upstream in topology.upstreams:
            if not upstream.tunnel:
                self._veth(upstream.name, upstream.interface, "inet", f"u-{upstream.name}")
                self.ip("inet", "link", "set", f"u-{upstream.name}", "master", "wan")
                self.ip(
                    upstream.name,
                    *("addr", "add", f"{upstream.address}/{upstream.prefixlen}"),
                    *("dev", upstream.interface, "nodad"),
                )
        self._uplink_addresses(topology, router)

    def _downstream_uplink(self, topology: Topology, name: str) -> None:
        """A managed downstream's uplink to its provider (in ``inet``), and its jails' LAN."""
        self._veth(name, topology.uplinks[name], "inet", f"u-{name}")
        self._uplink_addresses(topology, name)
        if name in topology.lan:
            interface = topology.lan[name]
            self._veth(name, interface, name, HIDDEN + interface)

    def _uplink_addresses(self, topology: Topology, name: str) -> None:
        for address in topology.wan[name]:
            self.ip(name, "addr", "add", address, "dev", topology.uplinks[name], "nodad")
        if name != topology.router:
            for address in topology.inet_addresses[name]:
                self.ip("inet", "addr", "add", address, "dev", f"u-{name}", "nodad")
        for gateway in topology.gateways[name]:
            family = "-6" if ":" in gateway else "-4"
            self.ip(name, family, "route", "replace", "default", "via", gateway)

    def _link(self, link: dict[str, Any]) -> None:
        """A tunnel's bridge in ``inet``; the hosts' ends hidden until the deploy creates them
        (an upstream's end is configured by ``_upstream_tunnel_ends``)."""
        bridge, a, b = links.ports(link)
        self.ip("inet", "link", "add", bridge, "type", "bridge")
        self.ip("inet", "link", "set", bridge, "up")
        self._veth(link["a"]["host"], HIDDEN + link["a"]["interface"], "inet", a, up=False)
        self.ip("inet", "link", "set", a, "master", bridge)
        far = link["b"]
        if far is None:
            return  # an unmanaged site: the lab runs nothing behind it
        name = far["interface"] if link["b_endpoints"] else HIDDEN + far["interface"]
        self._veth(far["host"], name, "inet", b, up=False)
        self.ip("inet", "link", "set", b, "master", bridge)

    def _upstream_tunnel_ends(self, topology: Topology) -> None:
        """An upstream's end of its tunnel, configured as the upstream configured it."""
        for upstream in topology.upstreams:
            if upstream.tunnel:
                # Up first: Linux installs an address's routes only on an interface that is up.
                self.ip(upstream.name, "link", "set", upstream.interface, "up")
                self.ip(
                    upstream.name,
                    *("addr", "add", upstream.address, "peer", upstream.peer),
                    *("dev", upstream.interface, "nodad"),
                )

    def _host(self, topology: Topology, name: str, state: dict[str, Any]) -> None:
        """A managed host: a fresh FreeBSD as far as the deploy can tell, with sshd running."""
        self._host_key(topology, name)
        state["hosts"][name] = {"dir": str(self.host_dir(name))}
        directory = self.host_dir(name)
        root = directory / "root"
        for sub in ("etc", "usr-local", "boot", "var-db"):
            (root / sub).mkdir(parents=True)
        _run(["cp", "-a", "/etc/.", str(root / "etc")])
        passwd = root / "etc/passwd"
        root_shell = r"^(root:[^:]*:0:0:[^:]*:[^:]*):.*$"
        shell = f"\\1:{self.dir / 'shell/sh'}"
        passwd.write_text(re.sub(root_shell, shell, passwd.read_text(), flags=re.M))
        (root / "etc/rc.conf").write_text(f'hostname="{name}"\nsshd_enable="YES"\n')
        for stale in ("rc.conf.local", "pf.conf"):
            (root / "etc" / stale).unlink(missing_ok=True)
        shutil.rmtree(root / "etc/rc.conf.d", ignore_errors=True)
        links.save_state(
            directory,
            {
                "name": name,
                "release": RELEASE,
                "securelevel": -1,
                "fibs": 1,
                "modules": list(INITIAL_MODULES),
                "packages": [],
                "pf": {"enabled": False, "rules": []},
                "services": [],
                "tunnels": {},
                "rules": [],
            },
        )
        (directory / "log.jsonl").write_text("")
        self.ip(name, "link", "set", "lo", "name", "lo0")
        length = 32 if "." in topology.controller else 128
        self.ip(name, "addr", "add", f"{topology.controller}/{length}", "dev", "lo0")
        binds = [
            [str(root / "etc"), "/etc"],
            [str(root / "usr-local"), "/usr/local"],
            [str(root / "boot"), "/boot"],
            [str(root / "var-db"), VAR_DB],
        ]
        state["inits"][name] = self._init(
            name,
            {
                "hostname": name,
                "binds": binds,
                "ensure": ["/run/sshd"],
                "private": {"/run/frr": debian13.frr_user()},
                # frr-reload.py's log (/var/log/frr) is the host's own, not the shared root's.
                "tmpfs": [str(debian13.ROOT / "var/log/frr")],
                "root_binds": [
                    [path, str(debian13.ROOT / path.lstrip("/"))] for path in debian13.HOST_BINDS
                ],
            },
        )
        self._save(state)
        self._render(
            "sshd_config.j2",
            directory / "sshd_config",
            dir=directory,
            lab=self.dir,
            name=name,
            controller=topology.controller,
        )
        self._start_sshd(name)

    def _upstream(
        self, plan: Plan, topology: Topology, upstream: Upstream, state: dict[str, Any]
    ) -> None:
        directory = self.dir / "upstreams" / upstream.name
        directory.mkdir(parents=True)
        config = directory / "bird.conf"
        self._render(
            "bird.conf.j2",
            config,
            dir=directory,
            upstream=upstream,
            sample=topology.sample,
            paths=topology.paths,
            graceful_shutdown=graceful_shutdown(upstream.name),
            router=topology.router,
            asn=plan.network.asn,
        )
        socket = directory / "bird.ctl"
        state["inits"][upstream.name] = self._init(upstream.name, {})
        state["upstreams"][upstream.name] = {"dir": str(directory), "socket": str(socket)}
        self._save(state)
        self.run_in(upstream.name, ["bird", "-c", str(config), "-s", str(socket)])

    def _rtr_caches(self, plan: Plan, state: dict[str, Any]) -> None:
        """The inventory's RTR caches, on the Internet (``inet``): stayrtr serving the lab's
        ROAs (tasks/data/lab_sample.toml) at each cache's address and port."""
        (self.dir / debian13.ROAS).write_text(json.dumps({"roas": roas()}, indent=1) + "\n")
        state["caches"] = {}
        rpki = plan.router.rpki
        for cache in rpki.caches if rpki else ():
            length = 128 if cache.address.version == 6 else 32
            self.ip("inet", "addr", "add", f"{cache.address}/{length}", "dev", "lo")
            state["caches"][_cache_key(cache.address, cache.port)] = None
        self._save(state)
        for key in state["caches"]:
            self.start_cache(key)

    def start_cache(self, key: str) -> None:
        """Start the lab's RTR cache ``key`` ("ADDRESS PORT"), as in the inventory."""
        state = self.state()
        address, port = key.split()
        bind = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        argv = debian13.stayrtr(self.dir / debian13.ROAS, bind)
        with open(self.dir / f"rtr-{address}-{port}.log", "ab") as log:
            child = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace("inet"), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._children.append(child)
        state["caches"][key] = child.pid
        self._save(state)

    def stop_cache(self, key: str) -> None:
        """Stop the lab's RTR cache ``key`` (the process this lab started, by PID)."""
        state = self.state()
        pid = state["caches"].get(key)
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGTERM)
        state["caches"][key] = None
        self._save(state)

    def _init(self, name: str, config: dict[str, Any]) -> dict[str, int]:
        """Start the namespace's PID 1 (tasks.lab.init); return its processes' PIDs here."""
        directory = self.dir / "init" / name
        directory.mkdir(parents=True)
        ready = directory / "ready"
        (directory / "config.json").write_text(json.dumps({**config, "ready": str(ready)}))
        with open(directory / "log", "ab") as log:
            # Mounts propagate from the machine (slave): /run/netns stays current inside.
            unshare = ["unshare", "--pid", "--kill-child", "--mount", "--uts", "--propagation"]
            init = [sys.executable, "-m", "tasks.lab.init", str(directory / "config.json")]
            child = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(name), *unshare, "slave", *init],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(PROJECT)},
            )
        self._children.append(child)
        for _ in range(200):
            if ready.exists():
                break
            if child.poll() is not None:
                raise LabError(f"{name}: namespace init failed: {(directory / 'log').read_text()}")
            time.sleep(0.05)
        else:
            raise LabError(f"{name}: namespace init did not start")
        children = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
        return {"unshare": child.pid, "init": int(children[0])}

    def _start_sshd(self, name: str) -> None:
        directory = self.host_dir(name)
        config, log = str(directory / "sshd_config"), str(directory / "sshd.log")
        self.run_in(name, ["/usr/sbin/sshd", "-f", config, "-E", log])

    def _sshd_running(self, name: str) -> bool:
        pid_file = self.host_dir(name) / "sshd.pid"
        if not pid_file.exists():
            return False
        probe = self.run_in(name, ["kill", "-0", pid_file.read_text().strip()], check=False)
        return probe.returncode == 0

    def lock_out(self, name: str, marker: str | None) -> None:
        """The fault of a change that locks the controller out: from the moment host ``name``
        loads a pf.conf containing ``marker``, its management path is cut (open sessions end,
        new ones fail) until it loads one without it. None: no such fault."""
        state = links.load_state(self.host_dir(name))
        state["lockout"] = marker
        links.save_state(self.host_dir(name), state)
        if marker is None:
            (self.host_dir(name) / CUT).unlink(missing_ok=True)

    def remote_commands(self, name: str) -> int:
        """How many commands SSH has run on host ``name`` so far (each through its login
        shell: what the host ran, not what the deploy thinks it sent)."""
        path = self.host_dir(name) / REMOTE_LOG
        return path.read_bytes().count(b"\0") if path.exists() else 0

    def standin_runs(self, name: str) -> list[tuple[float, float]]:
        """When host ``name``'s stand-ins for FreeBSD's commands ran, (start, end) each: every
        one a Python process of about 0.1 s, what the lab adds to a deploy that FreeBSD's own
        commands (milliseconds each) would not."""
        path = self.host_dir(name) / "log.jsonl"
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        return [(e["t"] - e["s"], e["t"]) for e in entries if "t" in e]

    def stop_sshd(self, name: str) -> None:
        """Make host ``name`` unreachable over SSH (its sshd stops; everything else runs on)."""
        pid = (self.host_dir(name) / "sshd.pid").read_text().strip()
        self.run_in(name, ["kill", pid])
        for _ in range(100):
            if not self._sshd_running(name):
                return
            time.sleep(0.05)
        raise LabError(f"{name}: sshd did not stop")

    def _write_inventory(self, source: Path) -> None:
        """inventory.py (and group_data/) pointing pyinfra at the lab's hosts.

        The lab inventory reads the real one each time, so an edit to it (a moved VPS) is what
        the next deploy sees; only how pyinfra connects is the lab's.
        """
        connection = {
            "ssh_user": "root",
            "ssh_key": str(self.dir / "id_ed25519"),
            "ssh_config_file": str(self.dir / "ssh_config"),
            "ssh_known_hosts_file": str(self.dir / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
        }
        self._render(
            "inventory.py.j2",
            self.inventory,
            source=str(source),
            connection=connection,
            alias_prefix=f"{self.prefix}-",
        )
        group_data = self.dir / "group_data"
        shutil.rmtree(group_data, ignore_errors=True)
        group_data.mkdir()
        for path in sorted((source.parent / "group_data").glob("*.py")):
            self._render("group_data.py.j2", group_data / path.name, source=str(path))

    def _render(self, template: str, target: Path, **context: Any) -> None:
        """templates/lab/TEMPLATE, with the settings every rendered file gets."""
        if self._templates is None:
            self._templates = environment()
        target.write_text(self._templates.get_template(f"lab/{template}").render(**context))

    # --- down ----------------------------------------------------------------------------------

    def _end(self, namespaces: list[str]) -> None:
        """End every process in the lab's ``namespaces`` and delete them, links first."""
        killed = set()
        for namespace in namespaces:
            # Everything running in a lab namespace was started by the lab; each PID namespace
            # ends with its PID 1 (the unshare'd tasks.lab.init), which is among them.
            for pid in _run(["ip", "netns", "pids", namespace], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                killed.add(int(pid))
        for child in self._children:
            if child.pid in killed:
                child.wait(timeout=10)
        self._children = [c for c in self._children if c.pid not in killed]
        for namespace in namespaces:
            for _ in range(100):
                if not _run(["ip", "netns", "pids", namespace], check=False).stdout.split():
                    break
                time.sleep(0.05)
            # Links first: a namespace with sockets can linger after `ip netns del`.
            listing = _run(["ip", "-n", namespace, "-o", "link", "show"], check=False).stdout
            for name in re.findall(r"^\d+: ([^:@]+)", listing, flags=re.M):
                if name not in ("lo", "lo0"):
                    _run(["ip", "-n", namespace, "link", "del", name], check=False)
            _run(["ip", "netns", "del", namespace], check=False)

    def down(self) -> list[str]:
        """Remove every namespace, link and process the lab made; also after a failed run.

        Only what ``lab.json`` names: another lab's namespaces (``ownas-demo-*`` also starts
        with ``ownas-``) and a directory that is not a lab are never touched."""
        if not self.state_path.exists():
            return []
        _require_root()
        state = self.state()
        made = set(state.get("made", state["namespaces"].values()))  # (older labs: all named)
        namespaces = sorted(n for n in _netns_names() if n in made)
        self._end(namespaces)
        left = [n for n in _netns_names() if n in made]
        if left:
            raise LabError(f"namespaces {', '.join(left)} could not be removed")
        if state.get("made_var_db"):
            with contextlib.suppress(OSError):  # another lab's hosts may still use it
                Path(VAR_DB).rmdir()
        shutil.rmtree(self.dir)
        return namespaces


def _keep_retired(old: dict[str, Any], new: dict[str, Any], retired: Iterable[str]) -> None:
    """A downstream the inventory retires keeps running in the lab, tunnel link and all, as a
    VPS does until it is switched off: the deploy removes what ownas made on it and the
    router's side. It leaves the lab once the inventory no longer names it."""
    for name in retired:
        link = next((t for t in old["tunnels"] if t["site"] == name), None)
        if name not in old["managed"] or link is None:
            continue
        new["managed"].append(name)
        new["tunnels"].append(link)
        for key in ("uplinks", "wan", "gateways", "inet_addresses", "lan"):
            if name in old[key]:
                new[key][name] = old[key][name]
