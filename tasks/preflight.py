"""Pre-flight: what must hold on a host before ownas changes anything on any host.

``gather`` reads the facts of every host about to be deployed (while pyinfra prepares, before
any operation runs); ``evaluate`` judges one host's facts against its plan, without touching
anything, so it is tested with plain data. Any problem on any host stops the whole run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from netaddr import IPAddress
from pyinfra import state
from pyinfra.api.facts import get_fact
from pyinfra.context import ctx_host
from pyinfra.facts.files import FileContents
from pyinfra.facts.server import Sysctl

from tasks import facts, freebsd
from tasks.facts import Read
from tasks.model import RESTART_BGPD
from tasks.plan import HostPlan, Plan
from tasks.snapshot import SYSCTLS

MIN_MAJOR = 14
HEADER = "# Managed by ownas"
# rc.conf variables ownas writes as lists and extends (NAME="${NAME} ..."), by what they list.
LIST_VARIABLES = ("cloned_interfaces", "ipv6_static_routes", "kld_list")
_ASSIGNMENT = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="(.*)"$')


@dataclass(frozen=True)
class Preflight:
    """One host's verdict, and what the deploy needs to know from the state it found."""

    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    securelevel: int = -1
    missing_modules: tuple[str, ...] = ()
    deferred_tunnels: tuple[str, ...] = ()
    pf_deferred: bool = False
    retired_tunnels: tuple[str, ...] = ()
    retired_routes: tuple[tuple[str, int], ...] = ()
    old_loopback: str | None = None
    needs_reboot: tuple[str, ...] = field(default=())
    # The host's record of an earlier restore, as the run found it (reported first).
    restored: str | None = None
    # The running bgpd lacks the rpki module and the operator asked for its restart.
    restart_bgpd: bool = False


def assignments(lines: list[str] | None) -> dict[str, str]:
    """NAME="VALUE" lines of an ownas fragment (a file ownas did not write reads as empty)."""
    if not lines or not lines[0].startswith(HEADER):
        return {}
    return {m[1]: m[2] for line in lines if (m := _ASSIGNMENT.match(line))}


def _words(value: str, name: str) -> list[str]:
    """The words of an appended list value, without the ${NAME} it starts from."""
    return [w for w in value.split() if w != f"${{{name}}}"]


def _route_destination(args: str) -> tuple[str, int]:
    words = args.split()
    fib = int(words[words.index("-fib") + 1]) if "-fib" in words else 0
    return words[0], fib


def rendered_variables(files: dict[str, str]) -> dict[str, str]:
    """What ownas's fragments set (rc.conf.local excluded: it wins over /etc/rc.conf anyway)."""
    variables: dict[str, str] = {}
    for path, content in files.items():
        if path.startswith("/etc/rc.conf.d/"):
            variables.update(assignments(content.splitlines()))
    return variables


def rc_conf_conflicts(rc_conf: dict[str, str], ours: dict[str, str]) -> list[str]:
    """Variables /etc/rc.conf sets that ownas's fragments set differently.

    A fragment wins only for the one rc script that reads it; /etc/rc.conf's value is what
    every other script and the next boot's other readers see, and list entries would repeat.
    """
    conflicts = []
    for name, value in sorted(ours.items()):
        if name not in rc_conf:
            continue
        if name in LIST_VARIABLES:
            mine = {w.split(":")[0] for w in _words(value, name)}
            theirs = {w.split(":")[0] for w in rc_conf[name].split()}
            if mine & theirs:
                conflicts.append(f"{name} (both list {', '.join(sorted(mine & theirs))})")
        elif rc_conf[name] != value:
            conflicts.append(name)
    # Routes: the same destination under another name in /etc/rc.conf.
    our_routes = {_route_destination(v) for k, v in ours.items() if k.startswith("ipv6_route_")}
    for name in rc_conf.get("ipv6_static_routes", "").split():
        variable = "ipv6_route_" + re.sub(r"[.\-/+]", "_", name.split(":")[0])
        args = rc_conf.get(variable)
        if args and variable not in ours and _route_destination(args) in our_routes:
            conflicts.append(f"{variable} (the same route as ownas's)")
    return conflicts


