"""Every FreeBSD command and argument string ownas produces, in one place.

The rc.conf fragments and the live reload must agree: the boot configuration writes
``ipv6_route_vps01="<route args>"`` and rc.d/routing runs ``route add -inet6 <route args>``; the
deploy runs the same ``route`` with the same arguments. Both take them from here, and so do the
facts and checks. Every value interpolated below comes from the validated model (tasks.fields)
or from the constants in this module, never from the target.

What each command relies on (FreeBSD 14 sources and manual pages):
- ``service netif start IF`` creates a cloned interface listed in cloned_interfaces, configures
  only IF and re-adds only the routes named ``NAME:IF`` (rc.d/netif, rc.d/routing).
- ``ifconfig IF tunnel SRC DST`` changes a tunnel's outer addresses in place (ifconfig(8)).
- ``route -6 add|change|delete ... -fib N`` edits one route in one FIB (route(8)); never
  ``service routing restart``, which flushes every gateway route in FIB 0, FRR's included.
- ``pfctl -nf`` parses without loading; ``pfctl -f`` replaces the ruleset atomically and keeps
  states (pfctl(8)); never ``service pf restart``, which flushes states first.
- ``frr-reload.py --reload`` applies only the difference (frr10-pythontools); never
  ``service frr restart``, which resets every BGP session.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from tasks.plan import Route, Tunnel

# Where things live on a FreeBSD 14 host with the net/frr10 port.
FRR_CONFDIR = "/usr/local/etc/frr"
FRR_CONF = f"{FRR_CONFDIR}/frr.conf"
VTYSH_CONF = f"{FRR_CONFDIR}/vtysh.conf"
FRR_RUNDIR = "/var/run/frr"
FRR_RELOAD = "/usr/local/sbin/frr-reload.py"
PF_CONF = "/etc/pf.conf"
# rc.d/pf loads it when PF_CONF fails to load at boot (pf_fallback, FreeBSD 14.0 and later).
PF_FALLBACK = "/etc/pf-fallback.conf"
RC_CONF_LOCAL = "/etc/rc.conf.local"
NETIF_CONF = "/etc/rc.conf.d/netif"
ROUTING_CONF = "/etc/rc.conf.d/routing"
PACKAGES = ("frr10", "frr10-pythontools")


@dataclass(frozen=True)
class Validator:
    """An RPKI validator from FreeBSD's packages, as ownas runs it on the router."""

    package: str
    config: str  # the file ownas writes (listen on 127.0.0.1 only)
    check: str  # validates a staged config: CONFIG is replaced by its path
    prepare: str  # what the rc script's check_init requires, made once before the first start


VALIDATORS = {
    # net/routinator 0.15: rc.d/routinator runs `routinator -c CONF --rsync-command=... server
    # -d --user routinator --group routinator --pid-file=/var/routinator/routinator.pid
    # --working-dir=/var/routinator` (as root; it drops to the user after binding) and check_init
    # wants /var/routinator/tals, which nothing creates (0.15 uses its bundled RIR TALs, ARIN
    # included: src/tals.rs). repository-dir is mandatory in a config file, unknown keys are
    # fatal (src/config.rs), and the directory must be the routinator user's to write.
    "routinator": Validator(
        package="routinator",
        config="/usr/local/etc/routinator/routinator.conf",
        check="routinator -c CONFIG config >/dev/null",
        prepare="install -d -o routinator -g routinator /var/routinator "
        "/var/routinator/tals /var/routinator/repository",
    ),
    # net/fort 1.6: rc.d/fort runs `fort --configuration-file=CONF --daemon=true` as root; the
    # port makes /usr/local/etc/fort/tal, empty: `fort --init-tals` fetches the five RIR TALs
    # (src/init.c, no ARIN prompt since 1.6.0). tal is its only mandatory key (src/config.c).
    "fort": Validator(
        package="fort",
        config="/usr/local/etc/fort/fort-config.json",
        check="test -s CONFIG",
        # All five, or again: --init-tals stops at the first download that fails (src/init.c).
        prepare='[ "$(ls /usr/local/etc/fort/tal/*.tal 2>/dev/null | wc -l)" -ge 5 ] || '
        "fort --init-tals --tal /usr/local/etc/fort/tal",
    ),
}
# Suffixes of the staged (validated, not yet installed) and the previous version of a file.
# Neither ends in ".conf", so the loader never reads them from /boot/loader.conf.d.
STAGED = ".ownas-new"
PREVIOUS = ".ownas-prev"
# Beside an installed file that is not loaded yet; its reload removes it. pf.conf's tables and
# nat lines do not show in ``pfctl -sr``, and an interrupted run must still load the file
# next time, so the marker, not a comparison, says a reload is due.
PENDING = ".ownas-pending"
AWAITS_RELOAD = (PF_CONF,)


