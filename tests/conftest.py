from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.inventory import load_inventory
from tasks.lab import debian13
from tasks.model import InventoryError
from tasks.plan import Plan, load
from tests import inventories


def pytest_report_header() -> str:
    """The FRR every FRR check here runs (the Debian 13 root's; FreeBSD's pkg: 10.5, 10.7 in
    the newest ports)."""
    if not debian13.ready():
        return "FRR: missing (the Debian 13 root is not built: make deps)"
    vtysh = subprocess.run([str(debian13.BIN / "vtysh"), "-h"], capture_output=True, text=True)
    shell = next((line for line in vtysh.stdout.splitlines() if "version" in line), "?")
    return f"FRR: {debian13.version()}; vtysh: {shell.strip()} ({debian13.ROOT})"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ownas as `pip install .` installs it: the wheel built from this folder (build isolation,
    as pip does for a user)."""
    wheels = tmp_path_factory.mktemp("wheels")
    build = ["pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(inventories.ROOT)]
    subprocess.run([sys.executable, "-m", *build], check=True, capture_output=True, timeout=600)
    return next(wheels.glob("ownas-*.whl"))


@pytest.fixture(scope="session")
def plan() -> Plan:
    """The example inventory's plan (read only)."""
    return load(load_inventory(inventories.ROOT / "inventory.py", cwd=inventories.ROOT))


@pytest.fixture
def ref() -> dict[str, Any]:
    """The reference network's inventory data, fresh for each test to edit."""
    return inventories.reference()


@pytest.fixture
def plan_for(tmp_path: Path) -> Callable[[dict[str, Any]], Plan]:
    counter = iter(range(1000))

    def build(data: dict[str, Any]) -> Plan:
        # pyinfra caches executed files by path: every variant gets its own directory.
        return inventories.plan_of(tmp_path / f"inv{next(counter)}", data)

    return build


@pytest.fixture
def problems_for(plan_for: Callable[[dict[str, Any]], Plan]) -> Callable[..., list[str]]:
    def problems(data: dict[str, Any]) -> list[str]:
        with pytest.raises(InventoryError) as caught:
            plan_for(data)
        return caught.value.problems

    return problems