def evaluate(plan: Plan, hp: HostPlan, files: dict[str, str], found: dict[str, Any]) -> Preflight:
    """Judge one host from its facts (``found``); see ``gather`` for the keys."""
    name = hp.name
    problems: list[str] = []
    notes: list[str] = []

    if found.get("restored"):
        # First, before anything else: an earlier run's change was put back on this host.
        when, _, what = found["restored"][0].partition(" ")
        notes.append(f"{name}: restored itself at {when}: {what.removeprefix('restored ')}")
    if found.get("timer"):
        problems.append(
            f"{name}: the restore timer of an earlier run that was not confirmed still waits: "
            "when it fires it puts that run's files back (at most check_timeout + "
            "confirm_timeout after that run installed them); wait for it, then rerun"
        )
    uname = found["uname"]
    if uname["system"] != "FreeBSD" or uname["major"] < MIN_MAJOR:
        problems.append(
            f"{name}: {uname['system']} {uname['release']}: ownas needs FreeBSD "
            f"{MIN_MAJOR}.0 or later (pf.conf syntax, route(8) over netlink)"
        )
    securelevel = int(found["sysctl"].get("kern.securelevel", -1))
    if securelevel >= 3:
        problems.append(
            f"{name}: securelevel {securelevel} forbids changing pf rules: set kern_securelevel "
            "to 2 or less in rc.conf and reboot"
        )
    shell = found["shell"]
    if not shell.endswith("/sh"):
        problems.append(
            f"{name}: the deploy user's login shell is {shell or 'unknown'}; ownas needs "
            "/bin/sh (csh breaks the quoting of commands): chsh -s /bin/sh"
        )

    client = found["ssh_client"]
    if client and not any(IPAddress(client) in s for s in plan.network.trusted_sources):
        problems.append(
            f"{name}: this SSH session comes from {client}, which is not in trusted_sources: "
            "the new pf.conf would refuse your next connection"
        )

    local = found["rc_conf_local"]
    if local and any(line.strip() for line in local) and not local[0].startswith(HEADER):
        problems.append(
            f"{name}: {freebsd.RC_CONF_LOCAL} exists and was not written by ownas, which owns "
            "it: move its settings to /etc/rc.conf and rerun"
        )

    conflicts = rc_conf_conflicts(found["rc_conf"], rendered_variables(files))
    if conflicts:
        problems.append(
            f"{name}: /etc/rc.conf also sets {', '.join(conflicts)}; ownas sets these in "
            "/etc/rc.conf.d/ now: remove them from /etc/rc.conf (sysrc -x NAME) and rerun"
        )

    if hp.role == "retired":
        # Its uplink's IPv6 default route must outlive ownas: as the entry says it is, and
        # nothing ownas's fragments kept for it dropped by the retirement.
        retiring = next(r for r in plan.network.retired if r.name == name)
        problems += _ipv6_uplink_problems(retiring, found["ifconfig"], found["ipv6_default"])
        problems += _uplink_lines_dropped(hp, found["routing"], found["rc_conf_local"])
    else:
        problems += _wan_problems(plan, hp, found["ifconfig"])
    if hp.role == "downstream":
        downstream = plan.network.downstream(name)
        lan = downstream.lan
        if lan is not None and lan.interface not in found["ifconfig"]:
            problems.append(
                f"{name}: {lan.interface} (the jails' LAN) does not exist: ownas routes to it but "
                'does not create it; set it up as README, "Jails", says and rerun'
            )
        problems += _ipv6_uplink_problems(downstream, found["ifconfig"], found["ipv6_default"])
        if found["ipv6_default"] is None and not problems:
            notes.append(
                f"{name}: no IPv6 default route in FIB 0: answers to what reaches the "
                "delegation through the tunnel are routed by FIB 0 before pf's reply-to sends "
                "them back through it, so they are dropped (pings from the host still work)"
            )
        if not default_deny_in_force(found["pf_status"], found["pf_rules"]):
            problems += _closing_problems(downstream, found["sockets"])

    missing = tuple(sorted(set(hp.modules) - set(found["modules"])))
    deferred: tuple[str, ...] = ()
    pf_deferred = False
    reboot: tuple[str, ...] = ()
    if missing and securelevel >= 1:
        deferred = tuple(t.interface for t in hp.tunnels if f"if_{t.kind}" in missing)
        pf_deferred = bool({"pf", "pflog"} & set(missing))
        reboot = missing
        notes.append(
            f"{name}: {', '.join(missing)} not in the kernel, and securelevel {securelevel} "
            f"forbids loading modules: reboot {name} after this deploy (kld_list now loads "
            "them at boot); until then "
            + ", ".join([*deferred, *(["pf"] if pf_deferred else [])])
            + " stay as they are"
        )

    restart_bgpd = False
    if hp.role == "router" and plan.router.rpki is not None:
        restart_bgpd = _rpki_module(name, found, problems, notes)

    old_netif = assignments(found["netif"])
    retired_tunnels = retired(hp, found["netif"])
    old_loopback = old_netif.get("ifconfig_lo0_alias0", "").split()
    loopback = old_loopback[1] if len(old_loopback) > 1 else None

    old_routing = assignments(found["routing"])
    planned_routes = {(r.destination, r.fib) for r in hp.routes}
    retired_routes = []
    for entry in _words(old_routing.get("ipv6_static_routes", ""), "ipv6_static_routes"):
        args = old_routing.get("ipv6_route_" + entry.split(":")[0])
        if args and _route_destination(args) not in planned_routes:
            retired_routes.append(_route_destination(args))
    if hp.role == "retired":
        notes.append(_retiring(name, retired_tunnels, loopback, len(retired_routes)))

    return Preflight(
        problems=tuple(problems),
        notes=tuple(notes),
        securelevel=securelevel,
        missing_modules=missing,
        deferred_tunnels=deferred,
        pf_deferred=pf_deferred,
        retired_tunnels=retired_tunnels,
        retired_routes=tuple(sorted(retired_routes)),
        old_loopback=loopback,
        needs_reboot=reboot,
        restored=found["restored"][0] if found.get("restored") else None,
        restart_bgpd=restart_bgpd,
    )