def q(value: object) -> str:
    """Quote one word for sh (defence in depth: values are already whitelisted)."""
    return shlex.quote(str(value))


# --- argument strings shared with the rc.conf fragments ------------------------------------


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


# --- reading state (facts) -----------------------------------------------------------------

UNAME = "uname -sr"
LOGIN_SHELL = 'getent passwd "$(id -un)" | cut -d: -f7'
SSH_CLIENT = 'echo "$SSH_CLIENT"'
IFCONFIG = "ifconfig"


def _vtysh_json(command: str) -> str:
    """FRR's ``COMMAND json``; nothing when FRR does not run."""
    return f"vtysh -c '{command} json' 2>/dev/null; true"


# Reading commands never fail: a missing pf module or a stopped FRR reads as "nothing".
PF_INFO = "pfctl -s info 2>/dev/null; true"
PF_RULES = "pfctl -sr 2>/dev/null; true"
BGP_NEIGHBORS = _vtysh_json("show bgp neighbors")
# The modules the running bgpd loaded (lib/libfrr.c, show modules): -M rpki shows bgpd_rpki.
BGPD_MODULES = "vtysh -d bgpd -c 'show modules' 2>/dev/null; true"
RPKI_MODULE = "bgpd_rpki"
# FRR's RPKI state: its RTR sessions (bgpd/bgp_rpki.c, show rpki cache-connection json:
# "connections", each with host, port, preference and state; {"error": ...} while none is in
# sync), then how many ROAs it holds (show rpki prefix-count json). It keeps validating with
# the ROAs it holds, each cache's for its expire interval, when the caches go away.
RPKI_STATE = (
    "vtysh -c 'show rpki cache-connection json' 2>/dev/null; echo '@'; "
    "vtysh -c 'show rpki prefix-count json' 2>/dev/null; true"
)
# Accepted routes FRR judges RPKI invalid (bgpd/bgp_route.c, bgp_show_type_rpki): none while
# the inbound policy rejects them.
RPKI_INVALID_ACCEPTED = _vtysh_json("show bgp ipv6 unicast rpki invalid")
# The inbound policy applied again to what each upstream sent (Adj-RIB-In, kept by
# soft-reconfiguration inbound; bgpd.c peer_clear_soft, bgp_soft_reconfig_in): no route
# refresh, no session reset. FRR 10.3-10.5 lose re-validations when ROAs change (bgp_rpki.c:
# an overflowing socket drops records, revalidate_single_prefix's events share one slot, and a
# prefix no upstream's route was accepted for is never looked at), and nothing re-judges the
# routes learned before the first sync (sync_expired only sets rtr_is_synced): a route can
# stay accepted though invalid, or rejected though valid (both seen in the lab).
RPKI_SOFT_IN = "vtysh -c 'clear bgp ipv6 unicast * soft in'"
_RPKI_SYNCED = "vtysh -c 'show rpki cache-connection' 2>/dev/null | grep -q '(connected)'"
# FRR validates only with ROAs: a soft reset while it holds none (no cache synced yet, or one
# that serves none) would accept every invalid route again. Decided when it runs, not from
# what the run read before it started (bgp_rpki.c print_prefix_table: "... Prefixes: N").
_RPKI_HOLDS_ROAS = "vtysh -c 'show rpki prefix-count' 2>/dev/null | grep -q 'Prefixes: [1-9]'"
RPKI_SOFT_IN_WITH_ROAS = f"if {_RPKI_HOLDS_ROAS}; then {RPKI_SOFT_IN}; fi"
# Once a cache is in sync and FRR holds ROAs (polled at most 90 times, a second apart), the
# policy again: for what FRR accepted before, which nothing else judges again (after a start,
# or a reload that changed the caches: bgp_rpki.c start() clears rtr_is_synced).
RPKI_SETTLE = (
    f"i=0; until {{ {_RPKI_SYNCED} && {_RPKI_HOLDS_ROAS}; }} || [ $i -ge 90 ]; "
    f"do sleep 1; i=$((i+1)); done; {RPKI_SOFT_IN_WITH_ROAS}"
)


