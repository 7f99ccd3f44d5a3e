"""``lmeval-prune bench --backend vllm``: throughput with vLLM (continuous batching), GPU only.

vLLM cannot swap layers inside a running engine, so each variant is a materialized checkpoint
(:func:`lmeval_layerprune.checkpoint.cache.cached_checkpoint`) served in turn: variants do not share
weights here and rounds are not interleaved across variants (each engine runs its rounds, then is torn
down). vLLM is an optional dependency, imported only when this backend runs.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig

from lmeval_layerprune.checkpoint.cache import cached_checkpoint
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.layout import PLAN_ATTR
from lmeval_layerprune.core.spec import DropSpec
from lmeval_layerprune.errors import BackendUnavailable
from lmeval_layerprune.speed.bench_result import SCHEMA, SCHEMA_VERSION, BenchWorkload, gains, stat


def vllm_unavailable_reason() -> str | None:
    """Why ``--backend vllm`` cannot run here (``None`` when it can)."""
    if find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'lmeval-layerprune[vllm]')"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (vLLM needs one)"
    return None


def _entries(path: str, drops: Sequence[str], dtype: str) -> list[tuple[str, str | None, tuple[int, ...], str]]:
    """(name, spec text, parent indices, checkpoint) per variant, the parent first; pruned ones materialized."""
    entries: list[tuple[str, str | None, tuple[int, ...], str]] = [("parent", None, (), path)]
    for text in drops:
        spec = DropSpec.parse(text)
        ckpt = cached_checkpoint(path, spec, dtype=dtype)
        plan = json.loads((Path(ckpt) / "config.json").read_text()).get(PLAN_ATTR, {})
        entries.append((spec.text, spec.text, tuple(plan.get("drop", ())), str(ckpt)))
    return entries


def _serve(ckpt: str, workload: BenchWorkload, dtype: str) -> dict[str, Any]:
    """One engine on ``ckpt``: per batch size, a warm-up, then ``rounds`` timed generations and first tokens."""
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]

    llm = LLM(model=ckpt, dtype=dtype, enforce_eager=False, seed=0)
    params = SamplingParams(
        temperature=0.0, max_tokens=workload.new_tokens, min_tokens=workload.new_tokens, ignore_eos=True
    )
    rng = torch.Generator().manual_seed(0)
    vocab = llm.get_tokenizer().vocab_size
    prompt_len = workload.prompt_len
    batches = {}
    for b in workload.batch_sizes:
        prompts = [{"prompt_token_ids": torch.randint(10, vocab, (prompt_len,), generator=rng).tolist()}] * b
        llm.generate(prompts, params, use_tqdm=False)  # warm-up
        tps, ttft = [], []
        for _ in range(workload.rounds):
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            dt = time.perf_counter() - t0
            tps.append(sum(len(o.outputs[0].token_ids) for o in outs) / dt)
            one = SamplingParams(temperature=0.0, max_tokens=1)
            t0 = time.perf_counter()
            llm.generate(prompts, one, use_tqdm=False)
            ttft.append(time.perf_counter() - t0)
        batches[str(b)] = {
            "decode_tps": stat(tps),
            "prefill_tps": stat([b * prompt_len / t for t in ttft]),
            "ttft_s": stat(ttft),
            "kv_cache_bytes": None,
            "peak_memory_bytes": None,
            "measured_peak_bytes": None,
        }
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return batches


def run_bench_vllm(
    model: str, drops: Sequence[str], workload: BenchWorkload, dtype: str = "bfloat16"
) -> dict[str, Any]:
    """The bench record of ``model`` and each drop spec, served by vLLM one after another (the module docstring).

    Raises :class:`~lmeval_layerprune.errors.BackendUnavailable` (saying why) where vLLM cannot run.
    ``workload.warmup`` and ``workload.seed`` do not apply: one warm-up generation, seed 0.
    """
    reason = vllm_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"--backend vllm skipped: {reason}; use --backend hf")
    path = str(resolve_pretrained(model))
    n = arch_num_layers(AutoConfig.from_pretrained(path))
    records = []
    for name, spec, drop, ckpt in _entries(path, drops, dtype):
        k = len(drop)
        records.append(
            {
                "name": name,
                "spec": spec,
                "drop": list(drop),
                "layers": n - k,
                "removed": k,
                "ideal": n / (n - k),
                "params": {"total": 0, "no_embeddings": 0},
                "weights_bytes": 0,
                "kv_bytes_per_token": 0,
                "batches": _serve(ckpt, workload, dtype),
            }
        )
    for rec in records:
        rec["gains"] = gains(rec, records[0])
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": base_model_name(model) or model,
        "num_layers": n,
        "backend": "vllm",
        "device": f"cuda ({torch.cuda.get_device_name(torch.device('cuda'))})",
        "dtype": dtype,
        "threads": None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "settings": {**workload.to_record(), "warmup": 1, "seed": 0},
        "variants": records,
    }