def retired(hp: HostPlan, netif: list[str] | None) -> tuple[str, ...]:
    """The tunnels an earlier deploy made (ownas's netif fragment, ``netif``) that the plan no
    longer has."""
    made = _words(assignments(netif).get("cloned_interfaces", ""), "cloned_interfaces")
    planned = {t.interface for t in hp.tunnels}
    return tuple(t for t in made if t not in planned)


def _uplink_lines_dropped(hp: HostPlan, routing: Any, local: Any) -> list[str]:
    """What an earlier deploy wrote for the uplink's IPv6 default route that a retired entry
    without its ``wan_ipv6_gateway`` would drop (rc.d/routing reads ipv6_defaultrouter;
    ipv6_cpe_wanif makes netif accept router advertisements on the uplink)."""
    kept = {
        "ipv6_defaultrouter": hp.ipv6_gateway is not None,
        "ipv6_cpe_wanif": hp.keep_ra,
    }
    written = {**assignments(routing), **assignments(local)}
    return [
        f"{hp.name}: its {variable}={written[variable]!r}, which an earlier deploy wrote for "
        "its uplink's IPv6 default route, would go: keep wan_interface and wan_ipv6_gateway "
        "in its retired entry"
        for variable, keeps in kept.items()
        if variable in written and not keeps
    ]


def _retiring(name: str, tunnels: tuple[str, ...], loopback: str | None, routes: int) -> str:
    """What retiring ``name`` removes, as an earlier deploy left it (ownas's fragments)."""
    removed = [f"tunnel {t}" for t in tunnels]
    removed += [f"lo0 address {loopback}"] if loopback else []
    removed += [f"{routes} static route{'s' * (routes != 1)}"] if routes else []
    return (
        f"{name}: retired: removes "
        + (", ".join(removed) or "nothing of an earlier deploy (none found)")
        + "; pf keeps only SSH from the trusted sources (the services its pf.conf let in are "
        "closed)"
    )


