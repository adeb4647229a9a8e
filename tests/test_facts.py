"""Fact tests in pyinfra's fixture style: tests/facts/<fact>/*.json give the command, genuine
FreeBSD output (each fixture names its source) and the parsed fact. ``facts.*`` are ownas's own;
the others are pyinfra's, which ownas reads on FreeBSD (their output there is what is tested)."""

from __future__ import annotations

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests

FIXTURES = Path(__file__).parent / "facts"

for _directory in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
    _base = "tasks" if _directory.name.startswith("facts.") else "pyinfra.facts"
    _case = make_fact_tests(_base, _directory.name, _directory)
    globals()[f"Test{_directory.name.split('.')[-1]}"] = _case

del _base, _case, _directory  # only the Test* names above are test classes
