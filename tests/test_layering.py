"""Layering is checked, not hoped for: the import contracts in pyproject.toml (import-linter) hold, and a
forbidden import, even inside a function, breaks them.

The wings live in top-level folders that pyproject maps to ``uniret.<wing>``; import-linter reads one package
tree, so the check runs on a copy of the sources laid out as installed (``uniret/retriever`` ...)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WINGS = ("retriever", "train", "index", "eval")
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (the dev extra)")


def installed_layout(root: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "datasets", "*.pyc")
    shutil.copytree(REPO / "uniret", root / "uniret", ignore=ignore)
    for wing in WINGS:
        shutil.copytree(REPO / wing, root / "uniret" / wing, ignore=ignore)
    return root


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), str(REPO / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold(tmp_path):
    proc = lint(installed_layout(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 4 kept, 0 broken." in proc.stdout


def test_a_function_local_forbidden_import_breaks_them(tmp_path):
    root = installed_layout(tmp_path)
    (root / "uniret" / "retriever" / "sneaky.py").write_text(
        "def f():\n    from uniret.train.trainer import Trainer\n    return Trainer\n")
    proc = lint(root)
    assert proc.returncode != 0
    assert "uniret.retriever.sneaky -> uniret.train.trainer" in proc.stdout
