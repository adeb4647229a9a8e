"""Flow tests of deploy.py: the real pyinfra CLI runs deploy.py against simulated FreeBSD hosts
(tests/fakebsd.py behind pyinfra's @fake connector) and the tests read what each host ran.

They prove the order (stage, validate, install, tunnels, routes, pf, FRR, checks; the router
before any downstream), that a rerun changes nothing, that a dry run changes nothing, that moving
a VPS touches only its tunnel and the firewalls, and what each failure leaves behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks import freebsd
from tests.fakebsd import Host, Iface, World, route_key
from tests.inventories import ROOT, host, upstream, write

# Commands that only read state; everything else a host runs is an action.
READS = re.compile(
    r"^(echo '@@ownas-[0-9a-f]+ 0@@'; |uname -sr|sysctl [a-z0-9. ]+ 2>/dev/null|getent passwd|"
    r"echo \"\$SSH_CLIENT\"|for m in |\( test -e |"
    r"test -e .* (sha256sum|&& echo (pending|yes))|env -i /bin/sh|ifconfig$|route -n -6 get|"
    r"pfctl -s info|pfctl -sr|pfctl -nvf|sockstat |cat /var/db/|pgrep |service -j '' \w+ status|"
    r"pkg info|echo '@ |"
    r"vtysh (-d bgpd )?-c 'show|"
    r"/usr/local/sbin/frr-reload\.py --test .*/frr\.conf$|\{ (setfib \d+ )?ping )"
)


def fresh_world() -> World:
    """router01 and vps01 as installed: uplink configured, nothing of ownas's yet."""
    rc_conf = 'hostname="{}"\nsshd_enable="YES"\n'
    router = Host(
        "router01",
        files={"/etc/rc.conf": rc_conf.format("router01")},
        interfaces={
            "vtnet0": Iface(
                inet=["198.51.100.10"], inet6=[["2001:db8:100::96", None, 64]], mtu=1500
            ),
            "lo0": Iface(inet=["127.0.0.1"], inet6=[["::1", None, 128]], mtu=16384),
        },
    )
    vps = Host(
        "vps01",
        files={"/etc/rc.conf": rc_conf.format("vps01")},
        interfaces={
            "vtnet0": Iface(inet=["203.0.113.10"], mtu=1500),
            "lo0": Iface(inet=["127.0.0.1"], inet6=[["::1", None, 128]], mtu=16384),
            "bastille0": Iface(inet=["10.254.254.1"], mtu=1500),
        },
    )
    return World({"router01": router, "vps01": vps})


