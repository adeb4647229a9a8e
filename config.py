"""pyinfra settings for `pyinfra inventory.py deploy.py` (pyinfra reads this file itself)."""

from pyinfra import config

from tasks.deploy import gate

config.REQUIRE_PYINFRA_VERSION = ">=3.10,<4"
# Any failing host stops the run: the router must be verified before a downstream is touched,
# and a half-deployed network is worse than an untouched one.
config.FAIL_PERCENT = 0
# Check the inventory before pyinfra connects to any host.
gate()
