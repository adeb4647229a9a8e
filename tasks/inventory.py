"""Load an inventory the way ``pyinfra inventory.py deploy.py`` does, without connecting.

pyinfra's CLI reads ``inventory.py`` and the ``group_data/`` folders next to it and in the
working directory; reusing its loader means ``ownas check`` sees exactly the data a deploy sees.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

import pyinfra
import pyinfra_cli
from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.exceptions import CliError, UnexpectedExternalError
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import PYTHON_CODES

import tasks
from tasks.model import InventoryError


def load_inventory(path: str | Path, cwd: str | Path | None = None) -> Any:
    """Return pyinfra's ``Inventory`` for ``path``; ``InventoryError`` if it cannot be read."""
    path, cwd = Path(path), str(cwd or os.getcwd())
    if not path.is_file():
        raise InventoryError([f"{path}: no such inventory file"])
    # pyinfra warns through its logger about variables it does not take as groups; that is
    # noise here (pyinfra itself says it again when it loads the inventory for a deploy).
    pyinfra_logger = logging.getLogger("pyinfra")
    level = pyinfra_logger.level
    pyinfra_logger.setLevel(logging.ERROR)
    # pyinfra keeps every file it executed compiled, by name: read the files as they are now
    # (a long-lived process, such as the lab's tests, loads an inventory again after an edit).
    PYTHON_CODES.clear()
    # As pyinfra's command does: an inventory may import its own helpers from there.
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        # pyinfra executes inventory and group data files with a state in context.
        with ctx_state.use(State()):
            return make_inventory(str(path), cwd=cwd)
    except UnexpectedExternalError as error:
        raise InventoryError([_cannot_load(error.exception, error.filename)]) from None
    except (CliError, SyntaxError, TypeError, ValueError) as error:
        raise InventoryError([_cannot_load(error, str(path))]) from None
    finally:
        pyinfra_logger.setLevel(level)


def _cannot_load(error: BaseException, filename: str) -> str:
    """One line naming the file and line at fault, as the user wrote them: below the frame of
    the file pyinfra executed, the innermost frame outside Python's, pyinfra's and ownas's own
    code (the lab's inventory runs the real one: its line). An error pyinfra raised about the
    file's data, after running it, names the file alone."""
    if isinstance(error, SyntaxError) and error.filename and not error.filename.startswith("<"):
        return f"{_shown(error.filename)}:{error.lineno}: cannot be loaded: {error.msg}"
    executed = Path(filename).resolve()
    frames = traceback.extract_tb(error.__traceback__)
    start = next((i for i, f in enumerate(frames) if _same(f.filename, executed)), None)
    ours = [f for f in frames[start:] if not _library(f.filename)] if start is not None else []
    if not ours:
        return f"{_shown(filename)}: cannot be loaded: {error}"
    where = f"{_shown(ours[-1].filename)}:{ours[-1].lineno}"
    return f"{where}: cannot be loaded: {type(error).__name__}: {error}"


def _same(name: str, path: Path) -> bool:
    return not name.startswith("<") and Path(name).resolve() == path


# Code that is not the user's: Python's own, installed packages, pyinfra and ownas.
_LIBRARIES = tuple(
    Path(p).resolve()
    for p in (
        *(sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")),
        *(Path(m.__file__).parent for m in (pyinfra, pyinfra_cli, tasks)),
    )
)


def _library(name: str) -> bool:
    return name.startswith("<") or any(
        Path(name).resolve().is_relative_to(lib) for lib in _LIBRARIES
    )


def _shown(filename: str) -> str:
    """A file as the user would name it: relative to the current directory when inside it."""
    path = Path(filename).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else filename