def rpki_reset(caches: Iterable[tuple[object, int]]) -> str:
    """FRR's RTR sessions started over, when it holds no ROAs and a cache answers (nc -z), then
    ``RPKI_SETTLE``.

    Only for an FRR that holds no ROAs, checked when it runs (``rpki reset`` frees the ones it
    holds, rtr_mgr_free): FRR waits its retry interval (600 s) after a cache refused it, and
    rtrlib 0.8 asks a cache that restarted for its old session ID, which the cache refuses
    (stayrtr "Invalid request", seen in the lab; FORT answers Corrupt Data) until the expire
    interval has passed."""
    probes = " || ".join(f"nc -z -w 3 {q(host)} {int(port)}" for host, port in caches)
    return (
        f"if {_RPKI_HOLDS_ROAS}; then :; elif {probes}; then "
        f"vtysh -c 'rpki reset'; {RPKI_SETTLE}; fi"
    )


def policy_counts(peers: Iterable[object]) -> str:
    """Per upstream: what it sent (Adj-RIB-In), what was accepted (prefix-counts), and what the
    inbound policy filters now (filtered-routes evaluates it against today's ROAs; only its
    total line is sent back: "Total number of prefixes N", in 10.6 and later followed by ",
    total number of paths P"; no such line when nothing is filtered)."""
    parts = [
        f"echo '@ {peer}'; "
        f"vtysh -c 'show bgp ipv6 neighbors {peer} prefix-counts json' 2>/dev/null; "
        f"vtysh -c 'show bgp ipv6 neighbors {peer} filtered-routes' 2>/dev/null "
        "| grep '^Total number of prefixes'"
        for peer in peers
    ]
    return "; ".join([*parts, "true"])


# Restart bgpd alone, with rc.conf's bgpd_flags (rc.d/frr do_cmd, then its loop's `vtysh -b`,
# which loads frr.conf into it), then wait (at most 60 s) until the bgpd that answers has the
# module: watchfrr, which restarts a bgpd it lost with the same `service frr restart bgpd`, may
# race it. Every BGP session resets: only on request.
BGPD_RESTART = (
    "service frr restart bgpd; i=0; "
    f"until vtysh -d bgpd -c 'show modules' 2>/dev/null | grep -q '^{RPKI_MODULE} ' "
    "|| [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done; "
    f"vtysh -d bgpd -c 'show modules' | grep -q '^{RPKI_MODULE} '"
)
LISTENING_SOCKETS = "sockstat -46lLq -P tcp,udp"
# Every variable /etc/rc.conf sets, as sh sees them (rc.conf is shell).
RC_CONF_VARIABLES = "env -i /bin/sh -c '. /etc/rc.conf >/dev/null 2>&1; set'"


def loaded_modules(modules: Iterable[str]) -> str:
    """Print each of ``modules`` that is in the kernel (loaded or built in: kldstat -m)."""
    names = " ".join(q(m) for m in modules)
    return f'for m in {names}; do kldstat -q -m "$m" && echo "$m"; done; true'


def route_lookup(destination: str, fib: int) -> str:
    """The route for exactly ``destination`` in FIB ``fib`` (nothing if there is none)."""
    return f"route -n -6 get -fib {int(fib)} {q(destination)} 2>/dev/null; true"


def pf_file_rules(path: str) -> str:
    """The rules ``path`` expands to, printed as ``pfctl -sr`` prints the loaded ones."""
    return f"pfctl -nvf {q(path)} 2>/dev/null; true"


def advertised_routes(peer: object) -> str:
    return _vtysh_json(f"show bgp ipv6 neighbors {peer} advertised-routes")


def announced(peer: object) -> str:
    """What PEER receives from us, after the outbound route-map: ``detail`` prints each route's
    Adj-RIB-Out attributes (AS path without our own AS, which bgpd adds when it sends;
    communities), bgpd/bgp_route.c show_adj_route (FRR 10.3, seen in the lab)."""
    return _vtysh_json(f"show bgp ipv6 neighbors {peer} advertised-routes detail")


