"""The dev loop tests what is on disk: the suite imports the checkout, not a stale installed copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmeval_layerprune

REPO = Path(__file__).resolve().parents[1]


def test_the_suite_imports_the_working_tree() -> None:
    assert Path(lmeval_layerprune.__file__).resolve().is_relative_to(REPO / "lmeval_layerprune")


def test_a_fresh_interpreter_and_the_cli_import_the_working_tree(tmp_path) -> None:
    """Outside the repository (no sys.path help from pytest or the current folder) the start-up hook and
    the console script still load this checkout: `pytest` or `python` after ./test.sh test the code on disk."""
    code = "import lmeval_layerprune as p, lmeval_layerprune._autoload as a; print(p.__file__); print(a.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    for line in out.stdout.split():
        assert Path(line).resolve().is_relative_to(REPO), line
    script = Path(sys.executable).with_name("lmeval-prune")
    version = subprocess.run([str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"lmeval-prune {lmeval_layerprune.__version__}"
