"""PID 1 of a lab namespace: mount the host's own files, then reap every process until stopped.

Started by the lab as ``unshare --pid --kill-child --mount --uts`` inside the host's network
namespace, so each lab host has its own /etc, /usr/local, /boot, /var/db and /run/frr (also
inside the Debian 13 root FRR 10 runs from: tasks.lab.debian13), its own hostname, a process
tree the lab ends at once: stopping this process ends every process in the namespace (sshd, the
sessions pyinfra opens, FRR or BIRD). Being PID 1, it also reaps the daemons that double-fork
away from their parent, so none is left a zombie.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def setup(config: dict) -> None:
    if config.get("hostname"):
        subprocess.run(["hostname", config["hostname"]], check=True)
    for source, target in config.get("binds", []):
        subprocess.run(["mount", "--bind", source, target], check=True)
    # /proc of this PID namespace: its processes only, with the PIDs they have here (pkill -F
    # with a PID from a pid file, as on the host it stands for).
    subprocess.run(["mount", "-t", "proc", "proc", "/proc"], check=True)
    for directory in config.get("ensure", []):
        Path(directory).mkdir(mode=0o755, exist_ok=True)  # /run/sshd, as Debian's sshd makes it
    for directory in config.get("private", []):
        # A directory of its own on tmpfs (FRR's /run/frr); the rest of /run is the machine's.
        Path(directory).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory], check=True)
        subprocess.run(["chown", config["private"][directory], directory], check=True)
    for directory in config.get("tmpfs", []):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory], check=True)
    # Last: the host's own directories, as they are now, into the Debian 13 root FRR runs from.
    for source, target in config.get("root_binds", []):
        subprocess.run(["mount", "--bind", source, target], check=True)


def main(path: str) -> int:
    config = json.loads(Path(path).read_text())
    setup(config)

    def stop(_signum: int, _frame: object) -> None:
        os.kill(-1, signal.SIGKILL)  # every other process of this PID namespace
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    Path(config["ready"]).write_text(str(os.getpid()))
    while True:
        try:
            os.wait()  # every orphan of the namespace becomes our child
        except ChildProcessError:
            time.sleep(0.2)  # none right now


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
