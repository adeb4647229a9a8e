"""Load an inventory the way ``pyinfra inventory.py deploy.py`` does, without connecting.

pyinfra's CLI reads ``inventory.py`` and the ``group_data/`` folders next to it and in the
working directory; reusing its loader means ``ownas check`` sees exactly the data a deploy sees.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.exceptions import CliError, UnexpectedExternalError
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import PYTHON_CODES

from tasks.model import InventoryError


def load_inventory(path: str | Path, cwd: str | Path | None = None) -> Any:
    """Return pyinfra's ``Inventory`` for ``path``; ``InventoryError`` if it cannot be read."""
    path = Path(path)
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
    try:
        # pyinfra executes inventory and group data files with a state in context.
        with ctx_state.use(State()):
            return make_inventory(str(path), cwd=str(cwd or os.getcwd()))
    except UnexpectedExternalError as error:
        raise InventoryError([_cannot_load(error.exception, error.filename)]) from None
    except (CliError, SyntaxError, TypeError, ValueError) as error:
        raise InventoryError([_cannot_load(error, str(path))]) from None
    finally:
        pyinfra_logger.setLevel(level)


def _cannot_load(error: BaseException, filename: str) -> str:
    """One line naming the file and line at fault, as the user wrote them: the innermost frame
    outside Python's and pyinfra's own code (the lab's inventory runs the real one: its line)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{_shown(error.filename)}:{error.lineno}: cannot be loaded: {error.msg}"
    libraries = {Path(sysconfig.get_paths()[key]) for key in ("stdlib", "purelib", "platlib")}
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<")
        and not any(Path(frame.filename).is_relative_to(lib) for lib in libraries)
    ]
    where = f"{_shown(frames[-1].filename)}:{frames[-1].lineno}" if frames else _shown(filename)
    reason = f"{type(error).__name__}: {error}" if frames else str(error)
    return f"{where}: cannot be loaded: {reason}"


def _shown(filename: str) -> str:
    """A file as the user would name it: relative to the current directory when inside it."""
    path = Path(filename).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else filename
