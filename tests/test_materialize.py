"""Materialized checkpoints (mergekit passthrough + fix-ups), the checkpoint cache, pruned-vllm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ARCH_CASES, VOCAB, save_tiny
from transformers import AutoModelForCausalLM

from lmeval_layerprune.checkpoint.cache import cache_entries, cached_checkpoint, clear_cache
from lmeval_layerprune.checkpoint.load import load_pruned_model
from lmeval_layerprune.checkpoint.materialize import kept_ranges, materialize
from lmeval_layerprune.core.layout import MERGEKIT_FILE, PLAN_FILE
from lmeval_layerprune.errors import OutputError

BIN = Path(sys.executable).parent


def _logits(model, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_kept_ranges_are_half_open_and_never_empty() -> None:
    assert kept_ranges([1, 3, 4]) == [(1, 2), (3, 5)]
    assert kept_ranges([0, 1, 2]) == [(0, 3)]
    assert kept_ranges([0, 1, 2, 3, 4]) == [(0, 5)]  # last layer dropped: no [5, 5] slice


@pytest.mark.parametrize("model_type", sorted(ARCH_CASES))
def test_checkpoint_equals_pruned_hf(model_type: str, tmp_path) -> None:
    full = save_tiny(model_type, tmp_path / "full")
    out = materialize(str(full), "0+2+5", tmp_path / "out", dtype="float32")
    ckpt = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    sliced = load_pruned_model(str(full), "0+2+5", dtype=torch.float32)
    torch.testing.assert_close(_logits(ckpt), _logits(sliced), atol=1e-5, rtol=0)
    plan = json.loads((out / PLAN_FILE).read_text())
    assert plan["drop"] == [0, 2, 5] and plan["kept"] == [1, 3, 4] and plan["num_layers"] == 6
    assert ckpt.config.layer_pruning["drop"] == [0, 2, 5]
    assert ckpt.config.num_hidden_layers == 3
    merge = yaml.safe_load((out / MERGEKIT_FILE).read_text())
    assert [s["sources"][0]["layer_range"] for s in merge["slices"]] == [[1, 2], [3, 5]]
    assert merge["merge_method"] == "passthrough"
    assert (out / "tokenizer.json").is_file()


def test_mergekit_yaml_reproduces_the_checkpoint(llama_dir, tmp_path) -> None:
    out = materialize(str(llama_dir), "last:2", tmp_path / "out", dtype="float32")
    assert json.loads((out / PLAN_FILE).read_text())["writer"] == "mergekit"
    proc = subprocess.run(
        [str(BIN / "mergekit-yaml"), str(out / MERGEKIT_FILE), str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    torch.testing.assert_close(_logits(again), _logits(ours), atol=0, rtol=0)


def test_materialize_refuses_to_clobber(llama_dir, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        materialize(str(llama_dir), "1", tmp_path / "out")
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="removes nothing"):
        materialize(str(llama_dir), "none", tmp_path / "other")
    # --overwrite never replaces what this tool did not write, nor an input; refusals change nothing
    with pytest.raises(OutputError, match="did not write"):
        materialize(str(llama_dir), "1", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    with pytest.raises(OutputError, match="is the input"):
        materialize(str(llama_dir), "1", llama_dir, overwrite=True)
    assert (llama_dir / "config.json").is_file()
    ours = materialize(str(llama_dir), "1", tmp_path / "ours")
    # --overwrite with a bad spec must fail before anything is touched
    with pytest.raises(ValueError, match="out of range"):
        materialize(str(llama_dir), "99", ours, overwrite=True)
    assert json.loads((ours / PLAN_FILE).read_text())["drop"] == [1]
    materialize(str(llama_dir), "2", ours, overwrite=True)
    assert json.loads((ours / PLAN_FILE).read_text())["drop"] == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "out"]  # no temporary or set-aside copy left


def test_slicing_an_already_pruned_checkpoint(llama_dir, tmp_path) -> None:
    first = materialize(str(llama_dir), "0", tmp_path / "first", dtype="float32")  # keeps 1..5
    second = materialize(str(first), "4", tmp_path / "second", dtype="float32")  # 5th of those: original 5
    plan = json.loads((second / PLAN_FILE).read_text())
    assert plan["drop"] == [0, 5] and plan["kept"] == [1, 2, 3, 4] and plan["base_model"] == str(llama_dir)
    assert plan["writer"] == "mergekit"
    merge = yaml.safe_load((second / MERGEKIT_FILE).read_text())
    assert [s["sources"][0]["layer_range"] for s in merge["slices"]] == [[0, 4]]
    ckpt = AutoModelForCausalLM.from_pretrained(second, dtype=torch.float32)
    torch.testing.assert_close(_logits(ckpt), _logits(load_pruned_model(str(llama_dir), "0+5", dtype=torch.float32)))


def test_slice_cli(llama_dir, tmp_path) -> None:
    cmd = [str(BIN / "lmeval-prune"), "slice", str(llama_dir), "--drop", "[0,5]", "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verified" in proc.stdout and "mergekit.yaml" in proc.stdout
    assert json.loads((tmp_path / "o" / PLAN_FILE).read_text())["drop"] == [0, 5]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert bad.returncode == 2 and "already exists" in bad.stderr and "Traceback" not in bad.stderr


# -------------------------------------------------------------------- cache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMEVAL_LAYERPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_hit_reuses_the_checkpoint(llama_dir, cache) -> None:
    first = cached_checkpoint(str(llama_dir), "1-2", dtype="float32")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = cached_checkpoint(str(llama_dir), "1+2", dtype="float32")  # same layers, other spelling
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    other = cached_checkpoint(str(llama_dir), "3", dtype="float32")
    assert other != first
    entries = cache_entries()
    assert sorted(e["plan"]["drop"] for e in entries) == [[1, 2], [3]]
    assert all(e["bytes"] > 0 for e in entries)
    # Touching the base model's weights changes its identity.
    os.utime(llama_dir / "model.safetensors", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cached_checkpoint(str(llama_dir), "1-2", dtype="float32") != first
    assert clear_cache() > 0 and cache_entries() == []


_CHILD = textwrap.dedent(
    """
    import sys
    from lmeval_layerprune.checkpoint.cache import cached_checkpoint
    print(cached_checkpoint(sys.argv[1], sys.argv[2], dtype="float32"), flush=True)
    """
)


def _child(llama_dir: Path, drop: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMEVAL_LAYERPRUNE_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(llama_dir), drop], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_concurrent_requests_make_one_checkpoint(llama_dir, cache) -> None:
    procs = [_child(llama_dir, "4", cache) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    paths = {o[0].decode().strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    assert [p.name for p in (cache / "checkpoints").iterdir() if p.is_dir()] == [Path(paths.pop()).name]
    ckpt = AutoModelForCausalLM.from_pretrained(cache_entries()[0]["path"], dtype=torch.float32)
    torch.testing.assert_close(_logits(ckpt), _logits(load_pruned_model(str(llama_dir), "4", dtype=torch.float32)))


def test_killed_writer_leaves_nothing_complete(llama_dir, cache) -> None:
    proc = _child(llama_dir, "2", cache)
    root = cache / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".tmp-") for p in root.glob("*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cache_entries() == []
    path = cached_checkpoint(str(llama_dir), "2", dtype="float32")
    assert [e["path"] for e in cache_entries()] == [str(path)]
    assert not any(p.name.startswith(".tmp-") for p in root.glob("*")), "abandoned partial write not cleaned"


def test_pruned_hf_materialize_true(llama_dir, cache) -> None:
    from lmeval_layerprune.lmeval.hf import PrunedHFLM

    lm = PrunedHFLM(pretrained=str(llama_dir), drop="0+5", materialize="true", dtype="float32")
    assert Path(lm.model.config._name_or_path).parent == cache / "checkpoints"
    assert lm.model.config.num_hidden_layers == 4
    assert lm.drop == (0, 5)
    assert lm.model.config.layer_pruning["base_model"] == str(llama_dir)
    assert lm.model.config.layer_pruning["spec"] == "0+5"
    torch.testing.assert_close(
        _logits(lm.model), _logits(load_pruned_model(str(llama_dir), "0+5", dtype=torch.float32)), atol=1e-5, rtol=0
    )


# --------------------------------------------------------------- pruned-vllm


def test_pruned_vllm_without_vllm_says_how_to_install(llama_dir, monkeypatch) -> None:
    import lmeval_layerprune.lmeval.vllm as lm_mod

    monkeypatch.setattr(lm_mod, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lmeval-layerprune\[vllm\]'"):
        lm_mod.PrunedVLLM(pretrained=str(llama_dir), drop="1")


def test_pruned_vllm_hands_the_checkpoint_and_all_args_to_vllm(llama_dir, cache, monkeypatch) -> None:
    """Everything up to the vLLM call: a stand-in VLLM records what it receives."""
    import types

    from lm_eval.api.registry import get_model

    import lmeval_layerprune.lmeval.vllm as lm_mod

    received: dict = {}

    class FakeVLLM:
        def __init__(self, **kwargs):
            received.update(kwargs)

    fake = types.ModuleType("lm_eval.models.vllm_causallms")
    fake.VLLM = FakeVLLM
    monkeypatch.setitem(sys.modules, "lm_eval.models.vllm_causallms", fake)
    monkeypatch.setattr(lm_mod, "find_spec", lambda name: object())
    cls = get_model("pruned-vllm")
    assert cls is lm_mod.PrunedVLLM
    lm = cls.create_from_arg_string(
        f"pretrained={llama_dir},drop=0-1,dtype=float32,tensor_parallel_size=2,"
        "data_parallel_size=1,gpu_memory_utilization=0.8,lora_local_path=/adapters/healed"
    )
    assert isinstance(lm, FakeVLLM)
    ckpt = Path(received.pop("pretrained"))
    assert ckpt.parent == cache / "checkpoints"
    assert json.loads((ckpt / PLAN_FILE).read_text())["drop"] == [0, 1]
    assert received == {
        "dtype": "float32",
        "tensor_parallel_size": 2,
        "data_parallel_size": 1,
        "gpu_memory_utilization": 0.8,
        "lora_local_path": "/adapters/healed",
    }