def _rpki_module(name: str, found: dict[str, Any], problems: list[str], notes: list[str]) -> bool:
    """A running bgpd without its rpki module cannot take frr.conf's rpki block (it refuses
    `rpki`, and vtysh skips the rest of the file after it): a module loads only when bgpd
    starts (lib/libfrr.c, -M), and restarting bgpd resets every BGP session. So it happens
    only when asked for; whether to restart bgpd is the answer."""
    modules = found.get("bgpd_modules")
    if modules is None or freebsd.RPKI_MODULE in modules:
        return False  # FRR not running (its first start reads bgpd_flags), or loaded
    asked = found.get(RESTART_BGPD)
    if asked == "yes":
        notes.append(
            f"{name}: bgpd restarts to load its rpki module (--data {RESTART_BGPD}=yes): "
            "every BGP session resets once"
        )
        return True
    problems.append(
        f"{name}: RPKI needs bgpd's rpki module, which the running bgpd did not load (-M rpki "
        "is read when bgpd starts): deploy with --data restart_bgpd=yes at a quiet moment to "
        "restart bgpd (every BGP session resets once), or leave rpki out"
        + (f" ({RESTART_BGPD} is {asked!r}, not 'yes')" if asked is not None else "")
    )
    return False


def _wan_problems(plan: Plan, hp: HostPlan, ifconfig: dict[str, Any]) -> list[str]:
    """ownas never renumbers a live uplink (it would cut the session): it must already match."""
    if hp.role == "router":
        wan = plan.router.wan
        interface, wanted = wan.interface, [wan.ipv4.ip]
        if wan.ipv6 is not None:
            wanted.append(wan.ipv6.ip)
        what = "the WAN"
    else:
        downstream = plan.network.downstream(hp.name)
        interface, wanted, what = downstream.wan_interface, [downstream.endpoint], "the uplink"
    live = ifconfig.get(interface)
    if live is None:
        return [f"{hp.name}: {interface} ({what}) does not exist"]
    present = {IPAddress(a) for a in live.inet} | {IPAddress(a) for a, _p, _l in live.inet6}
    absent = [str(a) for a in wanted if a not in present]
    if absent:
        return [
            f"{hp.name}: {interface} ({what}) does not have {', '.join(absent)}: ownas does "
            "not renumber a live uplink; correct the inventory or the host"
        ]
    return []


# How pfctl prints `block in log all` (with block-policy drop: "block drop in log all").
_DEFAULT_DENY = re.compile(r"^block (drop |return )?in (log )?all$")


def default_deny_in_force(status: str | None, rules: list[str]) -> bool:
    """Whether pf already drops what no rule passes (an earlier ownas deploy's default deny)."""
    return status == "Enabled" and any(_DEFAULT_DENY.match(rule) for rule in rules)


def _closing_problems(downstream: Any, sockets: list[Any]) -> list[str]:
    """Ports that listen today and that the first default-deny pf.conf would close, unless the
    inventory opens them (services; SSH is always open to the trusted sources) or says they
    may close (may_close)."""
    opened = {("tcp", 22)} | set(downstream.may_close)
    opened |= {(s.proto, port) for s in downstream.services for port in s.ports}
    closing: dict[tuple[str, int], list[str]] = {}
    for socket in sockets:
        if socket.address != "*" and IPAddress(socket.address).is_link_local():
            continue  # not reachable from beyond the link anyway
        if (socket.proto, socket.port) not in opened:
            address = f"[{socket.address}]" if ":" in socket.address else socket.address
            where = f"{socket.command} on {address}:{socket.port}"
            closing.setdefault((socket.proto, socket.port), []).append(where)
    return [
        f"{downstream.name}: pf would close {proto}/{port}, which listens today "
        f"({', '.join(sorted(set(where)))}): open it in services, or list "
        f"'{proto}/{port}' in may_close"
        for (proto, port), where in sorted(closing.items())
    ]