class Lab:
    """A world file, an inventory of @fake hosts, and a way to run pyinfra against them."""

    def __init__(self, directory: Path, ref: dict[str, Any]) -> None:
        self.directory = directory
        self.world_path = directory / "world.json"
        self.ref = ref
        self.runs = 0
        fresh_world().save(self.world_path)

    @property
    def world(self) -> World:
        return World.load(self.world_path)

    def edit_world(self, change) -> None:
        world = self.world
        change(world)
        world.save(self.world_path)

    def deploy(
        self, *args: str, cwd: Path = ROOT
    ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        """Run `pyinfra inventory.py deploy.py ARGS` in ``cwd``; return the result and the
        commands run."""
        return self._run("deploy.py", *args, cwd=cwd)

    def ownas(self, *args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        """Run `ownas ARGS -i inventory.py` against the world."""
        return self._run("--ownas", *args)

    def _run(
        self, *args: str, cwd: Path = ROOT
    ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        self.runs += 1
        inventory_dir = self.directory / f"run{self.runs}"
        data = {**self.ref, "inventory": {}}
        for group, hosts in self.ref["inventory"].items():
            data["inventory"][group] = [
                (f"@fake/{name}", {"fake_delay": 0, **values}) for name, values in hosts
            ]
        inventory = write(inventory_dir, data)
        before = len(self.world.log)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fakebsd",
                str(self.world_path),
                *(
                    ["--ownas", *args[1:], "-i", str(inventory)]
                    if args[0] == "--ownas"
                    else ["--", str(inventory), *args]
                ),
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
            timeout=300,
        )
        return result, self.world.log[before:]


def actions(log: list[list[str]], name: str | None = None) -> list[str]:
    return [c for h, c in log if (name is None or h == name) and not READS.match(c)]


def first(log: list[list[str]], name: str, pattern: str) -> int:
    return next(i for i, (h, c) in enumerate(log) if h == name and re.search(pattern, c))


def last(log: list[list[str]], name: str, pattern: str) -> int:
    return max(i for i, (h, c) in enumerate(log) if h == name and re.search(pattern, c))


@pytest.fixture
def lab(tmp_path: Path, ref: dict[str, Any]) -> Lab:
    ref["all"]["check_timeout"] = 0  # the simulated hosts converge at once or not at all
    return Lab(tmp_path, ref)


def test_first_deploy_converges_in_order(lab: Lab) -> None:
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    # The router finishes, checks included, before vps01 does anything.
    router_done = last(log, "router01", r"show bgp neighbors json")
    assert all(
        i > router_done for i, (h, c) in enumerate(log) if h == "vps01" and not READS.match(c)
    )
    for name in ("router01", "vps01"):
        staged = last(log, name, r"^(upload|sh -n|pfctl -nf \S+\.ownas-new|vtysh --dryrun)")
        installed = first(log, name, r"^if \[ -e ")
        assert staged < installed < first(log, name, r"^service netif start gif0")
        assert first(log, name, r"^service netif start") < first(log, name, r"^route -6 add")
        assert first(log, name, r"^route -6 add") < first(
            log, name, r"^sysctl net.inet6.ip6.forwarding=1"
        )
        assert first(log, name, r"^sysctl net.inet6") < first(
            log, name, r"^pfctl -nf /etc/pf\.conf &&"
        )
    assert first(log, "router01", r"^pfctl -nf /etc/pf\.conf &&") < first(
        log, "router01", r"^service frr start"
    )
    # FIB 1 exists before vps01's pf.conf (rtable 1) is validated and its tunnel joins FIB 1.
    assert first(log, "vps01", r"^sysctl net\.fibs=2") < first(log, "vps01", r"^pfctl -nf \S+new")
    # Never a restart of anything live.
    assert not [c for _h, c in log if re.search(r"service (netif|routing|pf|frr) restart", c)]

    world = lab.world
    router, vps = world.hosts["router01"], world.hosts["vps01"]
    assert router.interfaces["gif0"].tunnel == ["198.51.100.10", "203.0.113.10"]
    assert router.interfaces["gif1"].tunnel == ["198.51.100.10", "192.0.2.50"]
    assert router.interfaces["gre0"].tunnel == ["198.51.100.10", "198.51.100.44"]
    assert vps.interfaces["gif0"].tunnel == ["203.0.113.10", "198.51.100.10"]
    assert (vps.interfaces["gif0"].fib, vps.interfaces["gif0"].tunnelfib) == (1, 0)
    assert sorted(router.routes) == [
        "0 2a06:9801:1c:1000::/64",
        "0 2a06:9801:1c:2000::/62",
        "0 2a06:9801:1c::/48",
    ]
    assert sorted(vps.routes) == [
        "1 2001:db8:200:0:1000::/68",
        "1 2a06:9801:1c:1000::/64",
        "1 ::/0",
        # what rc.d/routing adds to every FIB at boot, added when net.fibs grew live
        "1 ::/96",
        "1 ::1/128",
        "1 ::ffff:0.0.0.0/96",
        "1 fe80::/10",
        "1 ff02::/16",
    ]
    assert router.pf_enabled and router.pf_loaded and vps.pf_enabled
    assert router.frr_connections == {"2001:db8:300::1": 1, "2001:db8:100::ff": 1}
    # The unmanaged site is not configured in this world: reported, but not a failure.
    assert "unmanaged dcgw01" in result.stderr


PF_RELOAD = "pfctl -nf /etc/pf.conf && pfctl -f /etc/pf.conf && rm -f /etc/pf.conf.ownas-pending"


@pytest.mark.parametrize("change", ["trusted source", "jail nat"])
def test_a_pf_conf_change_outside_the_rules_is_loaded(lab: Lab, change: str) -> None:
    """A new trusted source changes only a table, a new NAT network only a nat line: neither
    shows in ``pfctl -sr``. Installing pf.conf marks it for reload, so it is loaded all the
    same, and the marker is gone afterwards."""
    assert lab.deploy("-y")[0].returncode == 0
    if change == "trusted source":
        lab.ref["all"]["trusted_sources"] = [*lab.ref["all"]["trusted_sources"], "198.51.100.102"]
        hosts = ["router01", "vps01"]
    else:
        host(lab.ref, "vps01")["lan"]["nat"] = "10.254.253.0/24"
        hosts = ["vps01"]
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    for name in ("router01", "vps01"):
        reloads = [c for c in actions(log, name) if c.startswith(PF_RELOAD)]
        assert len(reloads) == (1 if name in hosts else 0), name
        assert "/etc/pf.conf.ownas-pending" not in lab.world.hosts[name].files


def test_a_pf_conf_installed_by_an_interrupted_run_is_loaded_by_the_next(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    world = lab.world
    world.hosts["vps01"].files["/etc/pf.conf.ownas-pending"] = ""  # installed, never loaded
    world.save(lab.world_path)
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert [c for c in actions(log, "vps01") if c.startswith(PF_RELOAD)]
    assert "/etc/pf.conf.ownas-pending" not in lab.world.hosts["vps01"].files


# Commands each host runs on an unchanged rerun with -y (all reads; the lab's login shell
# counts the same, `make bench`): a ceiling against regressions, to come down to a few reads.
# Commands per host (tasks.snapshot): an unchanged rerun reads each host's state twice (the
# pre-flight, then once executing), the router's FRR state once, and polls the checks once; a
# dry run reads the state, and the router's FRR state, once; a change of one line in frr.conf
# adds the commands that change and reads the router again after the install (state, FRR
# state), in the checks' poll and from the confirmation's new connection.
RERUN_COMMANDS = {"router01": 4, "vps01": 3}
DRY_COMMANDS = {"router01": 2, "vps01": 1}
ONE_LINE_READS = {"router01": 6, "vps01": 3}


def commands_of(log: list[list[str]], name: str, reads_only: bool = False) -> int:
    return len([c for h, c in log if h == name and (not reads_only or READS.match(c))])


def test_rerun_changes_nothing(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert actions(log) == []
    for name, ceiling in RERUN_COMMANDS.items():
        assert commands_of(log, name) <= ceiling, name
    assert lab.world.hosts["router01"].frr_connections == {
        "2001:db8:300::1": 1,
        "2001:db8:100::ff": 1,
    }


def test_dry_run_shows_the_diff_and_the_reloads_and_changes_nothing(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    upstream(lab.ref, "lagrange")["prepend"] = 3
    before = lab.world
    result, log = lab.deploy("--dry", "--diff")
    assert result.returncode == 0, result.stderr
    assert actions(log) == []
    assert lab.world.hosts == before.hosts
    for name, ceiling in DRY_COMMANDS.items():
        assert commands_of(log, name) <= ceiling, name
    output = result.stderr
    assert "will modify /usr/local/etc/frr/frr.conf" in output
    assert "-  set as-path prepend 201379 201379\n" in output
    assert "+  set as-path prepend 201379 201379 201379\n" in output
    assert "will run: test -x /usr/local/sbin/frr-reload.py" in output
    assert "frr-reload.py --reload --confdir" in output
    assert "will run: pfctl" not in output  # pf.conf does not change


def test_a_one_line_change_reads_each_host_a_few_times(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    upstream(lab.ref, "lagrange")["prepend"] = 3
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert [c for c in actions(log, "router01") if "frr-reload.py --reload" in c]
    for name, ceiling in ONE_LINE_READS.items():
        assert commands_of(log, name, reads_only=True) <= ceiling, name


def test_a_host_whose_state_cannot_be_read_stops_the_run_in_one_line(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    lab.edit_world(lambda w: w.hosts["vps01"].fail.append("echo '@@ownas-"))
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "vps01: its state could not be read (the lines above say why)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "was not reached over SSH" not in result.stderr
    assert max(len(line) for line in result.stderr.splitlines()) < 300
    assert actions(log) == []


def test_moving_a_vps_touches_its_tunnel_and_the_firewalls_only(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    host(lab.ref, "vps01")["ssh_hostname"] = "203.0.113.99"

    def moved(world: World) -> None:  # the provider gave the VPS a new address
        world.hosts["vps01"].interfaces["vtnet0"].inet = ["203.0.113.99"]

    lab.edit_world(moved)
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    reloads = [
        c
        for c in actions(log)
        if not re.match(r"upload|sh -n|pfctl -nf \S+new|vtysh|if \[|mkdir|pkill -F /var/db", c)
    ]
    assert [c for c in reloads if "pfctl" not in c] == [
        "ifconfig gif0 tunnel 198.51.100.10 203.0.113.99",
        "ifconfig gif0 tunnel 203.0.113.99 198.51.100.10",
    ]
    assert len([c for c in reloads if c.startswith("pfctl -nf /etc/pf.conf &&")]) == 2
    installed = sorted(c.split()[3] for c in actions(log) if c.startswith("if [ -e "))
    assert installed == [
        "/etc/pf.conf",
        "/etc/pf.conf",
        "/etc/rc.conf.d/netif",
        "/etc/rc.conf.d/netif",
    ]
    assert not [c for c in actions(log) if re.search(r"gif1|gre0|frr-reload|service frr", c)]
    assert lab.world.hosts["router01"].frr_connections == {
        "2001:db8:300::1": 1,
        "2001:db8:100::ff": 1,
    }


def test_a_file_that_fails_validation_is_not_installed(lab: Lab) -> None:
    lab.edit_world(lambda w: w.hosts["router01"].fail.append("pfctl -nf /etc/pf.conf.ownas-new"))
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "router01" in result.stderr and "told to fail" in result.stderr
    assert not [c for c in actions(log, "router01") if c.startswith("if [ -e ")]
    assert actions(log, "vps01") == []
    assert "/etc/pf.conf" not in lab.world.hosts["router01"].files


def test_a_router_that_does_not_converge_stops_before_any_downstream(lab: Lab) -> None:
    lab.edit_world(lambda w: w.upstreams_down.append("2001:db8:100::ff"))
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert (
        "router01: BGP lagrange (2001:db8:100::ff, AS209735): Active, not Established"
        in result.stderr
    )
    assert actions(log, "vps01") == []
    # What this first run installed is taken away again (there was nothing before it).
    restore = "; /bin/sh /usr/local/libexec/ownas-restore"
    assert [c for c in actions(log, "router01") if c.endswith(restore)]
    assert "restored /etc/rc.conf.local" in result.stderr
    router = lab.world.hosts["router01"]
    assert "/usr/local/etc/frr/frr.conf" not in router.files
    # pf.conf and frr.conf were the first ones: what ran before them, pf off and FRR stopped.
    assert not router.pf_enabled and not router.frr_running


def test_a_change_that_breaks_a_session_is_rolled_back_by_the_same_run(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    before = lab.world.hosts["router01"].files["/usr/local/etc/frr/frr.conf"]
    upstream(lab.ref, "lagrange")["prepend"] = 3
    lab.edit_world(lambda w: w.upstreams_down.append("2001:db8:100::ff"))  # ...and it drops
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "] 1 check(s) did not converge within 0 s" in result.stderr
    assert (
        "] restored /usr/local/etc/frr/frr.conf (the previous files, re-applied in order): "
        "checking again" in result.stderr
    )
    assert "the previous configuration is back but does not converge either" in result.stderr
    router = lab.world.hosts["router01"]
    assert router.files["/usr/local/etc/frr/frr.conf"] == before == router.frr_running
    assert "/var/db/ownas/run" not in router.files
    assert actions(log, "vps01") == []
    # The next run says so first; once it converges, the record is gone.
    lab.edit_world(lambda w: w.upstreams_down.clear())
    upstream(lab.ref, "lagrange")["prepend"] = 2
    result, _log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert (
        "router01: restored itself at 2026-12-03T07:00:00Z: /usr/local/etc/frr/frr.conf"
        in result.stderr.split("Starting operation")[0]
    )
    assert "/var/db/ownas/restored" not in lab.world.hosts["router01"].files


def test_a_converged_run_is_confirmed_from_a_new_connection_and_leaves_no_timer(
    lab: Lab,
) -> None:
    """Each host arms its restore timer after staging, before installing; once its checks pass,
    the run connects to it again and confirms: no record and no timer are left."""
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    for name in ("router01", "vps01"):
        done = actions(log, name)
        armed = done.index(
            "mkdir -p /var/db/ownas && daemon -f -p /var/db/ownas/timer.pid /bin/sh "
            "/usr/local/libexec/ownas-restore.ownas-new after 120"  # check_timeout 0 + 120
        )
        installed = next(i for i, c in enumerate(done) if c.startswith("if [ -e "))
        assert armed < installed
        assert done[-1].endswith("; rm -f /var/db/ownas/run /var/db/ownas/restored")
        assert "/var/db/ownas/run" not in lab.world.hosts[name].files
        assert "/var/db/ownas/timer.pid" not in lab.world.hosts[name].files
    assert re.search(r"router01\]\s+Connected \(again, to confirm the change\)", result.stderr)
    result, log = lab.deploy("-y")  # nothing installed: no timer, nothing to confirm
    assert actions(log) == []


def test_confirm_timeout_0_arms_no_timer(lab: Lab) -> None:
    lab.ref["all"]["confirm_timeout"] = 0
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert not [c for c in actions(log) if "daemon" in c]
    assert "confirm_timeout is 0: no restore timer" in result.stderr


def test_the_dry_run_says_which_hosts_would_be_armed(lab: Lab) -> None:
    result, log = lab.deploy("--dry")
    assert result.returncode == 0, result.stderr
    assert actions(log) == []
    for name in ("router01", "vps01"):
        assert re.search(
            rf"{name}\]\s+arms a restore timer: 120 s \(check_timeout 0 \+ confirm_timeout "
            r"120\) to confirm the change from a new connection",
            result.stderr,
        )


def test_the_dry_run_says_the_routers_changes_before_the_downstreams(lab: Lab) -> None:
    # The router answers slowly (a far-away link): its lines still come first.
    host(lab.ref, "router01")["fake_delay"] = 0.01
    result, _log = lab.deploy("--dry")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "will run:" in line]
    hosts = [re.search(r"\[@fake/(\w+)\]", line).group(1) for line in said]
    assert hosts == sorted(hosts, key=["router01", "vps01"].index), said
    assert hosts.count("router01") > 10 and hosts.count("vps01") > 10


def test_a_pool_smaller_than_the_hosts_prepares_them_without_waiting_forever(lab: Lab) -> None:
    # With --parallel 1, pyinfra reads one host's deploy.py at a time, in no set order: a
    # downstream read first must not wait for the router, whose turn would never come (gevent
    # ends such a run at once). Several runs, as the order differs from run to run.
    for _ in range(4):
        result, _log = lab.deploy("--dry", "--parallel", "1")
        assert result.returncode == 0, result.stderr
        assert "will run:" in result.stderr


def test_a_deploy_ends_with_one_line_per_host_saying_it_converged(lab: Lab) -> None:
    result, _log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    end = result.stderr.rstrip().splitlines()[-2:]
    assert [line.strip() for line in end] == [
        "router01: converged (1 warning above): tunnels gif0, gif1, gre0 configured and up; ifog "
        "answers through gre0; 3 routes in place; pf rules loaded; BGP ifog, lagrange "
        "Established, advertising 2a06:9801:1c::/48",
        "vps01: converged: tunnel gif0 configured and up; router01 answers through gif0 in FIB 1, "
        "also from 2a06:9801:1c:1000::1; 8 routes in place; pf rules loaded",
    ]
    assert "(unmanaged dcgw01: is its side configured? see its settings.txt): no reply" in (
        result.stderr
    )
    # The inventory's warnings are said once, before connecting, and fail nothing.
    before = result.stderr.split("--> Connecting to hosts")[0]
    assert before.count("vps01.endpoint: 203.0.113.10 is a documentation address (RFC 5737)") == 1
    assert result.stderr.count("is a documentation address") == 3
    # A rerun that changes nothing ends the same way; a dry run proves nothing, and says so.
    result, _log = lab.deploy("-y")
    assert result.stderr.rstrip().splitlines()[-2:] == end
    result, _log = lab.deploy("--dry")
    assert "converged" not in result.stderr


def test_a_preflight_problem_on_any_host_changes_nothing_anywhere(lab: Lab) -> None:
    def old(world: World) -> None:
        world.hosts["vps01"].release = "13.2-RELEASE"
        world.hosts["router01"].shell = "/bin/csh"

    lab.edit_world(old)
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "vps01: FreeBSD 13.2-RELEASE: ownas needs FreeBSD 14.0 or later" in result.stderr
    assert "router01: the deploy user's login shell is /bin/csh" in result.stderr
    assert actions(log) == []


def test_a_bad_inventory_contacts_no_host(lab: Lab) -> None:
    lab.ref["all"]["asn"] = 65001
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert (
        "group_data/all.py: asn: 65001 is in 64512-65534, for private use (RFC 6996)"
        in result.stderr
    )
    assert "no host was contacted" in result.stderr
    assert log == []


def test_a_module_that_securelevel_keeps_out_waits_for_a_reboot(lab: Lab) -> None:
    def hardened(world: World) -> None:
        router = world.hosts["router01"]
        router.securelevel = 2
        router.modules = ["if_gif", "pf", "pflog"]  # if_gre is not loaded

    lab.edit_world(hardened)
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "reboot router01 after this deploy" in result.stderr
    assert "router01: reboot: if_gre can only load at boot at securelevel 2" in result.stderr
    assert not [c for c in actions(log) if c.startswith("kldload") or "gre0" in c]
    # Not rolled back (the reboot needs the new files), but confirmed: no timer is left.
    assert "/var/db/ownas/timer.pid" not in lab.world.hosts["router01"].files
    assert "/var/db/ownas/run" not in lab.world.hosts["router01"].files
    # Everything else was applied: the boot configuration now loads if_gre.
    assert "if_gre" in lab.world.hosts["router01"].files["/etc/rc.conf.d/kld"]
    assert "gif0" in lab.world.hosts["router01"].interfaces


@pytest.mark.parametrize("fib", [0, 1])
def test_a_hand_built_tunnel_is_re_created_in_its_fib(lab: Lab, fib: int) -> None:
    """Adopting a VPS whose gif0 was built by hand in FIB 0, or moved to FIB 1 with
    ``ifconfig gif0 fib 1`` after its addresses were set: the far end's route is in FIB 0
    (SIOCSIFFIB moves no route), so the deploy re-creates the tunnel from rc.conf, where
    ``fib 1`` comes before the addresses."""

    def hand_built(world: World) -> None:
        world.hosts["vps01"].fibs = 2
        world.hosts["vps01"].interfaces["gif0"] = Iface(
            tunnel=["203.0.113.10", "198.51.100.10"],
            inet6=[["2a06:9801:1c:ffff::2", "2a06:9801:1c:ffff::1", 128]],
            fib=fib,
            route_fib=0,
            kind="gif",
        )

    lab.edit_world(hand_built)
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    vps = actions(log, "vps01")
    assert vps.index("ifconfig gif0 destroy") + 1 == vps.index("service netif start gif0")
    assert not [c for c in vps if re.match(r"ifconfig gif0 fib ", c)]
    gif0 = lab.world.hosts["vps01"].interfaces["gif0"]
    assert (gif0.fib, gif0.route_fib, gif0.tunnelfib) == (1, 1, 0)


def _ra_uplink(world: World) -> None:
    world.hosts["vps01"].ra_router = "fe80::1"


def test_an_uplink_on_router_advertisements_is_refused_unless_the_inventory_keeps_them(
    lab: Lab,
) -> None:
    """Forwarding would silently drop the VPS's provider IPv6 default route: the pre-flight
    refuses until the inventory says how the uplink gets it, and nothing changes meanwhile."""
    lab.edit_world(_ra_uplink)
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "vps01: vtnet0 learns the IPv6 default route from router advertisements" in (
        result.stderr
    )
    assert actions(log) == []


def test_router_advertisements_kept_under_forwarding(lab: Lab) -> None:
    lab.edit_world(_ra_uplink)
    host(lab.ref, "vps01")["wan_ipv6_gateway"] = "ra"
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    vps = actions(log, "vps01")
    assert vps.index("sysctl net.inet6.ip6.rfc6204w3=1") < vps.index(
        "sysctl net.inet6.ip6.forwarding=1"
    )
    assert 'ipv6_cpe_wanif="vtnet0"' in lab.world.hosts["vps01"].files["/etc/rc.conf.local"]
    # The check proved the default route is still there; a rerun does nothing.
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert actions(log) == []


def test_a_first_default_deny_does_not_close_a_listening_port_unasked(lab: Lab) -> None:
    def listening(world: World) -> None:
        world.hosts["vps01"].sockets.append(["tcp", "*", 8080, "nginx"])

    lab.edit_world(listening)
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert (
        "vps01: pf would close tcp/8080, which listens today (nginx on *:8080): open it in "
        "services, or list 'tcp/8080' in may_close" in result.stderr
    )
    assert actions(log) == []
    host(lab.ref, "vps01")["services"] = [{"proto": "tcp", "port": 8080}]
    result, _log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert any("port 8080" in rule for rule in lab.world.hosts["vps01"].pf_loaded)


def test_a_downstream_alone_needs_its_router_to_run_its_side_already(lab: Lab) -> None:
    """``--limit vps01`` reads the router (read-only) and refuses while the router does not
    run vps01's tunnel, route and pf as planned: both ends would disagree."""
    result, log = lab.deploy("-y", "--limit", "@fake/vps01")
    assert result.returncode == 1
    assert (
        "vps01: router01 does not run its side of the tunnel yet (tunnel gif0 to vps01: does "
        "not exist; route 2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2: not as planned; "
        "/etc/pf.conf is not the planned one; pf is not enabled): deploy router01 first "
        "(without --limit, or --limit router01)" in result.stderr
    )
    assert actions(log) == []
    assert lab.deploy("-y")[0].returncode == 0
    result, log = lab.deploy("-y", "--limit", "@fake/vps01")
    assert result.returncode == 0, result.stderr
    assert actions(log) == []
    # The VPS moved, but only vps01 is deployed: the router's gif0 still names the old address.
    host(lab.ref, "vps01")["ssh_hostname"] = "203.0.113.99"
    lab.edit_world(
        lambda w: w.hosts["vps01"].interfaces["vtnet0"].inet.__setitem__(0, "203.0.113.99")
    )
    result, log = lab.deploy("-y", "--limit", "@fake/vps01")
    assert result.returncode == 1
    assert "endpoints are 198.51.100.10 -> 203.0.113.10, planned 198.51.100.10 -> 203.0.113.99" in (
        result.stderr
    )
    assert actions(log) == []


def test_a_folder_with_deploy_py_but_not_config_py_is_told_to_copy_it(
    lab: Lab, tmp_path: Path
) -> None:
    folder = tmp_path / "operator"
    folder.mkdir()
    (folder / "deploy.py").write_text((ROOT / "deploy.py").read_text())
    result, log = lab.deploy("-y", cwd=folder)
    assert result.returncode == 1
    assert (
        "ownas's config.py was not read (pyinfra reads it from the current directory only), so "
        f"nothing would stop a half-done run: copy ownas's config.py beside deploy.py in {folder}, "
        "and run pyinfra there" in result.stderr
    )
    assert actions(log) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("-y", "--fail-percent", "50"), "--fail-percent 50: a host that fails must stop the run"),
        (("-y", "--serial"), "--serial: ownas orders the hosts itself"),
        (("-y", "--no-wait"), "--no-wait: ownas orders the hosts itself"),
        ((), "no terminal to confirm the changes on: add --dry to look, or -y to apply"),
    ],
)
def test_ways_of_starting_pyinfra_that_would_break_the_order_are_refused(
    lab: Lab, args: tuple[str, ...], line: str
) -> None:
    result, log = lab.deploy(*args)
    assert result.returncode == 1
    assert result.stderr.count(line) == 1  # once, not once per host
    assert "nothing was changed on any host" in result.stderr
    assert "Traceback" not in result.stderr
    assert actions(log) == []


def test_a_host_whose_earlier_change_waits_for_its_timer_is_left_alone(lab: Lab) -> None:
    """An earlier run armed the timer and was never confirmed (it lost the host): until the
    timer fires, a new run would have its own files put back by it. Refused, nothing changed."""
    lab.edit_world(lambda w: w.hosts["vps01"].files.update({"/var/db/ownas/timer.pid": "42"}))
    result, log = lab.deploy("-y")
    assert result.returncode == 1
    assert "vps01: the restore timer of an earlier run that was not confirmed still waits" in (
        result.stderr
    )
    assert actions(log) == []


# --- RPKI -----------------------------------------------------------------------------------


def test_caches_gone_is_a_warning_and_frr_keeps_validating_with_its_roas(lab: Lab) -> None:
    """Nothing is done: ``rpki reset`` would free the ROAs FRR still validates with."""
    assert lab.deploy("-y")[0].returncode == 0
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "rtr_down", True))
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert (
        "router01: RPKI: no RTR cache in sync (127.0.0.1 port 3323, 2001:db8:ffff:3::323 port "
        "3323): FRR validates with the 5 ROAs it holds until they expire"
    ) in result.stderr
    assert actions(log, "router01") == []


def test_an_frr_without_roas_starts_its_rtr_sessions_over_when_a_cache_answers(
    lab: Lab,
) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    caches = [("127.0.0.1", 3323), ("2001:db8:ffff:3::323", 3323)]
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "roas", 0))
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "rtr_down", True))
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert "every route is accepted unvalidated until one answers" in result.stderr
    assert actions(log, "router01") == [freebsd.rpki_reset(caches)]  # no cache answered
    assert lab.world.hosts["router01"].roas == 0
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "rtr_down", False))
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "roas", 0))
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert "RPKI" not in result.stderr
    assert lab.world.hosts["router01"].roas == 5
    assert lab.world.hosts["router01"].frr_connections == {
        "2001:db8:300::1": 1,
        "2001:db8:100::ff": 1,
    }


