"""Discovery: model types outside the table are sliced exactly, or refused with a reason.

The per-type check is the one of ``benchmarks/bench_arch_sweep.py`` (which runs it over every
causal-LM model type transformers knows): a tiny random model of the type, pruned three ways
(first layer, a middle pair, the last layer; in memory, and the middle pair also loaded from
disk), against an independent reference, a fresh model built from the config's own
``to_dict()`` with only the kept layers and their weights copied across: forward logits and
greedy generation with the KV cache, to 1e-5.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_model

from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.core.arch import ARCHITECTURES, arch_for, discover, facts
from lmeval_layerprune.core.slicing import layer_subset, prune_model
from lmeval_layerprune.errors import UnsupportedArchitectureError


def _sweep_module():
    spec = importlib.util.spec_from_file_location("bench_arch_sweep", REPO / "benchmarks" / "bench_arch_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_arch_sweep"] = module
    spec.loader.exec_module(module)
    return module


sweep = _sweep_module()

#: fast: types outside the full table (inferred, hinted, nested), seconds each
FAST_EXACT = ["exaone4", "gpt2", "gemma3", "bart", "mamba", "llama4_text"]
#: slow: a broader representative set (encoders-as-decoders, MoE, MLA, hybrids, recurrent, multimodal)
SLOW_EXACT = [
    "bert",
    "bloom",
    "opt",
    "falcon",
    "mpt",
    "gptj",
    "olmoe",
    "granitemoe",
    "deepseek_v3",
    "qwen3_next",
    "cohere2_moe",
    "xglm",
    "whisper",
    "falcon_mamba",
    "minimax",
    "glm4_moe",
]


def _check(model_type: str, tmp_path) -> tuple[str, str]:
    outcome, detail, _facts = sweep.check_type(model_type, tmp_path)
    return outcome, detail


@pytest.mark.parametrize("model_type", FAST_EXACT)
def test_inferred_types_are_exact(model_type: str, tmp_path) -> None:
    assert model_type not in ARCHITECTURES or ARCHITECTURES[model_type].partial
    assert _check(model_type, tmp_path) == ("exact", "")


@pytest.mark.slow
@pytest.mark.parametrize("model_type", SLOW_EXACT)
def test_representative_types_are_exact(model_type: str, tmp_path) -> None:
    assert _check(model_type, tmp_path) == ("exact", "")


@pytest.mark.parametrize(
    ("model_type", "why"),
    [("diffllama", "lambda_init"), ("gpt_neo", "attention_layers"), ("xlm", "candidate decoder stacks")],
)
def test_types_that_cannot_be_sliced_exactly_are_refused(model_type: str, why: str, tmp_path) -> None:
    """'wrong' must be zero: these would differ from a fresh shallower model, so they are refused."""
    outcome, detail = _check(model_type, tmp_path)
    assert outcome == "refused", detail
    assert f"'{model_type}'" in detail and why in detail and "ARCHITECTURES" in detail


def test_the_sweep_counts_a_wrong_slice_as_wrong(tmp_path, monkeypatch) -> None:
    """The sweep's reference can fail: breaking the renumbering makes it report 'wrong'."""
    from lmeval_layerprune.core import slicing

    monkeypatch.setattr(slicing, "_renumber", lambda layer, info, new_idx: None)
    outcome, detail = _check("exaone4", tmp_path)
    assert outcome == "wrong", detail


def test_without_its_hint_a_threshold_is_refused_not_wrong(tmp_path, monkeypatch) -> None:
    """DeepSeek-V3's first_k_dense_replace (dense layers below it) cannot be inferred.

    Without its table hint, slicing it naively would leave the renumbered layers on the
    wrong side of the threshold; the structural check refuses instead, naming the type.
    """
    monkeypatch.delitem(ARCHITECTURES, "deepseek_v3")
    outcome, detail = _check("deepseek_v3", tmp_path)
    assert outcome == "refused"
    assert "'deepseek_v3'" in detail and "not rebuilt alike" in detail and "ARCHITECTURES" in detail


def test_two_candidate_stacks_are_refused() -> None:
    model = tiny_model("llama")
    model.model.extra = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(6))
    with pytest.raises(UnsupportedArchitectureError, match=r"'llama'.*2 candidate decoder stacks.*model.extra"):
        discover(model.config, model=model)


def test_per_layer_tensors_outside_the_layers_are_refused(monkeypatch) -> None:
    """A tensor outside the stack whose shape follows the layer count is refused."""
    from transformers.models.llama import modeling_llama

    original = modeling_llama.LlamaModel.__init__

    def init(self, config):
        original(self, config)
        self.per_layer_scale = torch.nn.Parameter(torch.ones(config.num_hidden_layers))

    monkeypatch.setattr(modeling_llama.LlamaModel, "__init__", init)
    monkeypatch.delitem(ARCHITECTURES, "llama")
    model = tiny_model("llama")
    with pytest.raises(UnsupportedArchitectureError, match=r"tensors outside the decoder layers.*per_layer_scale"):
        prune_model(model, [0])


