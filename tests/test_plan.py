"""PruningPlan: one record, one file name, every older layout read; plan:PATH@K; the one resolver."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from lmeval_layerprune.core.layout import LEGACY_PLAN_FILES, PLAN_FILE
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.errors import DropSpecError, PlanError
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import method_scores, resolve_drop, resolve_indices

# select's plan layout as it was written before PruningPlan (greedy order 4, 1, 3 on a 6-layer model)
SELECT_PLAN = {
    "model": "org/tiny",
    "num_layers": 6,
    "method": "iterative",
    "drop": [1, 3, 4],
    "order": [4, 1, 3],
    "baseline": {"arith/exact_match": 0.5},
    "rounds": [
        {"round": 0, "chosen": 4, "scores": {"1": 0.5, "3": 0.6, "4": 0.9}},
        {"round": 1, "chosen": 1, "scores": {"1": 0.8, "3": 0.7}},
        {"round": 2, "chosen": 3, "scores": {"3": 0.6}},
    ],
    "evaluations": 6,
    "settings": {"tasks": ["arith"], "limit": 3},
}
# the slice layout of earlier versions (layer_pruning_plan.json and config.json's layer_pruning)
SLICE_PLAN = {
    "base_model": "org/tiny",
    "num_layers": 6,
    "drop": [0, 5],
    "kept": [1, 2, 3, 4],
    "method": "explicit",
    "spec": "0+5",
    "dtype": "float32",
    "tool": "lmeval-layerprune 0.1.0",
    "writer": "mergekit",
}


def test_round_trip_and_the_one_file_name(tmp_path) -> None:
    plan = PruningPlan.from_dict(SELECT_PLAN)
    assert plan.base_model == "org/tiny" and plan.drop == (1, 3, 4) and plan.kept == (0, 2, 5)
    assert plan.order == (4, 1, 3) and plan.selection["evaluations"] == 6
    written = plan.save(tmp_path / "ckpt")  # a folder: the one file name inside
    assert written == tmp_path / "ckpt" / PLAN_FILE == tmp_path / "ckpt" / "layer_pruning.json"
    again = PruningPlan.load(tmp_path / "ckpt")
    assert again == plan and again.to_dict() == plan.to_dict()
    # select's record stays at the top level, under the names select always wrote
    d = json.loads(written.read_text())
    assert d["rounds"] == SELECT_PLAN["rounds"] and d["baseline"] == SELECT_PLAN["baseline"]
    assert d["base_model"] == "org/tiny" and "model" not in d and d["kept"] == [0, 2, 5]
    assert PruningPlan.load(plan.save(tmp_path / "x.json")) == plan


def test_every_older_layout_is_read(tmp_path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / LEGACY_PLAN_FILES[0]).write_text(json.dumps(SLICE_PLAN))
    plan = PruningPlan.load(old)
    assert (plan.drop, plan.kept, plan.spec) == ((0, 5), (1, 2, 3, 4), "0+5")
    assert plan.extra == {"dtype": "float32", "tool": "lmeval-layerprune 0.1.0", "writer": "mergekit"}
    assert plan.to_dict() == SLICE_PLAN  # read and written back: the same record, key for key
    # only config.json's record
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "llama", "layer_pruning": SLICE_PLAN}))
    assert PruningPlan.load(cfg) == plan == PruningPlan.load(cfg / "config.json")
    assert PruningPlan.from_config({"layer_pruning": SLICE_PLAN}) == plan
    assert PruningPlan.from_config({"model_type": "llama"}) is None
    # heal's record (layer_pruning.json with recovery)
    healed = {**SLICE_PLAN, "recovery": {"recipe": "r", "steps": 4}}
    assert PruningPlan.from_dict(healed).recovery == {"recipe": "r", "steps": 4}
    # a hand-written drop list: the depth comes from the model
    assert PruningPlan.from_dict({"drop": [2]}, num_layers=6).kept == (0, 1, 3, 4, 5)
    with pytest.raises(PlanError, match="does not record num_layers"):
        PruningPlan.from_dict({"drop": [2]})


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"num_layers": 6, "drop": [6]}, r"layer 6 in drop is out of range \(the model has 6 layers, 0..5\)"),
        ({"num_layers": 2, "drop": [0, 1]}, "it removes every layer"),
        ({"num_layers": 6, "drop": [1], "kept": [0, 1]}, "'kept' .* does not match 'drop'"),
        ({"num_layers": 6, "drop": ["1"]}, "layer index '1' in drop is not an integer"),
        ({"num_layers": 6, "drop": [1], "order": [1, 1]}, "names a layer twice"),
        ({"num_layers": 6}, "no 'drop' list"),
    ],
)
def test_bad_records_name_the_problem(record, match) -> None:
    with pytest.raises(PlanError, match=match):
        PruningPlan.from_dict(record)


def test_missing_and_broken_files(tmp_path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        PruningPlan.load(tmp_path / "nope.json")
    with pytest.raises(PlanError, match=f"holds no plan: no {PLAN_FILE}"):
        PruningPlan.load(tmp_path)
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(PlanError, match="not valid JSON"):
        PruningPlan.load(tmp_path / "bad.json")


def test_digest_is_sha256_of_the_canonical_json() -> None:
    plan = PruningPlan.from_dict(SLICE_PLAN)
    canonical = json.dumps(SLICE_PLAN, sort_keys=True, separators=(",", ":"))
    assert plan.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    assert PruningPlan.from_dict({**SLICE_PLAN, "drop": [0], "kept": [1, 2, 3, 4, 5]}).digest() != plan.digest()


def _layer_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [layer.self_attn.q_proj.weight.detach().clone() for layer in model.model.layers]


def test_on_parent_and_then_agree_with_slicing_twice() -> None:
    """A plan re-expressed on a pruned parent, applied to that parent, leaves exactly the plan's kept layers."""
    from conftest import tiny_model

    from lmeval_layerprune.core.slicing import prune_model

    model = tiny_model("llama")
    original = _layer_weights(model)
    target = PruningPlan(base_model="m", num_layers=6, drop=(1, 2, 4), order=(4, 1, 2))
    parent = PruningPlan(base_model="m", num_layers=6, drop=(2,))
    local = target.on_parent(parent)
    assert local.num_layers == 5 and local.order == (3, 1)
    prune_model(model, parent.drop)
    prune_model(model, local.drop)
    got = _layer_weights(model)
    assert len(got) == len(target.kept)
    for w, orig in zip(got, target.kept, strict=True):
        assert torch.equal(w, original[orig])
    # the way back: the pruned model's own record, and then() from the parent
    assert tuple(model.config.layer_pruning["drop"]) == target.drop
    assert parent.then(local).drop == target.drop and parent.then([1, 3]).drop == target.drop
    assert target.on_parent(None) is target
    with pytest.raises(PlanError, match=r"keeps layers \[2\], which the parent"):
        PruningPlan(base_model="m", num_layers=6, drop=(1,)).on_parent(parent)
    with pytest.raises(PlanError, match="12-layer"):
        target.on_parent(PruningPlan(base_model="m", num_layers=12, drop=(2,)))