def filtered_routes(peer: object) -> str:
    """What the inbound policy refuses of what PEER sent (Adj-RIB-In, soft-reconfiguration
    inbound), judged now, each with its AS path."""
    return _vtysh_json(f"show bgp ipv6 neighbors {peer} filtered-routes")


def accepted_routes(peer: object) -> str:
    """The routes from PEER the policy accepted (in the BGP table)."""
    return _vtysh_json(f"show bgp ipv6 neighbors {peer} routes")


# The ROAs FRR validates with (bgpd/bgp_rpki.c, show rpki prefix-table json: prefix,
# prefixLenMin, prefixLenMax, asn).
ROA_TABLE = _vtysh_json("show rpki prefix-table")


def frr_pending(path: str) -> str:
    """What frr-reload.py would change in the running FRR to match ``path`` (nothing: empty)."""
    return f"{FRR_RELOAD} --test --confdir {FRR_CONFDIR} --rundir {FRR_RUNDIR} {q(path)}"


# --- staging, validating, installing -------------------------------------------------------


def staged(path: str) -> str:
    return path + STAGED


def previous(path: str) -> str:
    return path + PREVIOUS


def pending(path: str) -> str:
    return path + PENDING


def exists(path: str) -> str:
    return f"test -e {q(path)} && echo yes; true"


def pending_check(path: str) -> str:
    return f"test -e {q(pending(path))} && echo pending; true"


def make_parent(path: str) -> str:
    parent = path.rsplit("/", 1)[0] or "/"
    return f"mkdir -p {q(parent)}"


def validator(path: str) -> str:
    """The command that checks a staged ``path`` on the target, by the kind of file it is."""
    new = q(staged(path))
    for program in VALIDATORS.values():
        if path == program.config:
            return program.check.replace("CONFIG", new)
    if path in (PF_CONF, PF_FALLBACK):
        return f"pfctl -nf {new}"
    if path in (FRR_CONF, VTYSH_CONF):
        return f"vtysh --dryrun -f {new}"
    if path.startswith("/boot/"):
        # loader.conf: only NAME="VALUE" lines and comments (grep -v finds any other line).
        return f'! grep -Ev \'^(#.*|[A-Za-z_][A-Za-z0-9_.]*="[^"]*")?$\' {new}'
    return f"sh -n {new}"


def refuse_unless(check: str, path: str) -> str:
    """Run a validation ``check`` of the staged ``path``; on failure say that nothing was
    installed (the staged file waits beside the live one for inspection)."""
    message = f"{path}: the new version failed validation and was not installed ({staged(path)})"
    return f"{check} || {{ echo {q(message)} >&2; exit 1; }}"


def frr_semantic_check(path: str) -> str:
    """Check a staged frr.conf against the running daemons (parses it the way a reload would)."""
    return frr_pending(staged(path)) + " >/dev/null"


def install(path: str) -> str:
    """Move the staged file into place atomically; the previous version stays as .ownas-prev."""
    target, new, prev = q(path), q(staged(path)), q(previous(path))
    command = f"if [ -e {target} ]; then ln -f {target} {prev}; fi && mv -f {new} {target}"
    return command + (f" && touch {q(pending(path))}" if path in AWAITS_RELOAD else "")


# --- bringing the live system to the plan --------------------------------------------------


def kldload(module: str) -> str:
    return f"kldload -n {q(module)}"


# rc.conf's ipv6_gateway_enable / gateway_enable take effect at boot (rc.d/routing); live, the
# deploy sets the same sysctls.
FORWARDING = {"ipv6": "net.inet6.ip6.forwarding", "ipv4": "net.inet.ip.forwarding"}


# With IPv6 forwarding on, nd6_ra_input zeroes an RA's router lifetime (no default route from
# it) unless this is 1 (sys/netinet6/nd6_rtr.c); rc.d/netoptions sets it at boot when
# ipv6_cpe_wanif names an interface (RFC 6204, W-3).
RFC6204W3 = "net.inet6.ip6.rfc6204w3"


def netif_start(interface: str) -> str:
    """Create and configure one interface from rc.conf, and re-add its NAME:IF routes."""
    return f"service netif start {q(interface)}"


