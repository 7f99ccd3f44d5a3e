"""``lmeval-prune heal``: recipes (validation, overrides), training end to end on a tiny model,
the saved checkpoint against an independent reference, resume after a kill, KD, accelerate launch."""

from __future__ import annotations

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
from lmeval_layerprune.heal.recipe import apply_overrides, list_recipes, load_recipe, validate
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
    }
    assert set(expected) <= set(names)
    for name, (method, finetune) in expected.items():
        rec = load_recipe(name)
        assert (rec.method, rec.finetune) == (method, finetune), name
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
    assert json.loads((out / "config.json").read_text())["layer_pruning"]["recovery"]["steps"] == 6
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