def test_prefix_takes_the_greedy_order(tmp_path) -> None:
    plan = PruningPlan.from_dict(SELECT_PLAN)
    two = plan.prefix(2)
    assert two.drop == (1, 4) and two.order == (4, 1)
    assert [r["chosen"] for r in two.selection["rounds"]] == [4, 1]
    assert plan.prefix(3).drop == plan.drop
    bad_k = r"out of range: the plan's greedy order removes 3 layers .* K must be 1..3"
    for k in (0, 4):
        with pytest.raises(PlanError, match=bad_k):
            plan.prefix(k)
    with pytest.raises(PlanError, match="has no greedy 'order'"):
        PruningPlan.from_dict(SLICE_PLAN).prefix(1)


def test_plan_at_k_spec(tmp_path) -> None:
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(SELECT_PLAN))
    assert resolve_indices(f"plan:{path}@1", 6) == (4,)
    assert resolve_indices(f"plan:{path}@2", 6) == (1, 4)
    assert resolve_indices(f"plan:{path}", 6) == (1, 3, 4)
    with pytest.raises(DropSpecError, match=r"K must be 1..3"):
        resolve_indices(f"plan:{path}@5", 6)
    with pytest.raises(DropSpecError, match="made for a model with 6 layers"):
        resolve_indices(f"plan:{path}@2", 8)
    (tmp_path / "bi.json").write_text(json.dumps({"num_layers": 6, "drop": [2, 3], "method": "bi"}))
    with pytest.raises(DropSpecError, match="method 'bi'.* has no greedy 'order'"):
        resolve_indices(f"plan:{tmp_path / 'bi.json'}@1", 6)
    # a file whose name ends in @digits is still a file
    odd = tmp_path / "p@2"
    odd.write_text(json.dumps({"num_layers": 6, "drop": [5]}))
    assert resolve_indices(f"plan:{odd}", 6) == (5,)


