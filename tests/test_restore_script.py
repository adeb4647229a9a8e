"""The restore script's own shell, run by the real /bin/sh (dash here, an ash like FreeBSD's):
its variables are read the way rc reads them, also from the list idiom ownas's fragments use."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tasks.render import render_host


def _function(script: str, name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", script, re.M | re.S)
    assert match, name
    return match.group(0)


def test_rc_value_reads_a_list_that_rc_conf_does_not_set(ref, plan_for, tmp_path: Path) -> None:
    """The fragments say cloned_interfaces="${cloned_interfaces} gif0 ...": unset in an
    /etc/rc.conf that lists none, which `set -u` would turn into an error (and an empty
    answer: no tunnel or route would be put back)."""
    files = render_host(plan_for(ref), "router01")
    netif = tmp_path / "netif"
    netif.write_text(files["/etc/rc.conf.d/netif"])
    routing = tmp_path / "routing"
    routing.write_text(files["/etc/rc.conf.d/routing"])
    function = _function(files["/usr/local/libexec/ownas-restore"], "rc_value")
    script = (
        "set -u\n"
        + function
        + f'echo "$(rc_value {netif} cloned_interfaces)"\n'
        + f'echo "$(rc_value {netif} ifconfig_gif0)"\n'
        + f'echo "$(rc_value {routing} ipv6_static_routes)"\n'
    )
    shown = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert [line.split() for line in shown.stdout.splitlines()] == [
        ["gif0", "gif1", "gre0"],
        ["tunnel", "198.51.100.10", "203.0.113.10"],
        ["myblock", "vps01:gif0", "dcgw01:gif1"],
    ]
