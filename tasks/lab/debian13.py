"""The Debian 13 root that FRR 10 runs from, for the tests and the lab. Test infrastructure.

FreeBSD's pkg ships FRR 10 (net/frr10); Debian 12, the machine the tests run on, ships 8.4,
whose syntax, running config and defaults differ. Debian 13's frr is 10.3, but its binaries need
Debian 13's glibc: they run from a root made with ``debootstrap`` (never by adding Debian 13 to
the machine's own apt sources), under ``chroot``. The root holds frr, frr-pythontools
(frr-reload.py), frr-rpki-rtrlib (bgpd's rpki module) and stayrtr (the lab's RTR cache).

It is built once into the project's ignored ``build/`` folder (``make test`` builds it when it
is missing; ``python -m tasks.lab.debian13`` by hand) and is only read afterwards. Programs in
it are reached through the wrappers in ``build/frr10-bin`` (``vtysh``, ``frr-reload.py``): each
runs the program inside the root, in a mount namespace of its own where the machine's /tmp is
the root's /tmp, so a file path under /tmp means the same inside and out. A lab host binds its
own /usr/local, /var/db, /run/frr and /proc into the root (tasks.lab.init), so FRR there reads
and writes the host's files at FreeBSD's paths.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
ROOT = PROJECT / "build" / "debian13"
BIN = PROJECT / "build" / "frr10-bin"
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
APT_OPTIONS = ("--no-install-recommends",)
PACKAGES = ("frr", "frr-pythontools", "frr-rpki-rtrlib", "stayrtr")
# net/frr10 is built with --sysconfdir=/usr/local/etc: vtysh reads vtysh.conf there. Debian's
# vtysh reads /etc/frr; the wrapper names FreeBSD's directory instead (--config_dir).
FRR_CONFDIR = "/usr/local/etc/frr"
# Where a lab host's own directories go inside the root (mount points; /usr/local exists).
HOST_BINDS = ("/proc", "/run/frr", "/usr/local", "/var/db")
READY = "ownas-ready"  # written last: a root without it is incomplete and built again
PROGRAMS = {
    "vtysh": ["/usr/bin/vtysh", "--config_dir", FRR_CONFDIR],
    "frr-reload.py": ["/usr/bin/python3", "/usr/lib/frr/frr-reload.py"],
}


# In the lab's directory: the ROAs every RTR cache of the lab serves (stayrtr's JSON).
ROAS = "roas.json"


def stayrtr(roas: Path, bind: str) -> list[str]:
    """stayrtr (0.6.2) serving the ROA file ``roas`` on ``bind`` (ADDRESS:PORT), re-read every
    few seconds; its staleness check is off (the file has no metadata) and its metrics port is
    the RTR port's neighbour, on the same address. It tells routers (RTR v1 End of Data) to
    retry after 5 s, not 600: a test need not wait ten minutes for FRR to reconnect."""
    address, _, port = bind.rpartition(":")
    return [
        str(ROOT / "usr/bin/stayrtr"),
        "-cache",
        str(roas),
        "-bind",
        bind,
        "-checktime=false",
        "-refresh",
        "5",
        "-rtr.retry",
        "5",
        "-metrics.addr",
        f"{address}:{int(port) + 1}",
    ]


class RootMissing(Exception):
    """The Debian 13 root is not built."""


def ready(root: Path = ROOT) -> bool:
    return (root / READY).exists()


def require(root: Path = ROOT) -> Path:
    if not ready(root):
        raise RootMissing(
            f"FRR 10 is missing: the Debian 13 root {root} is not built "
            "(`make deps`, or `python -m tasks.lab.debian13`)"
        )
    return root


def wrapper(program: str, root: Path = ROOT) -> str:
    """A shell script that runs ``program`` from the root with the caller's arguments."""
    argv = " ".join(PROGRAMS[program])
    return (
        "#!/bin/sh\n"
        f"# {program} of FRR 10 from the Debian 13 root (tasks/lab/debian13.py).\n"
        "exec unshare --mount --propagation private /bin/sh -c "
        f'\'mount --bind /tmp "$0/tmp" && exec chroot "$0" {argv} "$@"\' '
        f'{shlex.quote(str(root))} "$@"\n'
    )


def write_wrappers(directory: Path, root: Path = ROOT, programs: tuple[str, ...] = ()) -> None:
    """The wrappers of ``programs`` (default: all) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for program in programs or tuple(PROGRAMS):
        path = directory / program
        path.write_text(wrapper(program, root))
        path.chmod(0o755)


def frr_user(root: Path = ROOT) -> str:
    """uid:gid of the root's frr user, which FRR's daemons run as (owner of /run/frr)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "frr":
            return f"{fields[2]}:{fields[3]}"
    raise RootMissing(f"{root}: no frr user")


def version(root: Path = ROOT) -> str:
    """What the root's FRR says of itself (``bgpd --version``, first line)."""
    shown = subprocess.run(
        ["chroot", str(root), "/usr/lib/frr/bgpd", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (shown.stdout.splitlines() or ["bgpd: no version"])[0]


def build(root: Path = ROOT) -> None:
    """debootstrap Debian 13 (minbase) and install the packages; atomic: the root appears
    complete or not at all."""
    if os.geteuid() != 0:
        sys.exit("the Debian 13 root is built as root (debootstrap, chroot)")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    _run(["debootstrap", "--variant=minbase", SUITE, str(partial), MIRROR])
    # No service may start inside the root (invoke-rc.d asks policy-rc.d; 101: forbidden).
    policy = partial / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # The packages' scripts run in mount and PID namespaces of their own, with a /proc of
    # that PID namespace: nothing stays mounted when the build ends, even when it is killed.
    install = " ".join(["apt-get", "install", "-y", "-q", *APT_OPTIONS, *PACKAGES])
    target = shlex.quote(str(partial))
    script = (
        f"mount -t proc proc {target}/proc && chroot {target} {install} && "
        f"chroot {target} apt-get clean"
    )
    _run(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "sh", "-c", script],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    for mount_point in HOST_BINDS:
        (partial / mount_point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    (root / READY).write_text(version(root) + "\n")
    write_wrappers(BIN, root)
    size = subprocess.run(["du", "-sm", "-x", str(root)], capture_output=True, text=True)
    megabytes = size.stdout.split()[0] if size.stdout else "?"
    print(
        f"Debian 13 root with {version(root)} built in {time.monotonic() - start:.0f} s, "
        f"{megabytes} MB: {root}"
    )


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])}: {(result.stderr or result.stdout).strip()[-2000:]}")


if __name__ == "__main__":
    if not ready():
        build()
    else:
        write_wrappers(BIN)
        print(f"Debian 13 root with {version()}: {ROOT}")