def set_tunnel(tunnel: Tunnel) -> str:
    """Change the outer endpoints of a live tunnel in place (a moved VPS)."""
    return f"ifconfig {q(tunnel.interface)} tunnel {tunnel.source} {tunnel.destination}"


def set_tunnelfib(interface: str) -> str:
    """Send a tunnel's outer packets through FIB 0 (its own FIB is set only by re-creating
    it: see ``operations.tunnels``)."""
    return f"ifconfig {q(interface)} tunnelfib 0"


def set_mtu(tunnel: Tunnel) -> str:
    return f"ifconfig {q(tunnel.interface)} mtu {tunnel.mtu}"


def set_description(interface: str, description: str) -> str:
    return f"ifconfig {q(interface)} description {q(description)}"


def add_inner(tunnel: Tunnel) -> str:
    return f"ifconfig {q(tunnel.interface)} {tunnel_inet6(tunnel)} alias"


def remove_address(interface: str, address: object) -> str:
    return f"ifconfig {q(interface)} inet6 {address} -alias"


def add_loopback(address: object, prefixlen: int) -> str:
    return f"ifconfig lo0 inet6 {address} prefixlen {int(prefixlen)} alias"


def interface_up(interface: str) -> str:
    return f"ifconfig {q(interface)} up"


def destroy(interface: str) -> str:
    return f"ifconfig {q(interface)} destroy"


def route_add(route: Route) -> str:
    return f"route -6 add {route_args(route)}"


def route_change(route: Route) -> str:
    return f"route -6 change {route_args(route)}"


def route_delete(destination: str, fib: int) -> str:
    fib_args = f" -fib {int(fib)}" if fib else ""
    return f"route -6 delete {destination}{fib_args}"


# --- putting the previous files back (rollback) --------------------------------------------
#
# The deploy records which files it installs (RUN); when a host's checks fail after its
# changes, the restore script (templates/usr/local/libexec/ownas-restore.j2, rendered with the
# values below) puts their previous versions back and re-applies them in the deploy's order,
# with the same commands as the reloads here; a host that converged has the record removed.

RESTORE_SCRIPT = "/usr/local/libexec/ownas-restore"
RUN = "/var/db/ownas/run"
RESTORED = "/var/db/ownas/restored"


def record_run(paths: Iterable[str]) -> str:
    """Write RUN: each path the install is about to replace, and whether it exists now; the
    copy to put back is taken now, so that no older copy is restored if the install stops
    half-way."""
    lines = "; ".join(
        f"if [ -e {q(p)} ]; then ln -f {q(p)} {q(previous(p))}; echo {q(p)} existed; "
        f"else rm -f {q(previous(p))}; echo {q(p)} new; fi"
        for p in paths
    )
    return f"mkdir -p {q(RUN.rsplit('/', 1)[0])} && {{ {lines}; }} > {q(RUN)}"


# Beside RUN rather than in /var/run: the pkill below matches only a process that still runs
# the restore script, so a PID left over from before a reboot never hits another process.
TIMER = "/var/db/ownas/timer.pid"
# What says a run is to be confirmed: its record, its timer, an earlier restore.
RUN_RECORDS = (RUN, TIMER, RESTORED)


def restore_now() -> str:
    """Stop the timer, then put this run's files back now."""
    return f"{disarm()}; /bin/sh {RESTORE_SCRIPT}"


def arm(seconds: int, script: str) -> str:
    """Start the restore timer: in ``seconds`` the host puts this run's files back by itself
    unless the run was confirmed. daemon(8) detaches it from the SSH session (``-f``: no
    terminal); at(1) would do, but atrun looks only every 5 minutes. ``script`` is the
    restore script as it will be after this run (the staged one, when it changes)."""
    directory = q(TIMER.rsplit("/", 1)[0])
    return f"mkdir -p {directory} && daemon -f -p {TIMER} /bin/sh {q(script)} after {int(seconds)}"


def disarm() -> str:
    """Stop the timer: only a process that still runs the restore script (a PID left over from
    before a reboot never hits another process), and only before it claimed the list."""
    return f"pkill -F {TIMER} -f {q(RESTORE_SCRIPT)} 2>/dev/null; rm -f {TIMER}"