def test_a_stale_rpki_decision_gets_the_policy_again_without_a_reset(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    lab.edit_world(lambda w: setattr(w.hosts["router01"], "policy_stale", True))
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    assert actions(log, "router01") == [freebsd.RPKI_SOFT_IN_WITH_ROAS]
    assert not lab.world.hosts["router01"].policy_stale


def test_rpki_on_a_running_bgpd_without_its_module_needs_a_restart_asked_for(
    lab: Lab, ref: dict[str, Any]
) -> None:
    # None, not left out: pyinfra also reads the project's own group_data (the deploy's folder).
    rpki, ref["routers"]["rpki"] = ref["routers"]["rpki"], None
    assert lab.deploy("-y")[0].returncode == 0
    assert lab.world.hosts["router01"].bgpd_modules == ["libfrr", "bgpd"]
    ref["routers"]["rpki"] = rpki
    before = lab.world.hosts
    result, log = lab.deploy("-y")
    assert result.returncode != 0
    assert "router01: RPKI needs bgpd's rpki module" in result.stderr
    assert actions(log) == []
    assert lab.world.hosts == before

    result, log = lab.deploy("-y", "--data", "restart_bgpd=yes")
    assert result.returncode == 0, result.stderr
    assert "router01: bgpd restarts to load its rpki module" in result.stderr
    router = actions(log, "router01")
    restart = router.index(freebsd.BGPD_RESTART)
    assert router[restart : restart + 3] == [
        freebsd.BGPD_RESTART,
        freebsd.frr_reload(),
        freebsd.RPKI_SETTLE,
    ]
    assert lab.world.hosts["router01"].bgpd_modules == ["libfrr", "bgpd", "bgpd_rpki"]
    assert lab.world.hosts["router01"].frr_connections == {
        "2001:db8:300::1": 2,
        "2001:db8:100::ff": 2,
    }


def test_fort_in_place_of_routinator(lab: Lab, ref: dict[str, Any]) -> None:
    ref["routers"]["rpki"]["validator"] = "fort"
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    router = lab.world.hosts["router01"]
    assert "fort" in router.packages and "fort" in router.services
    assert json.loads(router.files["/usr/local/etc/fort/fort-config.json"])["server"] == {
        "address": ["127.0.0.1"],
        "port": "8323",
    }
    assert 'fort_enable="YES"' in router.files["/etc/rc.conf.d/fort"]
    commands = actions(log, "router01")
    prepare = commands.index(freebsd.VALIDATORS["fort"].prepare)
    assert commands[prepare + 1] == "service fort start"
    assert commands.index("service fort start") < commands.index("service frr start")


def test_a_reload_with_rpki_judges_again_once_in_sync(lab: Lab) -> None:
    """A changed cache list restarts FRR's RTR (bgp_rpki.c start()): after the reload, the
    policy again once a cache is in sync and FRR holds ROAs."""
    assert lab.deploy("-y")[0].returncode == 0
    upstream(lab.ref, "lagrange")["prepend"] = 3
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stderr
    commands = actions(log, "router01")
    reload = commands.index(freebsd.frr_reload())
    assert commands[reload + 1] == freebsd.RPKI_SETTLE


# --- ownas status ------------------------------------------------------------------------------


def test_status_reads_each_host_once_and_changes_nothing(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    result, log = lab.ownas("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "ownas-status/1" and report["converged"]
    assert [(h["name"], h["reached"]) for h in report["hosts"]] == [
        ("router01", True),
        ("vps01", True),
    ]
    assert actions(log) == []
    # One composite read per host; ping(8) runs in it.
    assert {name: commands_of(log, name) for name in ("router01", "vps01")} == {
        "router01": 1,
        "vps01": 1,
    }
    assert [s["upstream"] for s in report["sessions"]] == ["ifog", "lagrange"]
    assert all(s["state"] == "Established" for s in report["sessions"])
    assert {p["host"]: (p["enabled"], p["in_sync"]) for p in report["pf"]} == {
        "router01": (True, True),
        "vps01": (True, True),
    }
    assert all(r["present"] for r in report["routes"])
    assert [f["line"] for f in report["findings"] if not f["warning"]] == []


def test_status_exit_status_follows_the_network(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    lab.edit_world(lambda w: setattr(w.hosts["vps01"], "pf_enabled", False))
    result, _ = lab.ownas("status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("AS201379 2a06:9801:1c::/48: not converged: 1 problem\n")
    assert "\n  problem  vps01: pf is not enabled\n" in result.stdout
    result, _ = lab.ownas("status", "--markdown")
    assert result.returncode == 1
    assert "| problem | vps01: pf is not enabled |" in result.stdout
    lab.edit_world(lambda w: w.hosts["vps01"].fail.append("echo '@@ownas-"))
    result, _ = lab.ownas("status", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads(result.stdout)
    vps01 = next(h for h in report["hosts"] if h["name"] == "vps01")
    assert not vps01["reached"] and vps01["error"]
    assert "Traceback" not in result.stderr


# --- retiring a downstream ---------------------------------------------------------------------


def test_retiring_a_downstream_removes_both_sides_and_leaves_ssh(lab: Lab) -> None:
    assert lab.deploy("-y")[0].returncode == 0
    inventory = lab.ref["inventory"]
    vps01 = host(lab.ref, "vps01")
    inventory["downstreams"] = []
    inventory["retired"] = [("vps01", {"ssh_hostname": vps01["ssh_hostname"]})]
    before, _ = lab.ownas("status")  # the inventory says retired; nothing is deployed yet
    assert before.returncode == 1, before.stdout + before.stderr
    assert "  problem  router01: tunnel gif0: retired, still exists\n" in before.stdout
    assert "  problem  vps01: tunnel gif0: retired, still exists\n" in before.stdout
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "vps01: retired: removes tunnel gif0, lo0 address 2a06:9801:1c:1000::1, 3 static routes; "
        "pf keeps only SSH from the trusted sources" in result.stderr
    )
    changes = [
        c
        for c in actions(log, "vps01")
        if re.match(r"ifconfig|route -6 delete|pfctl -nf /etc/pf.conf &&", c)
    ]
    # The FIB 1 default route through gif0 goes with the interface (if_detach flushes its
    # routes), so the routes operation finds it gone.
    assert changes[:4] == [
        "ifconfig gif0 destroy",
        "ifconfig lo0 inet6 2a06:9801:1c:1000::1 -alias",
        "route -6 delete 2001:db8:200:0:1000::/68 -fib 1",
        "route -6 delete 2a06:9801:1c:1000::/64 -fib 1",
    ]
    assert changes[4].startswith("pfctl -nf /etc/pf.conf && pfctl -f /etc/pf.conf")
    world = lab.world
    assert "gif0" not in world.hosts["vps01"].interfaces
    assert "gif0" not in world.hosts["router01"].interfaces
    assert (
        "pass in quick inet6 proto tcp from <trusted_ipv6> to ( self ) port 22 no state"
        in world.hosts["vps01"].pf_loaded
    )
    assert not [r for r in world.hosts["vps01"].pf_loaded if "gif0" in r or "rtable" in r]
    rerun, log = lab.deploy("-y")
    assert rerun.returncode == 0, rerun.stderr
    assert actions(log) == []
    after, _ = lab.ownas("status")
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_retired_host_that_cannot_be_read_is_left_as_it_is(lab: Lab) -> None:
    """Its read fails (pyinfra does not stop the run for a retired host): a warning, nothing
    on it changes, the router's side is removed, and the run exits 0."""
    assert lab.deploy("-y")[0].returncode == 0
    vps01 = host(lab.ref, "vps01")
    lab.ref["inventory"]["downstreams"] = []
    lab.ref["inventory"]["retired"] = [("vps01", {"ssh_hostname": vps01["ssh_hostname"]})]
    lab.edit_world(lambda w: w.hosts["vps01"].fail.append("echo '@@ownas-"))
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vps01: retired, and its state could not be read: left as it is" in result.stderr
    assert "Traceback" not in result.stderr
    assert actions(log, "vps01") == []
    assert "ifconfig gif0 destroy" in actions(log, "router01")


def test_a_retired_entry_that_would_drop_the_uplink_s_ipv6_route_is_left_as_it_is(
    lab: Lab,
) -> None:
    """vps01 had wan_ipv6_gateway (ipv6_defaultrouter in ownas's routing fragment); retired
    without it, the route would go at the next boot: vps01 is left as it is, with why."""
    vps01 = host(lab.ref, "vps01")
    vps01["wan_ipv6_gateway"] = "2001:db8:200::1"

    def provider_ipv6(world: World) -> None:
        world.hosts["vps01"].interfaces["vtnet0"].inet6 = [["2001:db8:200::10", None, 64]]
        world.hosts["vps01"].routes[route_key("default", 0)] = {
            "gateway": "2001:db8:200::1",
            "interface": "vtnet0",
        }

    lab.edit_world(provider_ipv6)
    assert lab.deploy("-y")[0].returncode == 0
    lab.ref["inventory"]["downstreams"] = []
    lab.ref["inventory"]["retired"] = [("vps01", {"ssh_hostname": vps01["ssh_hostname"]})]
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "vps01: its ipv6_defaultrouter='2001:db8:200::1', which an earlier deploy wrote for its "
        "uplink's IPv6 default route, would go: keep wan_interface and wan_ipv6_gateway in its "
        "retired entry (retired: left as it is this run)" in result.stderr
    )
    assert actions(log, "vps01") == []
    retired = {k: vps01[k] for k in ("ssh_hostname", "wan_interface", "wan_ipv6_gateway")}
    lab.ref["inventory"]["retired"] = [("vps01", retired)]
    result, log = lab.deploy("-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ifconfig gif0 destroy" in actions(log, "vps01")
    assert "ipv6_defaultrouter=" in lab.world.hosts["vps01"].files["/etc/rc.conf.d/routing"]