def test_an_inferred_slice_logs_what_was_inferred(caplog) -> None:
    config = sweep.tiny_config("exaone4")
    config.initializer_range = 0.0123  # a fresh fingerprint: discovery runs (and logs) again
    with caplog.at_level(logging.INFO, logger="lmeval_layerprune.core.arch.facts"):
        info = arch_for(config)
    lines = [r.getMessage() for r in caplog.records if "inferred" in r.getMessage()]
    assert len(lines) == 1
    assert "exaone4" in lines[0] and "model.layers (6 layers)" in lines[0] and "layer_types" in lines[0]
    assert info.inferred and info.layers == "model.layers" and "layer_types" in info.lists


def test_multimodal_prunes_the_text_decoder_only(tmp_path) -> None:
    config = sweep.tiny_config("gemma3")
    full = sweep.build(config)
    vision = {k: v.clone() for k, v in full.model.vision_tower.state_dict().items()}
    pruned = prune_model(copy.deepcopy(full), [1, 4])
    assert len(pruned.model.language_model.layers) == 4
    assert pruned.config.text_config.num_hidden_layers == 4
    after = pruned.model.vision_tower.state_dict()
    assert vision.keys() == after.keys() and all(torch.equal(vision[k], after[k]) for k in vision)
    assert len(pruned.model.vision_tower.encoder.layers) == config.vision_config.num_hidden_layers
    plan = pruned.config.layer_pruning
    assert plan["drop"] == [1, 4] and plan["num_layers"] == 6
    assert (plan["text_model"], plan["arch"]) == ("model.language_model", "inferred")  # PruningPlan.extra, flat

    # Loading only the kept layers from disk (a checkpoint whose keys use the older
    # language_model.model.layers layout) gives the same model.
    full.save_pretrained(tmp_path / "full")
    loaded = load_pruned_model(str(tmp_path / "full"), "1+4", dtype=torch.float32).eval()
    ids = torch.randint(3, 290, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_layer_subset_restores_an_inferred_model_exactly() -> None:
    config = sweep.tiny_config("gemma3")
    model = sweep.build(config)
    ids = torch.randint(3, 290, (1, 10))
    before = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with layer_subset(model, [0, 5]):
            inside = model(input_ids=ids).logits
            assert len(model.model.language_model.layers) == 4
        got = model(input_ids=ids).logits
    ref = prune_model(copy.deepcopy(model), [0, 5])
    with torch.no_grad():
        torch.testing.assert_close(inside, ref(input_ids=ids).logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert json.dumps(model.config.to_dict(), sort_keys=True, default=str) == before
    idx = [m.layer_idx for m in model.model.language_model.layers.modules() if hasattr(m, "layer_idx")]
    assert sorted(set(idx)) == list(range(6))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmeval_layerprune.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_archs_lists_table_inferred_and_unsupported() -> None:
    res = _cli("archs", "llama", "exaone4", "gemma3", "diffllama")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line and not line[0].isdigit()}
    assert rows["llama"].split()[1] == "table"
    assert rows["exaone4"].split()[1] == "inferred"
    assert rows["gemma3"].split()[1] == "inferred" and "text model model.language_model" in rows["gemma3"]
    assert rows["diffllama"].split()[1] == "unsupported" and "not rebuilt alike" in rows["diffllama"]
    assert res.stdout.strip().splitlines()[-1] == "1 table, 2 inferred, 1 unsupported"


@pytest.mark.slow
def test_slice_an_inferred_type_writes_a_verified_checkpoint(tmp_path) -> None:
    from conftest import tiny_tokenizer

    config = sweep.tiny_config("exaone4")
    full = sweep.build(config)
    full.save_pretrained(tmp_path / "src")
    tiny_tokenizer().save_pretrained(tmp_path / "src")
    res = _cli("slice", str(tmp_path / "src"), "--drop", "2-3", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    plan = cfg["layer_pruning"]
    assert plan["drop"] == [2, 3] and plan["arch"] == "inferred"
    assert plan["writer"] in ("mergekit", "transformers")
    ref = prune_model(copy.deepcopy(full), [2, 3])
    from transformers import AutoModelForCausalLM

    written = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    ids = torch.randint(3, 290, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(written(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_discovery_results_are_cached_per_config() -> None:
    config = sweep.tiny_config("exaone4")
    assert arch_for(config) is arch_for(copy.deepcopy(config))
    assert facts._fingerprint(config) == facts._fingerprint(copy.deepcopy(config))
