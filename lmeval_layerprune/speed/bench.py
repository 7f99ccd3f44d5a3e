"""What pruning buys: speed and memory of pruned variants measured beside their parent.

One model is loaded; every variant runs on it with its layers swapped out in place
(:func:`lmeval_layerprune.core.slicing.layer_subset`), so five specs cost one load. Rounds are
interleaved (each round measures every variant at every batch size, in a rotating order) after
warm-up rounds, so contention hits all variants alike; figures are medians with min/max.

Per variant and batch size: prefill tokens/s (one forward over ``prompt_len`` tokens per sequence),
time to first token (that forward plus picking the token), decode tokens/s (``new_tokens`` greedy
steps on the KV cache), and memory: weights plus the KV cache actually held at
``prompt_len + new_tokens`` tokens (and, on CUDA, the measured peak allocation). Per variant: KV-cache
bytes per token (measured from the cache tensors), parameter counts (total, and without the
embedding and output head). Every figure is also a *gain* against the parent (speed: variant/parent;
time and sizes: parent/variant) beside the ideal ``L/(L-k)`` for removing ``k`` of ``L`` layers.

:func:`run_bench` takes a :class:`BenchSettings` (the ``lmeval-prune bench`` flags are generated from it);
``backend="vllm"`` hands over to :mod:`lmeval_layerprune.speed.bench_vllm`. The record's schema and
:func:`~lmeval_layerprune.speed.bench_result.load_bench` are in :mod:`lmeval_layerprune.speed.bench_result`,
writing and printing it in :mod:`lmeval_layerprune.speed.bench_output`.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import platform
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmeval_layerprune.core.arch import arch_for
from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained
from lmeval_layerprune.core.layout import LEGACY_PLAN_FILES, PLAN_ATTR, PLAN_FILE
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.errors import BenchError
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop
from lmeval_layerprune.speed.bench_output import bench_folder, write_bench
from lmeval_layerprune.speed.bench_result import (
    QUICK_WORKLOAD,
    SCHEMA,
    SCHEMA_VERSION,
    BenchWorkload,
    gains,
    stat,
)
from lmeval_layerprune.speed.bench_vllm import run_bench_vllm

#: ``--backend``: transformers in place (every variant on one loaded model), or vLLM (GPU throughput)
BACKENDS = ("hf", "vllm")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class BenchSettings:
    """What ``lmeval-prune bench`` measures, and where.

    ``model``: checkpoint directory, Hub id or ``"embedded"``; ``drops``: drop specs, one variant each
    (the parent is always measured); ``workload``: what every variant runs; ``backend``: one of
    :data:`BACKENDS`; ``threads``: torch CPU threads (default: torch's); ``calib``: calibration file for
    specs that score hidden states; ``out``: folder for the JSON and the PNG.
    """

    model: str
    drops: tuple[str, ...] = ()
    workload: BenchWorkload = field(default_factory=BenchWorkload)
    backend: str = "hf"
    dtype: str = "float32"
    device: str | None = None
    threads: int | None = None
    calib: str | None = None
    out: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.drops = tuple(self.drops)
        if self.backend not in BACKENDS:
            raise BenchError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")


# --------------------------------------------------------------------- measuring


def device_text(device: str | torch.device) -> str:
    """``cuda:0 (NVIDIA H100 ...)`` or ``cpu (x86_64)``: where the figures were measured."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters (each tensor once, so tied embeddings count once): total, and without the input
    embedding and the output head."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p.numel())
    total = sum(seen.values())
    emb_ids = set()
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is not None:
            emb_ids.update(id(p) for p in mod.parameters())
    return {"total": total, "no_embeddings": total - sum(seen[i] for i in emb_ids if i in seen)}


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameter and buffer storage (each tensor once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen.setdefault(id(t), t.numel() * t.element_size())
    return sum(seen.values())


def cache_bytes(cache: Any) -> int:
    """Bytes held by a transformers KV cache's key and value tensors."""
    total = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total
    for kv in cache:  # legacy tuple caches
        for t in kv:
            total += t.numel() * t.element_size()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prompt(config: Any, batch: int, length: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    vocab = int(config.vocab_size)
    low = min(10, vocab - 1)  # skip the special tokens that usually sit at the start of the vocabulary
    return torch.randint(low, vocab, (batch, length), generator=g).to(device)


@torch.no_grad()
def measure_once(model: torch.nn.Module, batch: int, prompt_len: int, new_tokens: int, seed: int = 0) -> dict[str, Any]:
    """One prefill + ``new_tokens`` greedy decode steps; seconds, token rates, cache size."""
    device = next(model.parameters()).device
    ids = _prompt(model.config, batch, prompt_len, seed, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    nxt = out.logits[:, -1:].argmax(-1)
    _sync(device)
    t1 = time.perf_counter()
    cache = _cache_of(out)
    kv_prompt = cache_bytes(cache)
    key = _cache_kwarg(model)
    for _ in range(new_tokens):
        out = model(input_ids=nxt, use_cache=True, **{key: cache})
        cache = _cache_of(out)
        nxt = out.logits[:, -1:].argmax(-1)
    _sync(device)
    t2 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "ttft_s": t1 - t0,
        "prefill_tps": batch * prompt_len / (t1 - t0),
        "decode_tps": batch * new_tokens / (t2 - t1) if new_tokens else 0.0,
        "kv_cache_bytes": cache_bytes(cache),
        "kv_bytes_per_token": kv_prompt // (batch * prompt_len),
        "measured_peak_bytes": peak,
    }


def _cache_kwarg(model: torch.nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x renamed it


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _variant_facts(model: torch.nn.Module) -> dict[str, Any]:
    return {"params": param_counts(model), "weights_bytes": weights_bytes(model)}


def resolve_variants(
    model: torch.nn.Module, tokenizer: Any, drops: Sequence[Any], calib: str | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """(spec text, parent indices) per spec, resolved exactly as ``drop=`` does (same errors)."""
    parent = PruningPlan.from_config(model.config)
    out = []
    for text in drops:
        spec = parse_spec(text)
        if spec.is_noop:
            raise BenchError(f"drop spec {text!r} removes nothing; the parent is always measured")
        plan = resolve_drop(model, spec, model=model, tokenizer=tokenizer, calibration=Calibration.of(calib))
        out.append((spec.text, plan.on_parent(parent).drop))
    return out


Variant = tuple[str, str | None, tuple[int, ...]]  # (name, spec text or None for the parent, parent indices)


def _interleaved(
    model: torch.nn.Module, variants: Sequence[Variant], workload: BenchWorkload, progress: bool
) -> list[dict[int, list[dict[str, Any]]]]:
    """Per variant and batch size, the :func:`measure_once` of every measured round (after the warm-up);
    each round measures every variant at every batch size, in a rotating order."""
    w = workload
    samples: list[dict[int, list[dict[str, Any]]]] = [{b: [] for b in w.batch_sizes} for _ in variants]
    total = (w.warmup + w.rounds) * len(w.batch_sizes) * len(variants)
    with tqdm(total=total, desc="bench", unit="run", disable=not progress) as bar:
        for r in range(w.warmup + w.rounds):
            for b in w.batch_sizes:
                k = r % len(variants)
                order = list(range(len(variants)))
                for j in order[k:] + order[:k]:  # rotating order: no variant always runs first
                    drop = variants[j][2]
                    with layer_subset(model, drop) if drop else nullcontext(model):
                        m = measure_once(model, b, w.prompt_len, w.new_tokens, seed=w.seed + r)
                    if r >= w.warmup:
                        samples[j][b].append(m)
                    bar.update(1)
    return samples


def _variant_record(
    variant: Variant, facts: dict[str, Any], samples: dict[int, list[dict[str, Any]]], n: int
) -> dict[str, Any]:
    """One variant of the record (without its gains): the figures of every batch size."""
    name, spec, drop = variant
    batches = {}
    kv_per_token = None
    for b, ms in samples.items():
        kv = ms[-1]["kv_cache_bytes"]
        kv_per_token = ms[-1]["kv_bytes_per_token"]
        peaks = [m["measured_peak_bytes"] for m in ms if m["measured_peak_bytes"] is not None]
        batches[str(b)] = {
            "decode_tps": stat([m["decode_tps"] for m in ms]),
            "prefill_tps": stat([m["prefill_tps"] for m in ms]),
            "ttft_s": stat([m["ttft_s"] for m in ms]),
            "kv_cache_bytes": kv,
            "peak_memory_bytes": facts["weights_bytes"] + kv,
            "measured_peak_bytes": max(peaks) if peaks else None,
        }
    k = len(drop)
    return {
        "name": name,
        "spec": spec,
        "drop": list(drop),
        "layers": n - k,
        "removed": k,
        "ideal": n / (n - k),
        "params": facts["params"],
        "weights_bytes": facts["weights_bytes"],
        "kv_bytes_per_token": kv_per_token,
        "batches": batches,
    }


def bench_model(
    model: torch.nn.Module,
    variants: Sequence[tuple[str, Sequence[int]]],
    workload: BenchWorkload | None = None,
    *,
    model_name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``model`` and each ``(name, drop)`` variant of it (layers swapped in place) side by side,
    running ``workload`` (default: :class:`~lmeval_layerprune.speed.bench_result.BenchWorkload`'s).

    Returns the bench record (the schema in :mod:`lmeval_layerprune.speed.bench_result`).
    """
    workload = workload or BenchWorkload()
    torch.manual_seed(workload.seed)
    model.eval()
    device = next(model.parameters()).device
    n = arch_num_layers(model.config)
    all_variants: list[Variant] = [("parent", None, ())]
    all_variants += [(name, name, tuple(sorted(set(drop)))) for name, drop in variants]
    facts: list[dict[str, Any]] = []
    for _, _, drop in all_variants:
        with layer_subset(model, drop) if drop else nullcontext(model):
            facts.append(_variant_facts(model))
    samples = _interleaved(model, all_variants, workload, progress)
    records = [_variant_record(v, facts[j], samples[j], n) for j, v in enumerate(all_variants)]
    for rec in records:
        rec["gains"] = gains(rec, records[0])
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "num_layers": n,
        "backend": "hf",
        "device": device_text(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "settings": workload.to_record(),
        "variants": records,
    }


# --------------------------------------------------------------------- entry points


def _load(model: str, dtype: str, device: str | None) -> tuple[torch.nn.Module, Any]:
    path = str(resolve_pretrained(model))
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in DTYPES:
        raise BenchError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(dev).eval()
    arch_for(lm.config)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tok = None
    return lm, tok


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """``lmeval-prune bench``: load ``settings.model`` once, measure it and each drop spec; with
    ``settings.out``, write the JSON and the PNG there (:func:`~lmeval_layerprune.speed.bench_output.write_bench`).
    """
    s = settings
    if s.out is not None:
        bench_folder(s.out)  # a file in the way is refused before anything is loaded or measured
    if s.backend == "vllm":
        record = run_bench_vllm(s.model, s.drops, s.workload, dtype=s.dtype)
    else:
        # check every spec before loading weights: a bad spec fails fast, with drop='s error
        config = AutoConfig.from_pretrained(str(resolve_pretrained(s.model)))
        for text in s.drops:
            if not needs_model(text):
                resolve_drop(config, text)
        if s.threads:
            torch.set_num_threads(int(s.threads))
        lm, tok = _load(s.model, s.dtype, s.device)
        variants = resolve_variants(lm, tok, s.drops, calib=s.calib)
        record = bench_model(
            lm, variants, s.workload, model_name=base_model_name(s.model) or s.model, progress=s.progress
        )
    if s.out is not None:
        write_bench(record, s.out)
    return record


def bench_checkpoint(
    folder: str | Path,
    parent: str | None = None,
    *,
    workload: BenchWorkload = QUICK_WORKLOAD,
    dtype: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """A short bench of a pruned checkpoint against its parent, written as ``folder/BENCH_FILE``.

    For ``slice --bench`` / ``heal --bench``. The checkpoint's plan (``config.json``'s
    ``layer_pruning`` record, or the plan file) names the parent (``parent`` overrides it) and the
    removed layers. The parent is loaded once and the pruned variant runs as the parent with those
    layers removed in place: the same shapes as the checkpoint, so the same speed and memory (a
    healed checkpoint has other weights but identical cost).
    """
    folder = Path(folder)
    bench_folder(folder)
    plan = _checkpoint_plan(folder)
    parent = parent or plan.get("base_model")
    if not parent:
        raise BenchError(f"{folder} does not name its parent model; pass parent=... (the unpruned model)")
    drop = tuple(int(i) for i in plan["drop"])
    lm, _ = _load(str(parent), dtype or _checkpoint_dtype(folder), device)
    n = arch_num_layers(lm.config)
    if int(plan.get("num_layers", n)) != n:
        raise BenchError(f"{folder} was pruned from a {plan['num_layers']}-layer model, but {parent} has {n} layers")
    name = base_model_name(parent) or str(parent)
    record = bench_model(
        lm, [(plan.get("spec") or format_indices(drop), drop)], workload, model_name=name, progress=progress
    )
    record["checkpoint"] = str(folder)
    return write_bench(record, folder)


def _checkpoint_plan(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.json"
    if cfg.is_file():
        plan = json.loads(cfg.read_text()).get(PLAN_ATTR)
        if isinstance(plan, dict) and "drop" in plan:
            return plan
    for name in (PLAN_FILE, *LEGACY_PLAN_FILES):
        f = folder / name
        if f.is_file():
            plan = json.loads(f.read_text())
            if isinstance(plan, dict) and "drop" in plan:
                return plan
    raise BenchError(f"{folder} holds no pruning plan (config.json {PLAN_ATTR!r} or {PLAN_FILE})")


def _checkpoint_dtype(folder: Path) -> str:
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return name if name in DTYPES else "float32"
