"""bench: one loaded model, analytic parameter and KV-cache figures, the bench file round trip, the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_config, tiny_model

from lmeval_layerprune.core.layout import BENCH_FILE
from lmeval_layerprune.core.slicing import prune_model
from lmeval_layerprune.errors import BenchError, DropSpecError
from lmeval_layerprune.methods.resolve import resolve_indices
from lmeval_layerprune.speed.bench import BenchSettings, bench_checkpoint, bench_model, run_bench
from lmeval_layerprune.speed.bench_output import format_bench, write_bench
from lmeval_layerprune.speed.bench_result import BenchWorkload, bench_from_dict, load_bench

pytestmark = pytest.mark.usefixtures("one_thread")


WORKLOAD = BenchWorkload(batch_sizes=(1, 3), prompt_len=8, new_tokens=3, rounds=2, warmup=1)


def _kv_per_token(config, layers: int, dtype_bytes: int = 4) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return layers * kv_heads * head_dim * 2 * dtype_bytes  # keys and values


def _params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())  # untied tiny models: every tensor once
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return total, total - emb


@pytest.mark.parametrize("arch", ["llama", "olmo2"])
def test_bench_figures_equal_analytic_values(arch: str) -> None:
    model = tiny_model(arch)
    config = tiny_config(arch)
    state = copy.deepcopy(model.state_dict())
    record = bench_model(model, [("last:2", (4, 5)), ("1+3+5", (1, 3, 5))], WORKLOAD, model_name="tiny", progress=False)
    res = bench_from_dict(record)
    assert [v.name for v in res.variants] == ["parent", "last:2", "1+3+5"]
    for v, drop in zip(res.variants, [(), (4, 5), (1, 3, 5)], strict=True):
        layers = 6 - len(drop)
        assert v.layers == layers and v.ideal == pytest.approx(6 / layers)
        assert v.kv_bytes_per_token == _kv_per_token(config, layers)
        ref = prune_model(copy.deepcopy(model), drop) if drop else model
        assert (v.params_total, v.params_no_embeddings) == _params(ref)
        for b in (1, 3):
            m = v.batches[b]
            assert m["kv_cache_bytes"] == _kv_per_token(config, layers) * b * (8 + 3)
            assert m["peak_memory_bytes"] == v.weights_bytes + m["kv_cache_bytes"]
            assert len(m["decode_tps"]["values"]) == 2 and m["decode_tps"]["min"] <= m["decode_tps"]["median"]
        assert v.gain("kv_bytes_per_token") == pytest.approx(6 / layers)  # the KV cache shrinks exactly ideally
    assert res.parent.gain("decode_tps", 3) == 1.0
    # the model was measured in place and is exactly as before
    assert model.config.num_hidden_layers == 6
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())
    text = format_bench(record)
    assert "1+3+5" in text and "ideal" in text and "batch 3" in text


def test_load_bench_round_trip_and_errors(tmp_path) -> None:
    record = bench_model(tiny_model("llama"), [("last:3", (3, 4, 5))], WORKLOAD, model_name="tiny", progress=False)
    path = write_bench(record, tmp_path / "out")
    assert path.name == BENCH_FILE and (tmp_path / "out" / "layer_pruning_bench.png").stat().st_size > 0
    for where in (path, tmp_path / "out"):
        res = load_bench(where)
        assert res.raw == json.loads(json.dumps(record))
        v = res.variant((3, 4, 5))
        assert v is res.variant("last:3") and v.removed == 3
        assert v.gain("decode_tps", 1) == pytest.approx(v.median("decode_tps", 1) / res.parent.median("decode_tps", 1))
        assert "cpu" in res.conditions() and res.pruned == [v]
    with pytest.raises(BenchError, match="no bench result"):
        load_bench(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(BenchError, match="not a bench result"):
        load_bench(tmp_path / "bad.json")
    (tmp_path / "new.json").write_text(json.dumps({**record, "version": 99}))
    with pytest.raises(BenchError, match="version 99"):
        load_bench(tmp_path / "new.json")


def test_bad_spec_is_drop_spec_error(llama_dir) -> None:
    with pytest.raises(DropSpecError) as drop_err:
        resolve_indices("7", 6)
    with pytest.raises(type(drop_err.value), match="layer 7 is out of range"):
        run_bench(BenchSettings(str(llama_dir), ("7",), WORKLOAD, progress=False))
    with pytest.raises(DropSpecError, match="unknown method 'lats'"):
        run_bench(BenchSettings(str(llama_dir), ("lats:2",), WORKLOAD, progress=False))


def test_bench_checkpoint_writes_into_the_checkpoint(tmp_path, llama_dir) -> None:
    from lmeval_layerprune.checkpoint.load import load_pruned_model

    ckpt = tmp_path / "ckpt"
    load_pruned_model(str(llama_dir), "2-3").save_pretrained(ckpt)
    path = bench_checkpoint(ckpt, workload=BenchWorkload((1,), prompt_len=4, new_tokens=2, rounds=1), progress=False)
    assert path == ckpt / BENCH_FILE
    res = load_bench(ckpt)
    assert res.variant((2, 3)).layers == 4 and res.raw["checkpoint"] == str(ckpt)
    with pytest.raises(BenchError, match="no pruning plan"):
        bench_checkpoint(llama_dir)


@pytest.mark.slow
def test_bench_cli(tmp_path, llama_dir) -> None:
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "lmeval_layerprune.cli", "bench", str(llama_dir), "--drop", "last:2", "0-2"]
    cmd += ["--batch-sizes", "1,2", "--prompt-len", "6", "--new-tokens", "2", "--rounds", "1", "--threads", "1"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parent" in r.stdout and "last:2" in r.stdout and "batch 2:" in r.stdout
    assert [v.name for v in load_bench(out).variants] == ["parent", "last:2", "0-2"]
    vllm = subprocess.run([*cmd[:6], "--backend", "vllm"], capture_output=True, text=True, cwd=REPO, timeout=240)
    if vllm.returncode == 0 and "skipped" in vllm.stderr:
        assert "--backend vllm skipped" in vllm.stderr
    bad = subprocess.run([*cmd[:5], "--drop", "12"], capture_output=True, text=True, cwd=REPO, timeout=240)
    assert bad.returncode == 2 and "invalid drop spec '12'" in bad.stderr


def test_summary_line() -> None:
    record = bench_model(tiny_model("llama"), [("last:3", (3, 4, 5))], WORKLOAD, model_name="tiny", progress=False)
    line = bench_from_dict(record).summary()
    assert line.startswith("last:3 (3 of 6 layers removed): ") and "(ideal 2.00x)" in line and "float32" in line


def test_bench_flags_keep_their_names_and_defaults() -> None:
    """The flags generated from BenchSettings/BenchWorkload: every old name (both spellings) and default."""
    from lmeval_layerprune.cli import build_parser
    from lmeval_layerprune.cli.bench import settings_of

    parser = build_parser("bench")

    def parse(*argv: str) -> BenchSettings:
        return settings_of(parser.parse_args(["bench", *argv]))

    plain = parse("m", "--drop", "last:2", "1+3")
    assert plain.model == "m" and plain.drops == ("last:2", "1+3")
    w = plain.workload
    assert (w.batch_sizes, w.prompt_len, w.new_tokens, w.rounds, w.warmup, w.seed) == ((1, 8), 128, 32, 5, 1, 0)
    assert (plain.backend, plain.dtype) == ("hf", "float32")
    assert (plain.device, plain.threads, plain.calib, plain.out) == (None,) * 4
    for dash in (True, False):
        flags = ["--batch-sizes", "1,2", "--prompt-len", "6", "--new-tokens", "2", "--rounds", "1", "--warmup", "0"]
        flags = flags if dash else ["--" + f[2:].replace("-", "_") if f.startswith("--") else f for f in flags]
        rest = "--backend vllm --dtype bfloat16 --device cpu --threads 1 --calib c.txt --out o".split()
        given = parse("m", "--drop", "7", *flags, *rest)
        assert given == BenchSettings(
            "m", ("7",), BenchWorkload((1, 2), 6, 2, 1, 0), "vllm", "bfloat16", "cpu", 1, "c.txt", "o"
        )
    with pytest.raises(SystemExit):
        parse("m")  # --drop is required
    with pytest.raises(SystemExit):
        parse("m", "--drop", "7", "--backend", "tpu")
    with pytest.raises(BenchError, match=r"batch sizes must be positive integers, got \[0, 2\]"):
        parse("m", "--drop", "7", "--batch-sizes", "0,2")
    with pytest.raises(BenchError, match="rounds must be at least 1"):
        BenchWorkload(rounds=0)