def timer_armed() -> str:
    """Whether a restore timer runs (an earlier run's, not confirmed)."""
    return f"pgrep -F {TIMER} -f {q(RESTORE_SCRIPT)} >/dev/null 2>&1 && echo yes; true"


def read_restored() -> str:
    return f"cat {q(RESTORED)} 2>/dev/null; true"


def confirm_run() -> str:
    """The host converged and was reached again: the timer stops, nothing of this run is to
    be put back any more, and an earlier restore has been reported (by the pre-flight)."""
    return f"{disarm()}; rm -f {q(RUN)} {q(RESTORED)}"


def restore_context() -> dict[str, str]:
    """What the restore script is rendered with."""
    return {
        "script": RESTORE_SCRIPT,
        "run": RUN,
        "restored": RESTORED,
        "timer": TIMER,
        "previous": PREVIOUS,
        "netif": NETIF_CONF,
        "routing": ROUTING_CONF,
        "pf_conf": PF_CONF,
        "pf_load": f"pfctl -f {q(PF_CONF)} && rm -f {q(pending(PF_CONF))}",
        "frr_conf": FRR_CONF,
        "frr_load": f"{_FRR_RELOAD} {q(FRR_CONF)}",
        "pf_off": f"pfctl -d; rm -f {q(pending(PF_CONF))}",
        "frr_off": "service frr onestop",
    }


def pf_reload() -> str:
    """Load /etc/pf.conf (states kept); if that fails, put the previous file back and say so."""
    conf, prev, mark = q(PF_CONF), q(previous(PF_CONF)), q(pending(PF_CONF))
    return (
        f"pfctl -nf {conf} && pfctl -f {conf} && rm -f {mark} || "
        f"{{ status=$?; [ -e {prev} ] && cp -p {prev} {conf}; "
        f"echo 'pf.conf failed to load: the previous file is back, the ruleset unchanged' >&2; "
        f"exit $status; }}"
    )


PF_ENABLE = "pfctl -e"


def service_restart(name: str) -> str:
    """For a service whose restart interrupts nothing (an RPKI validator), never FRR or pf."""
    return f"service {q(name)} restart"


def service_start(name: str) -> str:
    return f"service {q(name)} start"


_FRR_RELOAD = f"{FRR_RELOAD} --reload --confdir {FRR_CONFDIR} --rundir {FRR_RUNDIR}"


def frr_reload() -> str:
    """Apply frr.conf's difference to the running FRR; on failure reload the previous file.

    A failed frr-reload is not atomic (half a change may be applied): reloading the previous
    file puts the running configuration back. frr-reload.py comes with frr10-pythontools;
    without it ``service frr reload`` only prints a hint and exits 0, so it is checked here.
    """
    conf, prev = q(FRR_CONF), q(previous(FRR_CONF))
    reload = _FRR_RELOAD
    return (
        f"test -x {FRR_RELOAD} || {{ echo '{FRR_RELOAD} is missing: install frr10-pythontools' "
        f">&2; exit 1; }}; "
        f"{reload} {conf} || {{ status=$?; if [ -e {prev} ]; then cp -p {prev} {conf}; "
        f"{reload} {conf}; fi; "
        f"echo 'frr.conf failed to apply: FRR is back on the previous configuration' >&2; "
        f"exit $status; }}"
    )


# --- checks --------------------------------------------------------------------------------


def ping(address: object, source: object | None = None, fib: int = 0, count: int = 3) -> str:
    """Ping an IPv6 address, from ``source``, in FIB ``fib`` (setfib(1)); exit 0 on a reply."""
    words = ["ping", "-6", "-c", str(int(count))]
    if source is not None:
        words += ["-S", str(source)]
    words.append(str(address))
    command = " ".join(words)
    return f"setfib {int(fib)} {command}" if fib else command


def pings(pings: Iterable[tuple[object, object | None, int]]) -> str:
    """Send every ping at once (each in the background), and say ``reply N`` for each that got
    one; wait for all, then say so (an answer even when none replied). One read costs the
    longest ping, not their sum."""
    jobs = [
        f"{{ {ping(address, source=source, fib=fib)} >/dev/null 2>&1 && echo 'reply {index}'; }} &"
        for index, (address, source, fib) in enumerate(pings)
    ]
    return " ".join([*jobs, "wait; echo pinged"])