def _ipv6_uplink_problems(downstream: Any, ifconfig: dict[str, Any], default: Any) -> list[str]:
    """The provider's IPv6 default route in FIB 0 must survive IPv6 forwarding.

    With forwarding on, FreeBSD ignores a router advertisement's router lifetime (so the
    default route it gave expires) unless net.inet6.ip6.rfc6204w3 is 1 (sys/netinet6/nd6_rtr.c,
    nd6_ra_input), and rc stops accepting them on the uplink at the next boot (network.subr,
    ipv6_autoconfif). The inventory must say which kind of route the uplink has.
    """
    name, interface = downstream.name, downstream.wan_interface
    uplink = ifconfig.get(interface)
    learns = uplink is not None and "ACCEPT_RTADV" in uplink.nd6
    via = default.get("gateway", "?") if default else None
    if downstream.wan_ipv6_ra:
        if not learns:
            return [
                f"{name}: wan_ipv6_gateway is 'ra', but {interface} does not accept router "
                "advertisements today (no ACCEPT_RTADV in its nd6 options): set the gateway's "
                "address instead, or remove the field"
            ]
        return []
    if downstream.wan_ipv6_gateway is not None:
        wanted = str(downstream.wan_ipv6_gateway)
        if via is None or via.split("%")[0] != wanted:
            live = f"via {via}" if via else "missing"
            return [
                f"{name}: the IPv6 default route in FIB 0 is {live}, the inventory says "
                f"wan_ipv6_gateway {wanted}: ownas does not change a live uplink's route; "
                "correct the inventory or the host"
            ]
        return []
    if learns and default is not None and default.get("interface") == interface:
        return [
            f"{name}: {interface} learns the IPv6 default route from router advertisements "
            f"(via {via}), which IPv6 forwarding would drop: set wan_ipv6_gateway to 'ra' to "
            "keep them, or to the gateway's address"
        ]
    return []


def read_fact(target: Any, fact: type, *, fail_host: bool = True, **kwargs: Any) -> Any:
    """A fact of ``target``; with ``fail_host`` False a failed read does not mark the host
    failed (a router read for a downstream deployed alone, outside the run's hosts)."""
    with ctx_host.use(target):
        return get_fact(state, target, fact, kwargs=kwargs, apply_failed_hosts=fail_host)


def gather(target: Any, reads: tuple[Read, ...]) -> dict[Read, Any]:
    """Read host ``target`` once: the composite read of everything the run asks it
    (tasks.snapshot.deploy_reads), the pre-flight's questions among them."""
    return read_fact(target, facts.HostState, reads=reads)


def found_in(answers: dict[Read, Any], hp: HostPlan, data: Any) -> dict[str, Any]:
    """Every fact ``evaluate`` needs, from a host's answers (``data``: its inventory data)."""

    def get(fact: type, **kwargs: Any) -> Any:
        return facts.answer(answers, fact, **kwargs)

    found = {
        "uname": get(facts.Uname),
        "sysctl": get(Sysctl, keys=SYSCTLS),
        "shell": get(facts.LoginShell) or "",
        "ssh_client": get(facts.SshClient),
        "modules": get(facts.LoadedModules, modules=hp.modules),
        "rc_conf_local": get(FileContents, path=freebsd.RC_CONF_LOCAL),
        "rc_conf": get(facts.RcConfVariables),
        "netif": get(FileContents, path=freebsd.NETIF_CONF),
        "routing": get(FileContents, path=freebsd.ROUTING_CONF),
        "restored": get(FileContents, path=freebsd.RESTORED),
        "timer": get(facts.TimerArmed),
        "ifconfig": get(facts.Ifconfig),
    }
    if hp.role != "router":
        found["ipv6_default"] = get(facts.RouteLookup, destination="default", fib=0)
    if hp.role == "downstream":
        found |= {
            "pf_status": get(facts.PfStatus),
            "pf_rules": get(facts.PfRules),
            "sockets": get(facts.ListeningSockets),
        }
    if hp.role == "router":
        found |= {"bgpd_modules": get(facts.BgpdModules), RESTART_BGPD: data.get(RESTART_BGPD)}
    return found
