"""The lab: the deploy end to end on one Linux machine (see README, "The lab")."""

import os


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and may be signalled by us)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
