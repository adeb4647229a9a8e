"""Golden files: the reference network renders exactly the reviewed files in tests/golden/.

After an intended change, regenerate with `make golden` and review the diff line by line
against the reference network (docs/reference-network.md; tests/golden/REVIEW.md quotes the
original write-up line by line and records that review).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.inventory import load_inventory
from tasks.plan import load
from tasks.render import render_all
from tests.inventories import ROOT

GOLDEN = ROOT / "tests" / "golden"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "REVIEW.md"
    }


def test_reference_network_matches_the_golden_files(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "render", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rendered, golden = _tree(out), _tree(GOLDEN)
    assert sorted(rendered) == sorted(golden)
    for path in golden:
        assert rendered[path].decode() == golden[path].decode(), path


def test_rendering_is_deterministic_across_processes(tmp_path):
    """Same inventory, different hash seeds: byte-identical files."""
    trees = []
    for seed in ("1", "4242"):
        out = tmp_path / seed
        subprocess.run(
            [sys.executable, "-m", "tasks.cli", "render", "-o", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        trees.append(_tree(out))
    assert trees[0] == trees[1]


def test_files_end_with_one_newline_and_have_no_trailing_spaces():
    plan = load(load_inventory(ROOT / "inventory.py", cwd=ROOT))
    for host, files in render_all(plan).items():
        for path, content in files.items():
            assert content.endswith("\n") and not content.endswith("\n\n"), (host, path)
            for number, line in enumerate(content.splitlines(), 1):
                assert line == line.rstrip(), (host, path, number)
                assert "\t" not in line, (host, path, number)
