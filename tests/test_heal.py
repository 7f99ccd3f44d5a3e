"""``lmeval-prune heal``: recipes (validation, overrides), training end to end on a tiny model,
the saved checkpoint against an independent reference, resume after a kill, KD, accelerate launch."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_selfgen import save_chat_tiny

from lmeval_layerprune.errors import HealError, RecipeError
from lmeval_layerprune.heal.recipe import Budget, TrainSection, apply_overrides, list_recipes, load_recipe, validate
from lmeval_layerprune.heal.run import HealSettings, eval_command, heal
from lmeval_layerprune.heal.train import kd_loss

#: Small, fast settings for the tiny model (greedy generation, every response kept, a few steps).
TINY = [
    "dtype=float32",
    "selfgen.n=12",
    "selfgen.max_new_tokens=8",
    "selfgen.temperature=0",
    "selfgen.filters=[]",
    "sft.per_device_train_batch_size=4",
    "sft.gradient_accumulation_steps=1",
    "sft.warmup_steps=0",
    "sft.max_length=128",
    "sft.gradient_checkpointing=false",
    "sft.learning_rate=0.01",
    "lora.r=4",
]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_chat_tiny(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="module")
def responses(base, tmp_path_factory) -> Path:
    from lmeval_layerprune.heal.selfgen import (
        FilterSettings,
        GenerationSettings,
        SelfgenSettings,
        generate_responses,
        load_prompts,
    )

    out = tmp_path_factory.mktemp("sg") / "responses.jsonl"
    settings = SelfgenSettings(
        str(base),
        out,
        generation=GenerationSettings(max_new_tokens=8, temperature=0),
        filters=FilterSettings(filters=()),
        source="bundled",
        progress=False,
    )
    generate_responses(settings, load_prompts("bundled", n=12))
    return out


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


# ------------------------------------------------------------------- recipes


def test_every_bundled_recipe_validates():
    names = list_recipes()
    expected = {
        "selfgen-lora": ("selfgen", "lora"),
        "selfgen-qlora": ("selfgen", "qlora"),
        "selfgen-full": ("selfgen", "full"),
        "original-lora": ("original", "lora"),
        "reverse-alpaca-lora": ("original", "lora"),
        "selfgen-kd": ("kd", "lora"),
        "demo-selfgen-lora": ("selfgen", "lora"),
        "demo-original-lora": ("original", "lora"),
        "partial-last2": ("selfgen", "partial"),
        "demo-partial-last2": ("selfgen", "partial"),
        "cpt-lora": ("cpt", "lora"),
        "cpt-full": ("cpt", "full"),
        "demo-cpt-lora": ("cpt", "lora"),
    }
    assert set(expected) <= set(names)
    for name, (method, finetune) in expected.items():
        rec = load_recipe(name)
        assert (rec.method, rec.finetune) == (method, finetune), name
        if method == "cpt":  # plain text: every token in the loss, documents packed into whole sequences
            assert "completion_only_loss" not in rec.sft and rec.sft["packing"] is True and rec.budget, name
        else:
            assert rec.sft.get("completion_only_loss") is True, name
        assert "gradient_checkpointing" in rec.sft, name
        # The values build the real TRL / PEFT configs.
        from peft import LoraConfig
        from trl import SFTConfig

        SFTConfig(output_dir="/tmp/unused", **{**rec.sft, "bf16": False})
        if rec.lora is not None:
            LoraConfig(**rec.lora)
    assert load_recipe("reverse-alpaca-lora").get("drop") == "last:25%"
    # each baseline has its selfgen recipe's prompts and budget: only the responses differ
    for ours, theirs in (("selfgen-lora", "original-lora"), ("demo-selfgen-lora", "demo-original-lora")):
        a, b = load_recipe(ours), load_recipe(theirs)
        assert (a.get("drop"), a.get("data"), a.lora, a.selfgen["n"]) == (
            b.get("drop"),
            b.get("data"),
            b.lora,
            b.selfgen["n"],
        )
        assert {k: v for k, v in a.sft.items() if k != "logging_steps"} == {
            k: v for k, v in b.sft.items() if k != "logging_steps"
        }, theirs
    assert load_recipe("selfgen-kd").kd.temperature == 2.0
    # each partial recipe is its LoRA twin with the weights trained instead of adapters (and a full-weight rate)
    for lora_twin, partial in (("selfgen-lora", "partial-last2"), ("demo-selfgen-lora", "demo-partial-last2")):
        a, b = load_recipe(lora_twin), load_recipe(partial)
        assert b.lora is None and b.train == TrainSection(layers="last:2", lm_head=True, norm=True), partial
        same = ("drop", "data", "teacher", "dtype", "method", "selfgen")
        assert {k: a.raw.get(k) for k in same} == {k: b.raw.get(k) for k in same}, partial
        skip = ("learning_rate", "gradient_checkpointing")
        assert {k: v for k, v in a.sft.items() if k not in skip} == {k: v for k, v in b.sft.items() if k not in skip}
    # the CPT demo trains demo-selfgen-lora's LoRA at its rate and batch, on the bundled corpus
    a, b = load_recipe("demo-selfgen-lora"), load_recipe("demo-cpt-lora")
    assert (a.lora, a.get("drop"), a.get("dtype")) == (b.lora, b.get("drop"), b.get("dtype")) and b.get(
        "data"
    ) == "corpus"
    assert all(a.sft[k] == b.sft[k] for k in ("learning_rate", "lr_scheduler_type", "per_device_train_batch_size"))
    assert load_recipe("cpt-lora").budget == load_recipe("cpt-full").budget == Budget(tokens=2_000_000)


def test_recipe_errors_name_the_bad_key_and_the_valid_ones(tmp_path):
    with pytest.raises(
        RecipeError, match=r"unknown recipe key sft\.learning_rat \(did you mean 'learning_rate'\?\).*max_steps"
    ):
        load_recipe("selfgen-lora", ["sft.learning_rat=1"])
    with pytest.raises(RecipeError, match=r"unknown recipe key lora\.rank.*valid lora keys:.*lora_alpha"):
        load_recipe("selfgen-lora", ["lora.rank=8"])
    with pytest.raises(RecipeError, match="unknown recipe key 'dorp'.*did you mean 'drop'"):
        load_recipe("selfgen-lora", ["dorp=3"])
    with pytest.raises(RecipeError, match="set by heal itself"):
        load_recipe("selfgen-lora", ["sft.output_dir=x"])
    with pytest.raises(RecipeError, match="needs method: kd"):
        load_recipe("selfgen-lora", ["kd.temperature=3"])
    with pytest.raises(RecipeError, match="quantization .QLoRA. needs a lora section"):
        load_recipe("selfgen-qlora", ["lora=null"])
    with pytest.raises(RecipeError, match="unknown recipe 'selfgen-lorra' \\(did you mean 'selfgen-lora'"):
        load_recipe("selfgen-lorra")
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe("selfgen-lora", ["sft.max_steps"])
    rec = load_recipe("selfgen-lora", ["sft.max_steps=5", "lora=null", "selfgen.temperature=0"])
    assert rec.sft["max_steps"] == 5 and rec.finetune == "full" and rec.selfgen["temperature"] == 0
    custom = tmp_path / "mine.yaml"
    custom.write_text("method: original\ndata: bundled\nsft: {max_steps: 2}\nlora: {r: 2}\n")
    assert load_recipe(str(custom)).name == "mine"
    assert validate(apply_overrides({"sft": {}}, ["method=kd"])).method == "kd"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_qlora_without_gpu_is_a_clear_cli_error(base, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "lmeval_layerprune.cli", "heal", "--recipe", "selfgen-qlora", "--base", str(base),
         "--drop", "2-3", "--out", str(tmp_path / "o")],  # fmt: skip
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert r.returncode == 2
    assert "lmeval-prune: error:" in r.stderr and "needs a CUDA GPU" in r.stderr and "selfgen-lora" in r.stderr
    assert not (tmp_path / "o").exists()


def test_kd_loss_against_kl_div_reference():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    assert kd_loss(t, t, labels).item() == pytest.approx(0.0, abs=1e-6)
    mask = labels[:, 1:] != -100
    T = 2.0
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(s[:, :-1][mask] / T, -1), torch.log_softmax(t[:, :-1][mask] / T, -1),
        log_target=True, reduction="sum",
    ) * T * T / mask.sum()  # fmt: skip
    assert kd_loss(s, t, labels, T, 1.0).item() == pytest.approx(ref.item(), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(s[:, :-1][mask], labels[:, 1:][mask])
    assert kd_loss(s, t, labels, T, 0.0).item() == pytest.approx(ce.item(), rel=1e-5)


# -------------------------------------------------------------------- heal


def test_heal_lora_end_to_end_matches_an_independent_reference(base, responses, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmeval_layerprune.checkpoint.load import load_pruned_model

    out = heal(HealSettings("selfgen-lora", str(base), tmp_path / "healed", drop="2-3", data=str(responses),
                        overrides=[*TINY, "sft.max_steps=4", "sft.save_steps=4"], keep_checkpoints=True,
                        progress=False))  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    plan = cfg["layer_pruning"]
    assert plan["drop"] == [2, 3] and plan["kept"] == [0, 1, 4, 5] and plan["num_layers"] == 6
    assert cfg["num_hidden_layers"] == 4
    r = plan["recovery"]
    assert (r["recipe"], r["method"], r["finetune"], r["steps"]) == ("selfgen-lora", "selfgen", "lora", 4)
    assert r["data"] == str(responses) and r["teacher"] == str(base)
    assert r["settings"]["sft"]["max_steps"] == 4 and r["settings"]["lora"]["r"] == 4
    assert r["settings"]["sft"]["bf16"] is False  # what was used on CPU, not what the recipe asked
    assert json.loads((out / "layer_pruning.json").read_text()) == plan
    # what it cost: the adapter's parameters (as the trainer checkpointed them), the tokens, the time
    from safetensors.torch import load_file

    adapter = load_file(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert r["trainable_parameters"] == sum(v.numel() for v in adapter.values()) == 4 * 3712  # r=4, 7 linears
    assert r["total_parameters"] == r["trainable_parameters"] + sum(p.numel() for p in load_pruned_model(
        str(base), "2-3").parameters())  # fmt: skip
    assert r["training_tokens"] > 0 and r["train_seconds"] > 0
    used = load_recipe(str(out / "recovery_recipe.yaml"))
    assert used.get("drop") == "2-3" and used.sft["max_steps"] == 4
    assert (out / "HEAL_COMPLETE").is_file() and not (out / ".trainer-final").exists()

    healed, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # Independent reference: the pruned base plus the adapter the trainer checkpointed at the last step.
    pruned = load_pruned_model(str(base), "2-3", dtype=torch.float32)
    ids = torch.arange(3, 40).unsqueeze(0)
    before = _logits(pruned, ids)
    ref = PeftModel.from_pretrained(pruned, out / "checkpoints" / "checkpoint-4")
    want = _logits(ref, ids)
    got = _logits(healed, ids)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (got - before).abs().max() > 1e-3  # training changed the model

    # A second call with the same arguments is a no-op; other arguments are refused.
    mtime = (out / "model.safetensors").stat().st_mtime
    heal(HealSettings("selfgen-lora", str(base), out, drop="2-3", data=str(responses),
                  overrides=[*TINY, "sft.max_steps=4", "sft.save_steps=4"], keep_checkpoints=True))  # fmt: skip
    assert (out / "model.safetensors").stat().st_mtime == mtime
    with pytest.raises(
        HealError, match=r"other settings \(drop: \"2-3\" -> \"1-3\"; sft.max_steps: 4 -> <unset>.*--overwrite"
    ):
        heal(HealSettings("selfgen-lora", str(base), out, drop="1-3", data=str(responses), overrides=TINY))


_KILL_SCRIPT = """
import os, signal, sys
from transformers import TrainerCallback
from lmeval_layerprune.heal.run import HealSettings, heal

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

