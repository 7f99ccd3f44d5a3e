"""Layer collapse (LaCo): the removed layers merged into the kept layer before them, in memory and through mergekit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM

from lmeval_layerprune.checkpoint.cache import cache_key
from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.checkpoint.materialize import materialize
from lmeval_layerprune.core.collapse import collapse_layers, collapsed, merge_targets
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import prune_model
from lmeval_layerprune.errors import DraftError, DropSpecError
from lmeval_layerprune.lmeval.draft import resolve_draft
from lmeval_layerprune.lmeval.hf import PrunedHFLM
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop, resolve_indices

IDS = torch.arange(5, 21).unsqueeze(0)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def test_each_run_folds_into_the_kept_layer_before_it() -> None:
    assert merge_targets(6, [2, 3]) == {1: [2, 3]}
    assert merge_targets(8, [1, 4, 5]) == {0: [1], 3: [4, 5]}
    assert merge_targets(6, [0, 1]) == {2: [0, 1]}  # nothing before layer 0: the next kept layer
    assert merge_targets(6, []) == {}
    with pytest.raises(DropSpecError, match="leaves no layer"):
        merge_targets(3, [0, 1, 2])


def test_the_merge_equals_the_hand_computed_laco_merge() -> None:
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    collapse_layers(model, [2, 3])
    after = model.state_dict()
    for key, value in after.items():
        if ".layers.1." in key:  # the target: theta_1 + (theta_2 - theta_1) + (theta_3 - theta_1)
            t = [before[key.replace(".layers.1.", f".layers.{i}.")] for i in (1, 2, 3)]
            assert torch.allclose(value, t[0] + (t[1] - t[0]) + (t[2] - t[0]), atol=1e-6), key
            assert not torch.equal(value, t[0])
        else:
            assert torch.equal(value, before[key]), key  # every other tensor untouched


def test_collapsed_restores_the_target_exactly() -> None:
    model = tiny_model("llama")
    want = _logits(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with collapsed(model, [3, 4]) as targets:
        assert targets == {2: [3, 4]}
        assert not torch.equal(
            model.state_dict()["model.layers.2.mlp.up_proj.weight"], before["model.layers.2.mlp.up_proj.weight"]
        )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(_logits(model), want)


def test_grammar_counts_and_layers() -> None:
    assert parse_spec("collapse:4").count == 4 and not parse_spec("collapse:4").parts
    assert resolve_indices("collapse:2-3", 6) == (2, 3)
    assert resolve_indices("collapse:1+4-5", 8) == (1, 4, 5)
    assert resolve_indices("collapse:3-3", 6) == (3,)  # one layer: a range (collapse:3 counts three)
    with pytest.raises(DropSpecError, match="bi chooses the layers itself"):
        parse_spec("bi:2-3")
    assert needs_model("collapse:2-3") and needs_model("collapse:2") and not needs_model("2-3")


def test_plan_records_the_merge(llama_dir) -> None:
    plan = resolve_drop(str(llama_dir), "collapse:2-3")
    assert plan.drop == (2, 3) and plan.method == "collapse"
    assert plan.extra["transform"] == "merge" and plan.extra["merged_into"] == {"1": [2, 3]}
    # the count form chooses the block angular chooses
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    cal = Calibration(samples=4)
    by_angle = resolve_drop(str(llama_dir), "angular:2", model=model, calibration=cal)
    by_collapse = resolve_drop(str(llama_dir), "collapse:2", model=model, calibration=cal)
    assert by_collapse.drop == by_angle.drop and by_collapse.scores == pytest.approx(by_angle.scores)


def test_pruned_hf_and_the_loader_merge_alike(llama_dir) -> None:
    loaded = load_pruned_model(str(llama_dir), "collapse:2-3", dtype=torch.float32)
    lm = PrunedHFLM(pretrained=str(llama_dir), drop="collapse:2-3", dtype="float32")
    assert lm.model.config.num_hidden_layers == 4 == loaded.config.num_hidden_layers
    assert torch.equal(_logits(lm.model), _logits(loaded))
    dropped = load_pruned_model(str(llama_dir), "2-3", dtype=torch.float32)
    assert not torch.allclose(_logits(loaded), _logits(dropped), atol=1e-3)  # merging is not dropping
    full = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    collapse_layers(full, [2, 3])
    assert torch.equal(_logits(prune_model(full, [2, 3])), _logits(loaded))  # an independent path


def test_materialized_through_mergekit_equals_the_in_memory_merge(llama_dir, tmp_path) -> None:
    out = materialize(str(llama_dir), "collapse:2-3", tmp_path / "ckpt", dtype="float32")
    plan = PruningPlan.load(out)
    assert plan.extra["writer"] == "mergekit" and plan.extra["transform"] == "merge"
    cfg = (out / "mergekit.yaml").read_text()
    assert "merge_method: task_arithmetic" in cfg and "Layer collapse (LaCo)" in cfg
    ckpt = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    mem = load_pruned_model(str(llama_dir), "collapse:2-3", dtype=torch.float32)
    for key, value in mem.state_dict().items():
        assert torch.allclose(ckpt.state_dict()[key], value, atol=1e-6), key
    assert torch.allclose(_logits(ckpt), _logits(mem), atol=1e-5)
    assert json.loads((out / "config.json").read_text())["layer_pruning"]["transform"] == "merge"


def test_cache_keeps_merged_and_dropped_apart(llama_dir) -> None:
    assert cache_key(llama_dir, [2, 3], "float32") != cache_key(llama_dir, [2, 3], "float32", merge=True)


def test_a_draft_cannot_merge() -> None:
    model = tiny_model("llama")
    with pytest.raises(DraftError, match="merges layers"):
        resolve_draft(model, "collapse:2-3")


def test_a_collapse_sweep_cell_equals_pruned_hf_and_leaves_the_model_whole(llama_dir, tmp_path) -> None:
    """One loaded model serves a drop cell and a collapse cell: the collapse is merged for its cell only."""
    from lmeval_layerprune.sweep.run import SweepSettings, run_sweep

    tasks = ("arith_probe_mc_add_1d",)
    settings = SweepSettings(
        model=str(llama_dir), methods=("angular", "collapse"), ratios=(0.0, 0.34), tasks=tasks, limit=3, calib_samples=4
    )
    run_sweep(settings, tmp_path / "sweep", progress=False)
    (found,) = (tmp_path / "sweep" / "collapse-0.34").glob("*/results_*.json")
    results = json.loads(found.read_text())
    plan = results["config"]["layer_pruning"]
    assert plan["method"] == "collapse" and plan["transform"] == "merge" and len(plan["drop"]) == 2
    (angular,) = (tmp_path / "sweep" / "angular-0.34").glob("*/results_*.json")
    assert json.loads(angular.read_text())["config"]["layer_pruning"]["drop"] == plan["drop"]  # the same block
    assert "transform" not in json.loads(angular.read_text())["config"]["layer_pruning"]
    # the cell's scores equal a separate pruned-hf run of the same collapse
    import lm_eval

    lm = PrunedHFLM(pretrained=str(llama_dir), drop=results["config"]["model_args"]["drop"], dtype="float32")
    alone = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=3)
    for task in tasks:
        assert alone["results"][task]["acc,none"] == results["results"][task]["acc,none"]
