"""rc.conf fragments are shell: /bin/sh parses and sources each one, and the variables it sets
are exactly those the reference network needs (values from reference-network.md).

Debian's /bin/sh is dash, an ash descendant like FreeBSD's sh(1); both implement POSIX sh.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tasks.render import render_all

SH = "/bin/sh"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The reference network rendered to DIR/<host>/<path>."""
    from tasks.inventory import load_inventory
    from tasks.plan import load
    from tests.inventories import ROOT

    out = tmp_path_factory.mktemp("rendered")
    plan = load(load_inventory(ROOT / "inventory.py", cwd=ROOT))
    for host, files in render_all(plan).items():
        for path, content in files.items():
            target = out / host / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    return out


def _rc_files(rendered: Path, host: str = "*") -> list[Path]:
    """rc.conf.local and every rc.conf.d fragment rendered for ``host``."""
    return sorted(
        [*rendered.glob(f"{host}/etc/rc.conf.local"), *rendered.glob(f"{host}/etc/rc.conf.d/*")]
    )


def _sh(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", SH, "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def sourced(*files: Path, before: str = "") -> dict[str, str]:
    """The variables that sourcing ``files`` (after ``before``) sets, with their values."""
    baseline = _names(_sh("set").stdout)
    script = before + "\n" + "".join(f'. "{f}"\n' for f in files)
    listing = _sh(script + "set")
    assert listing.returncode == 0, listing.stderr
    names = sorted(_names(listing.stdout) - baseline - {"_"})
    values = _sh(script + "".join(f'printf "%s\\0" "${name}"\n' for name in names))
    assert values.returncode == 0, values.stderr
    return dict(zip(names, values.stdout.split("\0")[:-1], strict=True))


def _names(listing: str) -> set[str]:
    return {m[1] for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)=", listing, re.M)}


def test_every_fragment_parses(rendered):
    files = _rc_files(rendered)
    assert len(files) == 15  # 9 on router01, 6 on vps01
    for path in files:
        result = subprocess.run([SH, "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_a_broken_fragment_is_caught(tmp_path):
    """The parse check can fail: an unbalanced quote is a syntax error for sh -n."""
    bad = tmp_path / "netif"
    bad.write_text('ifconfig_gif0="tunnel 198.51.100.10 203.0.113.10\n')
    assert subprocess.run([SH, "-n", str(bad)], capture_output=True).returncode != 0


ROUTER = {
    "etc/rc.conf.local": {"ipv6_gateway_enable": "YES"},
    "etc/rc.conf.d/netif": {
        "ifconfig_vtnet0": "inet 198.51.100.10/24 -rxcsum -txcsum -rxcsum6 -txcsum6 -lro -tso",
        "ifconfig_vtnet0_ipv6": "inet6 2001:db8:100::96/64",
        "ifconfig_lo0_alias0": "inet6 2a06:9801:1c::1 prefixlen 128",
        "cloned_interfaces": " gif0 gif1 gre0",
        "ifconfig_gre0": "tunnel 198.51.100.10 198.51.100.44",
        "ifconfig_gre0_ipv6": "inet6 2001:db8:300::2 2001:db8:300::1 prefixlen 128",
        "ifconfig_gre0_descr": "Transit-iFog",
        "ifconfig_gif0": "tunnel 198.51.100.10 203.0.113.10",
        "ifconfig_gif0_ipv6": "inet6 2a06:9801:1c:ffff::1 2a06:9801:1c:ffff::2 prefixlen 128",
        "ifconfig_gif0_descr": "Tunnel-to-VPS",
        "ifconfig_gif1": "tunnel 198.51.100.10 192.0.2.50",
        "ifconfig_gif1_ipv6": "inet6 2a06:9801:1c:ffff::3 2a06:9801:1c:ffff::4 prefixlen 128",
        "ifconfig_gif1_descr": "Tunnel-to-Datacenter",
    },
    "etc/rc.conf.d/routing": {
        "defaultrouter": "198.51.100.1",
        "ipv6_defaultrouter": "2001:db8:100::1",
        "ipv6_static_routes": " myblock vps01:gif0 dcgw01:gif1",
        "ipv6_route_myblock": "2a06:9801:1c::/48 -reject",
        "ipv6_route_vps01": "2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2",
        "ipv6_route_dcgw01": "2a06:9801:1c:2000::/62 2a06:9801:1c:ffff::4",
    },
    "etc/rc.conf.d/kld": {"kld_list": " if_gre pf pflog"},
    "etc/rc.conf.d/pf": {
        "pf_enable": "YES",
        "pf_rules": "/etc/pf.conf",
        "pf_fallback_rules_enable": "YES",
        "pf_fallback_rules_file": "/etc/pf-fallback.conf",
    },
    "etc/rc.conf.d/pflog": {"pflog_enable": "YES"},
    "etc/rc.conf.d/frr": {
        "frr_enable": "YES",
        "frr_daemons": "mgmtd zebra staticd bgpd",
        "bgpd_flags": "-A 127.0.0.1 -M rpki",
    },
    "etc/rc.conf.d/routinator": {"routinator_enable": "YES"},
    "etc/rc.conf.d/securelevel": {"kern_securelevel_enable": "YES", "kern_securelevel": "2"},
}

VPS = {
    "etc/rc.conf.local": {"ipv6_gateway_enable": "YES", "gateway_enable": "YES"},
    "etc/rc.conf.d/netif": {
        "ifconfig_lo0_alias0": "inet6 2a06:9801:1c:1000::1 prefixlen 128",
        "cloned_interfaces": " gif0",
        "ifconfig_gif0": "tunnel 203.0.113.10 198.51.100.10 fib 1 tunnelfib 0",
        "ifconfig_gif0_ipv6": "inet6 2a06:9801:1c:ffff::2 2a06:9801:1c:ffff::1 prefixlen 128",
        "ifconfig_gif0_descr": "Tunnel-to-router01",
    },
    "etc/rc.conf.d/routing": {
        "ipv6_static_routes": " fib1default:gif0 fib1provider:bastille0 fib1delegate:bastille0",
        "ipv6_route_fib1default": "default -interface gif0 -fib 1",
        "ipv6_route_fib1provider": "2001:db8:200:0:1000::/68 -interface bastille0 -fib 1",
        "ipv6_route_fib1delegate": "2a06:9801:1c:1000::/64 -interface bastille0 -fib 1",
    },
    "etc/rc.conf.d/kld": {"kld_list": " if_bridge if_epair pf pflog"},
    "etc/rc.conf.d/pf": {
        "pf_enable": "YES",
        "pf_rules": "/etc/pf.conf",
        "pf_fallback_rules_enable": "YES",
        "pf_fallback_rules_file": "/etc/pf-fallback.conf",
    },
    "etc/rc.conf.d/pflog": {"pflog_enable": "YES"},
}


@pytest.mark.parametrize(("host", "expected"), [("router01", ROUTER), ("vps01", VPS)])
def test_sourced_variables(rendered, host, expected):
    files = sorted(p.relative_to(rendered / host).as_posix() for p in _rc_files(rendered, host))
    assert files == sorted(expected)
    for path, variables in expected.items():
        assert sourced(rendered / host / path) == variables, path


def test_list_variables_keep_what_rc_conf_already_has(rendered):
    """The operator's own cloned interfaces, routes and modules survive ownas's fragments."""
    rc_conf = 'cloned_interfaces="bridge0"\nipv6_static_routes="lan"\nkld_list="nvme"'
    router = rendered / "router01" / "etc" / "rc.conf.d"
    values = sourced(router / "netif", router / "routing", router / "kld", before=rc_conf)
    assert values["cloned_interfaces"].split() == ["bridge0", "gif0", "gif1", "gre0"]
    assert values["ipv6_static_routes"].split() == ["lan", "myblock", "vps01:gif0", "dcgw01:gif1"]
    assert values["kld_list"].split() == ["nvme", "if_gre", "pf", "pflog"]


# What rc.d/routing does with ipv6_static_routes (read in libexec/rc/rc.d/routing): for each
# entry NAME[:IF], skip it unless IF matches the interface being started (if any), map . - / +
# in NAME to _, and run `route add -inet6 $ipv6_route_NAME`.
ROUTING = r"""
. "$1"
_if="$2"
for i in ${ipv6_static_routes}; do
    if [ -n "$_if" ]; then
        case $i in *:"$_if") ;; *) continue ;; esac
    fi
    _name=$(echo "${i%:*}" | tr '.-/+' '____')
    eval _args=\$ipv6_route_${_name}
    if [ -z "$_args" ]; then echo "route_${i%:*} not found" >&2; exit 1; fi
    echo "route add -inet6 ${_args}"
done
"""


def routes(fragment: Path, interface: str = "") -> list[str]:
    result = _sh(ROUTING, str(fragment), interface)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_router_routes_at_boot(rendered):
    assert routes(rendered / "router01/etc/rc.conf.d/routing") == [
        "route add -inet6 2a06:9801:1c::/48 -reject",
        "route add -inet6 2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2",
        "route add -inet6 2a06:9801:1c:2000::/62 2a06:9801:1c:ffff::4",
    ]


def test_starting_a_tunnel_readds_only_its_routes(rendered):
    fragment = rendered / "router01/etc/rc.conf.d/routing"
    assert routes(fragment, "gif0") == [
        "route add -inet6 2a06:9801:1c:1000::/64 2a06:9801:1c:ffff::2"
    ]
    assert routes(fragment, "gif1") == [
        "route add -inet6 2a06:9801:1c:2000::/62 2a06:9801:1c:ffff::4"
    ]
    assert routes(fragment, "gre0") == []


def test_vps_routes_are_in_fib_1(rendered):
    fragment = rendered / "vps01/etc/rc.conf.d/routing"
    assert routes(fragment) == [
        "route add -inet6 default -interface gif0 -fib 1",
        "route add -inet6 2001:db8:200:0:1000::/68 -interface bastille0 -fib 1",
        "route add -inet6 2a06:9801:1c:1000::/64 -interface bastille0 -fib 1",
    ]
    assert routes(fragment, "gif0") == ["route add -inet6 default -interface gif0 -fib 1"]


def test_loader_conf_is_name_equals_quoted_value(rendered):
    """loader.conf is not shell (net.fibs is no shell name): check its own simple syntax."""
    text = (rendered / "vps01/boot/loader.conf.d/ownas.conf").read_text()
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ['net.fibs="2"']
    assert not (rendered / "router01/boot").exists()  # one FIB: nothing to preload there


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        (None, {}),
        ("2001:db8:200::1", {"ipv6_defaultrouter": "2001:db8:200::1"}),
        ("ra", {"ipv6_cpe_wanif": "vtnet0"}),
    ],
)
def test_a_retired_host_keeps_only_its_uplink_s_ipv6_default_route(
    ref, plan_for, tmp_path, gateway, expected
):
    """Retired: sh sources its fragments to nothing of the network (no tunnel, no address, no
    route, no forwarding), but the provider's IPv6 default route stays as the host had it, and
    pf lets router advertisements in when it comes from them."""
    from tasks.render import render_host

    ref["inventory"]["downstreams"] = []
    vps01 = {"ssh_hostname": "203.0.113.10", "wan_interface": "vtnet0", "tunnel": 0}
    if gateway:
        vps01["wan_ipv6_gateway"] = gateway
    ref["inventory"]["retired"] = [("vps01", vps01)]
    files = render_host(plan_for(ref), "vps01")
    paths = []
    for name in ("/etc/rc.conf.local", "/etc/rc.conf.d/netif", "/etc/rc.conf.d/routing"):
        path = tmp_path / name.rsplit("/", 1)[-1]
        path.write_text(files[name])
        paths.append(path)
    assert sourced(*paths) == expected
    assert ("routeradv" in files["/etc/pf.conf"]) == (gateway == "ra")
    assert "gif" not in files["/etc/pf.conf"]
