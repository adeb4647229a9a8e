"""SSH as pyinfra uses it (paramiko): a clear line for a host that cannot be reached, and a
ProxyCommand (a jump host, the lab) that may end before paramiko is done with it.

paramiko's ProxyCommand (3.x) has two known faults when the proxy process exits first, e.g.
because the host behind it refused the connection: ``recv`` spins at full CPU on the proxy's
end of file until the connect timeout, and ``close`` raises ProcessLookupError when the process
is gone, which Python prints as a traceback at exit (paramiko issues #1713 and #2568, fix
proposed in pull request #2583). ``install`` replaces those two methods with ones that treat an
ended proxy as a closed connection. Remove this once paramiko ships the fix.
"""

from __future__ import annotations

import logging
import os
import subprocess
from select import select
from typing import Any

from paramiko.proxy import ProxyCommand
from pyinfra import logger
from pyinfra.api.state import BaseStateCallback, StateStage

from tasks.model import RETIRED


def _recv(self: ProxyCommand, size: int) -> bytes:
    """Up to ``size`` bytes from the proxy; b"" once it has ended (paramiko: EOFError)."""
    ready, _, _ = select([self.process.stdout], [], [], self.timeout)
    if not ready:
        raise TimeoutError  # socket.timeout (Python 3.10+): paramiko's transport waits on
    return os.read(self.process.stdout.fileno(), size)


def _close(self: ProxyCommand) -> None:
    """End the proxy if it still runs, and reap it."""
    if self.process.poll() is None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def patch_proxy_command() -> None:
    """paramiko's ProxyCommand without its two faults; its transport thread's traceback for a
    failed handshake left out (pyinfra reports the failure in one line itself)."""
    ProxyCommand.recv = _recv
    ProxyCommand.close = _close
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


class ConnectErrors(BaseStateCallback):
    """Say plainly which host could not be reached and that nothing was changed.

    With FAIL_PERCENT 0 pyinfra stops after connecting when any host failed, before any
    operation: no host was changed.
    """

    @staticmethod
    def host_connect_error(state: Any, host: Any, error: Any) -> None:
        reason = error.args[0] if getattr(error, "args", None) else error
        where = host.data.get("ssh_hostname") or host.name
        if state.current_stage != StateStage.Connect:
            return  # later (reaching a host again) the deploy says what it means itself
        if retired(host):
            logger.warning(
                f"{host.name}: retired, and cannot connect over SSH: {reason}; what ownas made "
                "on it stays until a deploy reaches it; the rest of the network is deployed "
                "without it"
            )
            return
        logger.error(
            f"{host.name}: cannot connect over SSH: {reason}; nothing was changed on any "
            f"host. Is it up and reachable at {where}?"
        )


def install(state: Any) -> None:
    """Called from config.py, before pyinfra loads the inventory and connects.

    pyinfra clears its callback handlers when it initialises the state, after config.py ran,
    so the handler is added right after that initialisation.
    """
    patch_proxy_command()
    initialise = state.init

    def init(*args: Any, **kwargs: Any) -> None:
        initialise(*args, **kwargs)
        state.add_callback_handler(ConnectErrors())
        # Without -y pyinfra asks "One of more hosts failed to connect, continue?" (and, with no
        # terminal, ends in EOFError): a host that failed, to connect or later, always ends the
        # run here, before (or instead of) anything further changes.
        state.should_raise_failed_hosts = _stop_unless_retired

    state.init = init
    state.ownas_safety = True


def _stop_unless_retired(state: Any) -> bool:
    """Stop at any failed host, except when every one that failed is retired: a retired host
    that cannot be reached keeps what ownas made on it, and nothing else depends on it."""
    return not all(retired(h) for h in state.failed_hosts)


def retired(host: Any) -> bool:
    return RETIRED in getattr(host, "groups", ())


def in_force(state: Any) -> bool:
    """Whether ``install`` ran for this run (config.py was read)."""
    return getattr(state, "ownas_safety", False)