heal(HealSettings("selfgen-lora", sys.argv[1], sys.argv[2], drop="2-3", data=sys.argv[3], overrides=sys.argv[4:],
                  callbacks=[KillAfterSave()], progress=False))
"""


RESUME_OVERRIDES = [*TINY, "sft.max_steps=6", "sft.save_steps=2", "sft.save_total_limit=5"]


@pytest.fixture(scope="module")
def uninterrupted(base, responses, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return heal(HealSettings("selfgen-lora", str(base), tmp_path_factory.mktemp("whole") / "out", drop="2-3",
                         data=str(responses), overrides=RESUME_OVERRIDES, progress=False))  # fmt: skip


@pytest.mark.parametrize("kill_at", [4, 6])
def test_heal_resumes_from_the_last_checkpoint_after_a_kill(base, responses, uninterrupted, tmp_path, kill_at):
    from safetensors.torch import load_file

    out = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT.replace("{kill_at}", str(kill_at)))
    r = subprocess.run([sys.executable, str(script), str(base), str(out), str(responses), *RESUME_OVERRIDES],
                       capture_output=True, text=True, env=ENV)  # fmt: skip
    assert r.returncode == -9, r.stderr[-2000:]
    saved = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert saved == [f"checkpoint-{i}" for i in range(2, kill_at + 1, 2)]
    assert not (out / "HEAL_COMPLETE").exists()
    # A checkpoint the kill cut short (no trainer_state.json) is never resumed from.
    shutil.copytree(out / "checkpoints" / f"checkpoint-{kill_at}", out / "checkpoints" / "checkpoint-99")
    (out / "checkpoints" / "checkpoint-99" / "trainer_state.json").unlink()

    r = subprocess.run(
        [sys.executable, "-m", "lmeval_layerprune.cli", "heal", "--recipe", "selfgen-lora", "--base", str(base),
         "--drop", "2-3", "--out", str(out), "--data", str(responses), *RESUME_OVERRIDES],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {out / 'checkpoints' / f'checkpoint-{kill_at}'}" in r.stdout
    assert "6 steps" in r.stdout  # continued, not restarted, and no step past the end
    assert f"evaluate it: lm_eval --model hf --model_args pretrained={out}" in r.stdout
    resumed = json.loads((out / "config.json").read_text())["layer_pruning"]["recovery"]
    whole = json.loads((uninterrupted / "config.json").read_text())["layer_pruning"]["recovery"]
    assert resumed["steps"] == 6
    assert resumed["training_tokens"] == whole["training_tokens"] > 0  # kept in the checkpoint, not counted twice
    assert resumed["train_seconds"] > 0
    assert not (out / "checkpoints").exists()

    # The same run without interruption ends with the same weights.
    a, b = load_file(out / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst


def test_heal_original_full_and_kd(base, responses, tmp_path):
    from transformers import AutoModelForCausalLM

    # original: the bundled set's own (templated) answers, full finetune
    out = heal(HealSettings("original-lora", str(base), tmp_path / "orig", drop="0+5", data="bundled",
                        overrides=[*TINY, "lora=null", "sft.max_steps=2"], progress=False))  # fmt: skip
    r = json.loads((out / "config.json").read_text())["layer_pruning"]["recovery"]
    assert (r["method"], r["finetune"], r["teacher"], r["steps"]) == ("original", "full", None, 2)
    assert r["settings"]["examples"] == 12 and r["data"] == "bundled"
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4

    # kd: the frozen parent distils into the pruned student on the same sequences
    out = heal(HealSettings("selfgen-kd", str(base), tmp_path / "kd", drop="4", data=str(responses),
                        overrides=[*TINY, "sft.max_steps=2", "kd.alpha=0.5"], progress=False))  # fmt: skip
    r = json.loads((out / "config.json").read_text())["layer_pruning"]["recovery"]
    assert (r["method"], r["finetune"], r["steps"]) == ("kd", "lora", 2)
    assert r["settings"]["kd"] == {"temperature": 2.0, "alpha": 0.5} and r["teacher"] == str(base)

    # a source without responses cannot feed the original baseline
    prompts_only = tmp_path / "p.jsonl"
    prompts_only.write_text('{"prompt": "Name a colour"}\n')
    with pytest.raises(HealError, match="has none"):
        heal(HealSettings("original-lora", str(base), tmp_path / "x", drop="4", data=str(prompts_only), overrides=TINY))


def test_keep_adapter_evaluates_through_pruned_hf_peft(base, responses, tmp_path):
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    out = heal(HealSettings("selfgen-lora", str(base), tmp_path / "ad", drop="2-3", data=str(responses),
                        overrides=[*TINY, "sft.max_steps=2"], keep_adapter=True, progress=False))  # fmt: skip
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    plan = json.loads((out / "layer_pruning.json").read_text())
    assert plan["recovery"]["steps"] == 2 and plan["drop"] == [2, 3]
    cmd = eval_command(out, str(base), "2-3", keep_adapter=True)
    assert f"pretrained={base},drop=2-3,peft={out}" in cmd
    lm = PrunedHFLM(pretrained=str(base), drop="2-3", peft=str(out), dtype="float32", batch_size=1)
    assert lm.model.config.num_hidden_layers == 4
    assert any("lora_A" in n for n, _ in lm.model.named_parameters())


def test_accelerate_launch_runs_the_heal_module(base, responses, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate console script not found next to the interpreter")
    out = tmp_path / "acc"
    r = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--mixed_precision", "no", "-m",
         "lmeval_layerprune.cli", "heal", "--recipe", "selfgen-lora", "--base", str(base), "--drop", "2-3",
         "--out", str(out), "--data", str(responses), *TINY, "sft.max_steps=2"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "healed checkpoint:" in r.stdout and (out / "HEAL_COMPLETE").is_file()


def test_heal_an_already_pruned_base_records_original_indices(base, responses, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmeval_layerprune.checkpoint.load import load_pruned_model

    pre = tmp_path / "pre"
    load_pruned_model(str(base), "1", dtype=torch.float32).save_pretrained(pre)
    AutoTokenizer.from_pretrained(base).save_pretrained(pre)
    # layer 2 of the 5-layer checkpoint is original layer 3
    out = heal(HealSettings("selfgen-lora", str(pre), tmp_path / "o", drop="2", data=str(responses),
                        overrides=[*TINY, "sft.max_steps=1"], progress=False))  # fmt: skip
    plan = json.loads((out / "config.json").read_text())["layer_pruning"]
    assert plan["drop"] == [1, 3] and plan["num_layers"] == 6 and plan["base_model"] == str(base)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


# ------------------------------------------------- partial layers, CPT, budgets


def test_train_and_budget_sections_name_the_bad_value_and_the_valid_forms(base, responses, tmp_path):
    partial = ["lora=null", "train.layers=last:2"]
    with pytest.raises(RecipeError, match=r"unknown recipe key train\.layer \(did you mean 'layers'\?\).*lm_head"):
        load_recipe("demo-selfgen-lora", ["lora=null", "train.layer=last:2"])
    with pytest.raises(RecipeError, match="train names the weights of a partial full finetune and needs lora: null"):
        load_recipe("demo-selfgen-lora", ["train.layers=last:2"])
    with pytest.raises(RecipeError, match=r"train.layers = '2-' is not a layer spec.*valid forms.*'last:2'"):
        load_recipe("demo-selfgen-lora", ["lora=null", "train.layers=2-"])
    with pytest.raises(RecipeError, match=r"train selects no weight; set train.layers \('last:2'"):
        load_recipe("demo-selfgen-lora", ["lora=null", "train.norm=false"])
    with pytest.raises(RecipeError, match=r"train.lm_head = 'always' \(str\) is not valid; expected a boolean"):
        load_recipe("demo-selfgen-lora", [*partial, "train.lm_head=always"])
    with pytest.raises(RecipeError, match=r"budget.tokens = 0 must be a whole number of tokens >= 1"):
        load_recipe("demo-cpt-lora", ["budget.tokens=0"])
    with pytest.raises(RecipeError, match=r"unknown recipe key budget.tokns \(did you mean 'tokens'\?\)"):
        load_recipe("demo-cpt-lora", ["budget.tokns=5"])
    with pytest.raises(RecipeError, match=r"sft.include_num_input_tokens_seen is set by heal itself \(it counts"):
        load_recipe("demo-cpt-lora", ["sft.include_num_input_tokens_seen=all"])
    with pytest.raises(RecipeError, match="unknown method 'cpt2'; valid: selfgen, original, kd, cpt"):
        load_recipe("demo-cpt-lora", ["method=cpt2"])
    rec = load_recipe("demo-selfgen-lora", [*partial, "train.layers=[1, 2]"])
    assert rec.train.layers == "1+2" and rec.finetune == "partial"

    # against the pruned model (4 of the tiny model's 6 layers), before anything is written
    def check(*overrides: str, recipe: str = "demo-selfgen-lora"):
        out = tmp_path / "never"
        heal_settings = HealSettings(recipe, str(base), out, drop="2-3", data=str(responses), overrides=overrides)
        try:
            return heal_mod_check(heal_settings)
        finally:
            assert not out.exists()

    assert check(*partial).train_layers == (2, 3)  # the pruned model's last two
    assert check("lora=null", "train.layers=0+3").train_layers == (0, 3)
    with pytest.raises(HealError, match=r"train.layers = '5' does not fit the pruned model \(4 layers\)"):
        check("lora=null", "train.layers=5")
    with pytest.raises(HealError, match=r"train.layers = 'bi:2' chooses layers by a model's scores.*'last:2'"):
        check("lora=null", "train.layers=bi:2")
    with pytest.raises(
        HealError, match=r"train.layers = 'frist:2' is not a layer spec.*unknown method 'frist'.*'last:2'"
    ):
        check("lora=null", "train.layers=frist:2")
    with pytest.raises(HealError, match="--keep-adapter needs a LoRA recipe; 'demo-partial-last2' is a partial"):
        heal_mod_check(HealSettings("demo-partial-last2", str(base), tmp_path / "x", drop="2", keep_adapter=True))
    with pytest.raises(HealError, match=r"has columns \[.*'response'\], no 'text'; name the column.*text=NAME"):
        check(recipe="demo-cpt-lora")  # data=responses (a selfgen file) is no text source
    with pytest.raises(HealError, match="'bundled' is a prompt set, not plain text"):
        heal_mod_check(HealSettings("demo-cpt-lora", str(base), tmp_path / "x", drop="2", data="bundled"))


def heal_mod_check(settings):
    from lmeval_layerprune.heal.check import check_run

    return check_run(settings)


def test_budget_dataset_cuts_exactly_the_tokens_asked():
    import datasets

    from lmeval_layerprune.heal.budget import budget_dataset

    rows = [
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]},  # prompt 2 tokens, 3 trained
        {"input_ids": [6, 7, 8], "labels": [-100, -100, 8]},
        {"input_ids": [9, 10, 11, 12], "labels": [9, 10, 11, 12]},  # plain text: every token after the first
    ]
    ds = datasets.Dataset.from_list(rows)
    out, use = budget_dataset(ds, 7)
    # 5 whole tokens; the next sequence's first 2 tokens hold no trained token, so the one after is cut instead
    assert out["input_ids"] == [[1, 2, 3, 4, 5], [9, 10]] and out["labels"][1] == [9, 10]
    assert (use.tokens, use.loss_tokens, use.sequences) == (7, 4, 2)
    out, use = budget_dataset(ds, 12 * 2 + 3)  # twice over the data, then a prefix
    assert sum(map(len, out["input_ids"])) == 27 and use.passes == pytest.approx(27 / 12)
    assert out["input_ids"][:6] == [r["input_ids"] for r in rows] * 2 and out["input_ids"][6] == [1, 2, 3]
    with pytest.raises(HealError, match="no sequence carries a trained token within its first 1 tokens"):
        budget_dataset(ds, 1)
    packed = datasets.Dataset.from_list(
        [{"input_ids": [1, 2, 3, 4, 5], "labels": [1, 2, 3, 4, 5], "seq_lengths": [2, 3]}]
    )
    out, use = budget_dataset(packed, 9)
    assert out["input_ids"][1] == [1, 2, 3, 4] and out["seq_lengths"][1] == [2, 2] and use.tokens == 9


def test_compared_recipes_must_share_one_budget(base, tmp_path):
    from lmeval_layerprune.heal.budget import shared_budget
    from lmeval_layerprune.sweep.run import Sweep, SweepSettings

    a, b = load_recipe("demo-selfgen-lora"), load_recipe("demo-cpt-lora")
    assert shared_budget([a]) is None and shared_budget([b]) == b.budget.tokens
    with pytest.raises(
        RecipeError,
        match=r"same number of tokens, but demo-selfgen-lora: no budget \(sft.max_steps=16\)"
        r"; demo-cpt-lora: budget.tokens=\d+\. Give them one budget: --heal-override budget.tokens=N",
    ):
        shared_budget([a, b])
    same = [
        load_recipe(n, ["budget.tokens=4096"]) for n in ("demo-selfgen-lora", "demo-cpt-lora", "demo-partial-last2")
    ]
    assert shared_budget(same) == 4096
    # a sweep comparing recipes checks it before any cell runs
    settings = SweepSettings(model=str(base), methods=("last",), ratios=(0.0, 0.5), tasks=("arith_probe",), limit=2,
                             recipe="demo-selfgen-lora,demo-cpt-lora", heal_cells=(("last", 0.5),))  # fmt: skip
    with pytest.raises(RecipeError, match="must train on the same number of tokens"):
        Sweep(settings, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()
    Sweep(dataclasses.replace(settings, heal_overrides=("budget.tokens=4096",)), tmp_path / "sweep")


def _sha256s(tensors: dict) -> dict[str, str]:
    import hashlib

    return {
        k: hashlib.sha256(v.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest() for k, v in tensors.items()
    }


def test_partial_training_leaves_every_frozen_tensor_bit_identical(base, responses, tmp_path):
    from safetensors.torch import load_file

    from lmeval_layerprune.checkpoint.load import load_pruned_model

    before = _sha256s(load_pruned_model(str(base), "2-3", dtype=torch.float32).state_dict())
    out = heal(HealSettings("demo-partial-last2", str(base), tmp_path / "p", drop="2-3", data=str(responses),
                            overrides=[*TINY[:-1], "sft.max_steps=2"], progress=False))  # fmt: skip
    weights = load_file(out / "model.safetensors")
    after = _sha256s(weights)
    assert before.keys() == after.keys()
    trained = {k for k in after if k.startswith(("model.layers.2.", "model.layers.3.", "lm_head.", "model.norm."))}
    assert len(trained) == 2 * 9 + 2  # two decoder layers of 9 tensors, the head, the norm
    assert {k for k in after if before[k] != after[k]} == trained  # each trained tensor changed, no other one did
    r = json.loads((out / "layer_pruning.json").read_text())["recovery"]
    assert r["finetune"] == "partial" and r["settings"]["train"]["layers"] == [2, 3]
    assert r["trainable_parameters"] == sum(weights[k].numel() for k in trained)
    assert r["total_parameters"] == sum(v.numel() for v in weights.values())
    assert r["training_tokens"] > 0 and r["train_seconds"] > 0 and r["steps"] == 2
    from lmeval_layerprune.cli import main

    assert main(["card", str(out), "--base-model", "me/tiny", "--license", "mit"]) == 0
    card = (out / "README.md").read_text()
    assert f"| trainable parameters | {r['trainable_parameters']:,} of {r['total_parameters']:,}" in card
    assert "| weights trained | layers 2, 3 (`last:2`) of the pruned model, the LM head, the final norm" in card
    assert f"| training tokens | {r['training_tokens']:,} |" in card


NEW_RECIPES = ["demo-partial-last2", "demo-cpt-lora", "partial-last2", "cpt-lora", "cpt-full"]


@pytest.mark.parametrize("recipe", NEW_RECIPES)
def test_each_new_recipe_trains_two_steps_on_a_tiny_model(recipe, base, responses, tmp_path):
    rec = load_recipe(recipe)
    overrides = [*TINY[:-1], "sft.max_length=64", "sft.save_steps=2", "sft.gradient_accumulation_steps=1"]
    overrides += ["lora.r=4"] if rec.lora is not None else []
    if rec.budget is not None:  # 512 tokens = 8 packed sequences of 64 = 2 steps of 4 (offline: the bundled corpus)
        overrides += ["data=corpus", "budget.tokens=512"]
    else:
        overrides += ["sft.max_steps=2"]
    data = None if rec.method == "cpt" else str(responses)
    out = heal(HealSettings(recipe, str(base), tmp_path / "o", drop="2-3", data=data, overrides=overrides,
                            progress=False))  # fmt: skip
    r = json.loads((out / "layer_pruning.json").read_text())["recovery"]
    assert (r["recipe"], r["method"], r["finetune"], r["steps"]) == (recipe, rec.method, rec.finetune, 2)
    assert 0 < r["trainable_parameters"] < r["total_parameters"] or rec.finetune == "full"
    if rec.budget is not None:
        assert r["training_tokens"] == 512 and r["settings"]["budget"]["sequences"] == 8
    assert (out / "HEAL_COMPLETE").is_file()


def test_cpt_trains_on_plain_text_without_a_chat_template(base, tmp_path):
    from lmeval_layerprune.heal.check import check_run
    from lmeval_layerprune.heal.data import prepare_data
    from lmeval_layerprune.heal.train import load_student, make_trainer

    docs = ["The lighthouse keeper wound the clock at dusk.", "Moss grows on the north side of old stone walls."]
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(docs) + "\n")
    settings = HealSettings("demo-cpt-lora", str(base), tmp_path / "cpt", drop="2-3", data=str(text),
                            overrides=[*TINY, "sft.max_length=16", "budget.tokens=40"], progress=False)  # fmt: skip
    run = check_run(settings)
    rows, counts = prepare_data(run)
    assert rows == [{"text": d} for d in docs] and counts["examples"] == 2
    student, tokenizer, plan = load_student(run, None)
    trainer = make_trainer(run, student, tokenizer, plan, rows).trainer
    # the text as it is, each document closed by EOS, joined and cut into 16-token sequences: no chat template
    stream = [t for d in docs for t in [*tokenizer(d)["input_ids"], tokenizer.eos_token_id]]
    assert tokenizer.apply_chat_template([{"role": "user", "content": docs[0]}], tokenize=True)[:3] != stream[:3]
    assert "<|user|>" not in tokenizer.decode(stream) and len(stream) > 40
    ds = trainer.train_dataset
    assert ds["input_ids"] == [stream[0:16], stream[16:32], stream[32:40]]  # the budget: exactly 40 tokens
    assert ds["labels"] == ds["input_ids"]  # every token is in the loss
    trainer.train()
    assert trainer.state.num_input_tokens_seen == 40


def test_a_budget_trains_two_recipes_on_the_same_number_of_tokens(base, responses, tmp_path, capsys):
    got = {}
    for recipe, data in (("demo-selfgen-lora", str(responses)), ("demo-cpt-lora", "corpus")):
        out = heal(HealSettings(recipe, str(base), tmp_path / recipe, drop="2-3", data=data, progress=False,
                                overrides=[*TINY, "sft.max_length=64", "budget.tokens=300"]))  # fmt: skip
        got[recipe] = json.loads((out / "layer_pruning.json").read_text())["recovery"]
    a, b = got["demo-selfgen-lora"], got["demo-cpt-lora"]
    assert a["training_tokens"] == b["training_tokens"] == 300
    assert a["settings"]["budget"]["tokens"] == b["settings"]["budget"]["tokens"] == 300
    # the selfgen sequences are short and mostly prompt; the packed text sequences are full and all trained
    assert a["settings"]["budget"]["loss_tokens"] < b["settings"]["budget"]["loss_tokens"] == 300 - 5
    assert "budget.tokens=300 sets the length of training; sft.max_steps=16 is not used" in capsys.readouterr().err
