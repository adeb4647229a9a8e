"""Build inventories for tests: the reference network as plain data, edited, written out.

The reference data is read from the example files themselves (inventory.py and group_data/),
so a test that edits one field starts from exactly what users start from.
"""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import Any

from tasks.inventory import load_inventory
from tasks.plan import Plan, load

ROOT = Path(__file__).resolve().parent.parent


def _module_data(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("_")}


def reference() -> dict[str, Any]:
    """{"inventory": {...}, "all": {...}, "routers": {...}} from the example files."""
    return {
        "inventory": _module_data(ROOT / "inventory.py"),
        "all": _module_data(ROOT / "group_data" / "all.py"),
        "routers": _module_data(ROOT / "group_data" / "routers.py"),
    }


def host(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The data dict of host ``name`` inside ``data["inventory"]``."""
    for group in data["inventory"].values():
        for entry in group:
            if entry[0] == name:
                return entry[1]
    raise KeyError(name)


def upstream(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in data["routers"]["upstreams"] if u["name"] == name)


def write(directory: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as inventory.py and group_data/*.py; return the inventory's path."""
    (directory / "group_data").mkdir(parents=True, exist_ok=True)
    for name, values in (("all", data["all"]), ("routers", data["routers"])):
        body = "".join(f"{key} = {pprint.pformat(value)}\n" for key, value in values.items())
        (directory / "group_data" / f"{name}.py").write_text(body)
    body = "".join(f"{key} = {pprint.pformat(value)}\n" for key, value in data["inventory"].items())
    path = directory / "inventory.py"
    path.write_text(body)
    return path


def plan_of(directory: Path, data: dict[str, Any]) -> Plan:
    path = write(directory, data)
    return load(load_inventory(path, cwd=directory))
