"""The lab: the deploy end to end on one Linux machine (see README, "The lab")."""

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists, in the caller's PID namespace (a lab host's stand-ins
    see their own PIDs, and /proc there is this machine's)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running(pid: int) -> bool:
    """From this machine's namespace: ``pid`` runs, and is not merely a zombie (a killed lab
    init is reparented to this machine's PID 1, whose job reaping it is; some container inits
    never do)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
