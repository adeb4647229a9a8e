"""pyinfra settings for `pyinfra inventory.py deploy.py` (pyinfra reads this file itself)."""

from pyinfra import config
from pyinfra.context import ctx_state

from tasks import ssh
from tasks.deploy import gate

config.REQUIRE_PYINFRA_VERSION = ">=3.10,<4"
# Any failing host stops the run: the router must be verified before a downstream is touched,
# and a half-deployed network is worse than an untouched one.
config.FAIL_PERCENT = 0
# A host that cannot be reached is named plainly (and a proxy that ends early is no traceback);
# a failed host stops the run without asking whether to go on; deploy.py checks this ran.
ssh.install(ctx_state.get())
# Check the inventory before pyinfra connects to any host.
gate()