def test_resolver_reads_only_the_config(tmp_path, llama_dir) -> None:
    """Specs that need no scores resolve from config.json alone: a folder without weights works."""
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(llama_dir / "config.json", bare / "config.json")
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps(SELECT_PLAN))
    plan = resolve_drop(str(bare), "last:50%")
    assert (plan.drop, plan.method, plan.spec, plan.base_model) == ((3, 4, 5), "last", "last:50%", str(bare))
    plan = resolve_drop(str(bare), f"plan:{sel}@2")
    assert plan.drop == (1, 4) and plan.method == "plan" and plan.order == (4, 1)
    assert plan.extra["plan_file_sha256"] == hashlib.sha256(sel.read_bytes()).hexdigest()
    assert plan.extra["plan_method"] == "iterative"
    with pytest.raises(DropSpecError, match="layer 6 is out of range"):
        resolve_drop(str(bare), "4-6")
    # an already-pruned checkpoint: the spec numbers its layers; the plan speaks of the parent
    cfg = json.loads((bare / "config.json").read_text())
    cfg.update(num_hidden_layers=4, layer_pruning=SLICE_PLAN)
    (bare / "config.json").write_text(json.dumps(cfg))
    plan = resolve_drop(str(bare), "0")  # its layer 0 is the parent's layer 1
    assert plan.drop == (0, 1, 5) and plan.num_layers == 6 and plan.base_model == "org/tiny"
    assert plan.on_parent(PruningPlan.from_dict(SLICE_PLAN)).drop == (0,)


def test_metric_spec_scores_the_given_model_once(llama_dir, tokenizer, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from lmeval_layerprune.checkpoint.load import load_pruned_model

    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    plan = resolve_drop(str(llama_dir), "bi:2", model=model, tokenizer=tokenizer, calibration=Calibration(samples=4))
    want = method_scores("bi", model, tokenizer, 2, Calibration(samples=4))
    assert plan.scores == pytest.approx(want) and plan.method == "bi" and len(plan.drop) == 2
    assert set(plan.drop) == set(sorted(range(6), key=lambda i: (want[i], -i))[:2])
    loads: list[str] = []
    real = AutoModelForCausalLM.from_pretrained

    def counting(path, *a, **k):
        loads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    pruned = load_pruned_model(str(llama_dir), "bi:2", tokenizer=tokenizer, calibration=Calibration(samples=4))
    assert len(loads) == 1 and pruned.config.num_hidden_layers == 4
    assert pruned.config.layer_pruning["drop"] == list(plan.drop)


def test_cached_checkpoint_loads_the_full_model_at_most_once(llama_dir, tmp_path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from lmeval_layerprune.checkpoint.cache import cached_checkpoint

    monkeypatch.setenv("LMEVAL_LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    loads: list[str] = []
    real = AutoModelForCausalLM.from_pretrained

    def counting(path, *a, **k):
        loads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    ckpt = cached_checkpoint(str(llama_dir), "bi:2", calibration=Calibration(samples=4))
    source_loads = [p for p in loads if p == str(llama_dir.resolve()) or p == str(llama_dir)]
    assert len(source_loads) == 1, loads  # scored and sliced in memory; the other loads verify the output
    plan = PruningPlan.load(ckpt)
    assert plan.method == "bi" and plan.spec == "bi:2" and len(plan.scores) == 6 and len(plan.drop) == 2


def test_resolve_command_takes_plan_at_k(llama_dir, tmp_path, capsys) -> None:
    from lmeval_layerprune.cli import main

    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps(SELECT_PLAN))
    assert main(["resolve", str(llama_dir), "--drop", f"plan:{sel}@2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["drop"] == [1, 4] and out["spec"] == "1+4" and out["plan"]["order"] == [4, 1]
    assert main(["resolve", str(llama_dir), "--drop", f"plan:{sel}@7"]) == 2
    err = capsys.readouterr().err
    assert "K must be 1..3" in err and "Traceback" not in err
