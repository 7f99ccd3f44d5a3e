"""Provenance: every pruned-hf / pruned-vllm result records the resolved plan; eval runs never share a folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lmeval_layerprune.core.layout import RESULTS_KEY
from lmeval_layerprune.core.plan import PruningPlan

BIN = Path(sys.executable).parent
# a greedy search's plan: it removed layer 4, then 1, then 3
SELECTED = {"model": "x", "num_layers": 6, "method": "iterative", "drop": [1, 3, 4], "order": [4, 1, 3]}


def _exe(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed"
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMEVAL_LAYERPRUNE_NO_AUTOLOAD")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _eval_args(model_args: str, out: Path) -> list[str]:
    return [
        "--model",
        "pruned-hf",
        "--model_args",
        model_args,
        "--tasks",
        "arith_probe_add_1d",
        "--limit",
        "2",
        "--device",
        "cpu",
        "--output_path",
        str(out),
    ]


@pytest.mark.slow  # a real lm_eval process: imports and lm-eval's task index, ~20-40 s on 2 cores
def test_lm_eval_results_record_the_resolved_layers(llama_dir, tmp_path) -> None:
    """The stock lm_eval CLI: the results JSON says which layers plan:PATH@K removed, not only the spec text."""
    plan_file = tmp_path / "sel.json"
    plan_file.write_text(json.dumps(SELECTED))
    out = tmp_path / "out"
    proc = _run([_exe("lm_eval"), *_eval_args(f"pretrained={llama_dir},drop=plan:{plan_file}@2", out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    config = json.loads(results.read_text())["config"]
    assert config["model_args"]["drop"] == f"plan:{plan_file}@2"  # what was typed ...
    rec = config[RESULTS_KEY]  # ... and what it meant
    assert rec["drop"] == [1, 4] and rec["kept"] == [0, 2, 3, 5] and rec["num_layers"] == 6
    assert rec["spec"] == f"plan:{plan_file}@2" and rec["spec_resolved"] == "1+4"
    assert rec["order"] == [4, 1] and rec["method"] == "plan" and rec["plan_method"] == "iterative"
    assert rec["base_model"] == str(llama_dir)
    assert rec["plan_file_sha256"] == hashlib.sha256(plan_file.read_bytes()).hexdigest()
    assert PruningPlan.from_dict(rec).drop == (1, 4)  # a results reader gets the plan back


@pytest.mark.slow  # a real lmeval-prune eval process
def test_lmeval_prune_eval_puts_each_pruned_run_in_its_own_folder(llama_dir, tmp_path) -> None:
    out = tmp_path / "out"
    proc = _run([_exe("lmeval-prune"), "eval", *_eval_args(f"pretrained={llama_dir},drop=last:50%", out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    run_dir = out / f"{llama_dir.name}__drop-3-5"
    assert results.parent.parent == run_dir  # lm-eval's own <model> folder beneath ours
    assert json.loads(results.read_text())["config"][RESULTS_KEY]["drop"] == [3, 4, 5]
    assert str(run_dir) in proc.stderr


def test_run_folder_names(llama_dir, tmp_path) -> None:
    from lmeval_layerprune.cli.eval import run_folder_name, run_output_path

    name = llama_dir.name
    assert run_folder_name({"pretrained": str(llama_dir), "drop": [0, 5]}) == f"{name}__drop-0+5"
    assert run_folder_name({"pretrained": str(llama_dir)}) == f"{name}__drop-none"
    assert run_folder_name(f"pretrained={llama_dir},drop=1-2") == f"{name}__drop-1-2"
    assert run_folder_name({"pretrained": str(llama_dir), "drop": "angular:25%"}) == f"{name}__drop-angular-25pct"
    out = run_output_path(tmp_path / "res.json", {"pretrained": str(llama_dir), "drop": "5"})
    assert out == tmp_path / f"{name}__drop-5" / "res.json"
    # a pruned checkpoint evaluated as is is named after the layers its plan removed from the parent
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cfg = json.loads((llama_dir / "config.json").read_text())
    plan = PruningPlan(base_model=str(llama_dir), num_layers=6, drop=(0, 5))
    cfg.update(num_hidden_layers=4, layer_pruning=plan.to_dict())
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert run_folder_name({"pretrained": str(ckpt)}) == "ckpt__drop-0+5"
    assert run_folder_name({"pretrained": str(ckpt), "drop": "0"}) == "ckpt__drop-0-1+5"


def test_healed_checkpoint_reports_its_recovery_record(llama_dir, tokenizer, tmp_path) -> None:
    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    model = load_pruned_model(str(llama_dir), "0+5")
    plan = PruningPlan.from_config(model.config)
    plan.recovery = {"recipe": "demo-selfgen-lora", "method": "selfgen", "steps": 3}
    model.config.layer_pruning = plan.to_dict()
    model.save_pretrained(tmp_path / "healed")
    tokenizer.save_pretrained(tmp_path / "healed")
    info = PrunedHFLM(pretrained=str(tmp_path / "healed"), dtype="float32").get_model_info()
    rec = info[RESULTS_KEY]
    assert rec["drop"] == [0, 5] and rec["recovery"]["recipe"] == "demo-selfgen-lora" and rec["recovery"]["steps"] == 3
    assert rec["plan_sha256"] == plan.digest()
    assert "model_num_parameters" in info  # HFLM's own info is kept
    # the unpruned parent through pruned-hf says that nothing was removed
    whole = PrunedHFLM(pretrained=str(llama_dir), dtype="float32").get_model_info()[RESULTS_KEY]
    assert whole["drop"] == [] and whole["kept"] == list(range(6))


def test_pruned_vllm_reports_the_plan(llama_dir, tmp_path, monkeypatch) -> None:
    import lmeval_layerprune.lmeval.vllm as lm_mod

    monkeypatch.setenv("LMEVAL_LAYERPRUNE_CACHE", str(tmp_path / "cache"))

    class FakeVLLM:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def get_model_info(self):
            return {"engine": "fake"}

    fake = types.ModuleType("lm_eval.models.vllm_causallms")
    fake.VLLM = FakeVLLM
    monkeypatch.setitem(sys.modules, "lm_eval.models.vllm_causallms", fake)
    monkeypatch.setattr(lm_mod, "find_spec", lambda name: object())
    lm = lm_mod.PrunedVLLM(pretrained=str(llama_dir), drop="last:2", dtype="float32")
    info = lm.get_model_info()
    assert info["engine"] == "fake" and info[RESULTS_KEY]["drop"] == [4, 5]
    assert info[RESULTS_KEY]["spec"] == "last:2" and info[RESULTS_KEY]["method"] == "last"


@pytest.mark.parametrize("local", [True, False])
def test_portable_plan_replaces_local_plan_paths(tmp_path, local) -> None:
    spec = "plan:../runs/iter4.json@2" if local else "20-25"
    plan = PruningPlan(base_model="/home/me/models/tiny", num_layers=30, drop=(20, 21), spec=spec)
    out = plan.portable(base_model="org/tiny").to_dict()
    assert out["base_model"] == "org/tiny"
    assert "../runs" not in json.dumps(out) and "/home/me" not in json.dumps(out)
    assert out["spec"] == ("20-21" if local else "20-25")
    if local:
        assert out["spec_given"] == "plan:iter4.json@2"
