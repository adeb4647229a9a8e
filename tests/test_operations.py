"""Operation tests in pyinfra's fixture style: tests/operations/<operation>/*.json give the
arguments and the facts a host reports, and the exact commands the operation must yield."""

from __future__ import annotations

from pathlib import Path

from pyinfra_testing.operations import make_operation_tests

FIXTURES = Path(__file__).parent / "operations"

for _directory in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
    _case = make_operation_tests("tasks", _directory.name, _directory)
    globals()[f"Test{_directory.name.split('.')[-1].title().replace('_', '')}"] = _case

del _case, _directory  # only the Test* names above are test classes
