"""Per architecture: a pruned model equals an independent reference built with only the kept layers.

The reference is a fresh model of the same family whose config is written here by hand
(kept layer count, per-layer lists sliced in the test), loaded with the kept layers'
weights under new indices. Both pruning paths are checked against it: loading only the
kept tensors from disk, and slicing a live model in place.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ARCH_CASES, VOCAB, renumber_state_dict, tiny_config, tiny_model
from transformers import AutoModelForCausalLM

from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.core.arch import ARCHITECTURES, arch_for
from lmeval_layerprune.core.slicing import prune_model

DROP = [0, 2, 5]  # first, a middle one and the last of 6: non-contiguous
KEEP = [1, 3, 4]
ATOL = 1e-5


def reference_model(model_type: str, full: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    cfg = full.config
    overrides: dict = {"num_hidden_layers": len(keep)}
    for attr in ("layer_types", "no_rope_layers"):
        values = getattr(cfg, attr, None)
        if values is not None:
            overrides[attr] = [values[i] for i in keep]
    layers = full.get_submodule(ARCHITECTURES[model_type].layers)
    if any(hasattr(layer.mlp, "experts") for layer in layers) and hasattr(cfg, "decoder_sparse_step"):
        # Which kept layers are dense is read off the full model's modules.
        overrides["decoder_sparse_step"] = 1
        overrides["mlp_only_layers"] = [
            new for new, orig in enumerate(keep) if not hasattr(layers[orig].mlp, "experts")
        ]
    torch.manual_seed(123)
    ref = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), dtype=torch.float32).eval()
    ref.load_state_dict(renumber_state_dict(full.state_dict(), keep), strict=True)
    return ref


def decode_logits(model: torch.nn.Module, ids: torch.Tensor, prefix: int) -> torch.Tensor:
    """Logits for every position, computed with the KV cache: a prefix, then one token at a time."""
    out = model(input_ids=ids[:, :prefix], use_cache=True)
    logits, past = [out.logits], out.past_key_values
    for t in range(prefix, ids.shape[1]):
        out = model(input_ids=ids[:, t : t + 1], past_key_values=past, use_cache=True)
        logits.append(out.logits)
        past = out.past_key_values
    return torch.cat(logits, dim=1)


def assert_matches_reference(pruned: torch.nn.Module, ref: torch.nn.Module) -> None:
    torch.manual_seed(7)
    ids = torch.randint(3, VOCAB, (2, 14))
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        got = pruned(input_ids=ids).logits
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        torch.testing.assert_close(decode_logits(pruned, ids, 5), want, atol=ATOL, rtol=0)
        gen_kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        want_gen = ref.generate(ids[:1, :6], **gen_kwargs)
        assert torch.equal(pruned.generate(ids[:1, :6], **gen_kwargs), want_gen)
        # A static cache has exactly num_hidden_layers slots: stale layer_idx values overflow it.
        static = pruned.generate(ids[:1, :6], cache_implementation="static", **gen_kwargs)
        assert torch.equal(static, want_gen)


@pytest.mark.parametrize("model_type", sorted(ARCH_CASES))
def test_pruned_equals_reference(model_type: str, tmp_path) -> None:
    full = tiny_model(model_type)
    assert full.config.num_hidden_layers == 6
    ref = reference_model(model_type, full, KEEP)

    # Path 1: load only the kept layers from a checkpoint on disk.
    full.save_pretrained(tmp_path / "full")
    loaded = load_pruned_model(str(tmp_path / "full"), "0+2+5", dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 3
    assert loaded.config.layer_pruning["drop"] == DROP
    assert loaded.config.layer_pruning["kept"] == KEEP
    assert_matches_reference(loaded, ref)

    # Path 2: slice a live model in place.
    live = prune_model(copy.deepcopy(full), DROP)
    layers = live.get_submodule(arch_for(live.config).layers)
    assert len(layers) == 3
    idx = [m.layer_idx for layer in layers for m in layer.modules() if hasattr(m, "layer_idx")]
    assert idx and set(idx) == {0, 1, 2}
    assert_matches_reference(live, ref)

    # The pruned model saves, and reloads as a plain checkpoint with the plan recorded.
    live.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", dtype=torch.float32).eval()
    assert again.config.layer_pruning["drop"] == DROP
    assert_matches_reference(again, ref)


FULL_ENTRIES = sorted(k for k, v in ARCHITECTURES.items() if not v.partial and not v.unsupported)


def test_every_architecture_has_a_case() -> None:
    # Hint entries (partial) and refusals are covered by tests/test_arch_discovery.py.
    assert sorted(ARCH_CASES) == FULL_ENTRIES


def test_every_per_layer_list_is_declared() -> None:
    """A config list with one entry per layer that the table does not declare would go stale."""
    for model_type in FULL_ENTRIES:
        info = ARCHITECTURES[model_type]
        cfg = tiny_config(model_type).to_dict()
        per_layer = {k for k, v in cfg.items() if isinstance(v, list) and len(v) == cfg["num_hidden_layers"]}
        assert per_layer <= set(info.lists), (model_type, per_layer - set(info.lists))


def test_prune_twice_records_original_indices() -> None:
    model = tiny_model("llama")
    prune_model(model, [0, 1])  # keeps 2,3,4,5
    prune_model(model, [1])  # drops original layer 3
    plan = model.config.layer_pruning
    assert plan["drop"] == [0, 1, 3]
    assert plan["kept"] == [2, 4, 5]
    assert plan["num_layers"] == 6


def test_unsupported_architecture_is_a_clear_error(tmp_path, monkeypatch) -> None:
    # Without its table entry, Qwen3-MoE's mlp_only_layers (a list of layer indices) cannot be
    # inferred: discovery refuses, naming the type, the setting and how to add an entry.
    monkeypatch.delitem(ARCHITECTURES, "qwen3_moe")
    model = tiny_model("qwen3_moe")
    msg = r"cannot slice model_type 'qwen3_moe' safely: config.mlp_only_layers = \[4\].*add an entry to ARCHITECTURES"
    with pytest.raises(ValueError, match=msg):
        prune_model(model, [0])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=msg):
        load_pruned_model(str(tmp_path), "0")


def test_filter_never_touches_dropped_tensors() -> None:
    from lmeval_layerprune.core.slicing import filter_state_dict

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError("a dropped tensor was accessed")

    sd = {f"model.layers.{i}.mlp.weight": (Untouchable() if i in DROP else i) for i in range(6)}
    sd["model.embed_tokens.weight"] = "emb"
    out = filter_state_dict(sd, ARCHITECTURES["llama"], 6, KEEP)
    assert out == {
        "model.layers.0.mlp.weight": 1,
        "model.layers.1.mlp.weight": 3,
        "model.layers.2.mlp.weight": 4,
        "model.embed_tokens.weight": "emb",
    }
