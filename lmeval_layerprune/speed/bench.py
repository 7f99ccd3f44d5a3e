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

The result file (:data:`BENCH_FILE`, schema below) is read back with :func:`load_bench`; the model card
and the study report use it.

Schema (``"schema": "lmeval-layerprune/bench"``, ``"version": 1``)::

    {
      "schema": "lmeval-layerprune/bench", "version": 1, "created": ISO-8601 time,
      "model": parent name, "num_layers": L, "backend": "hf" | "vllm",
      "device": text, "dtype": "float32", "threads": int, "torch": ver, "transformers": ver,
      "settings": {"batch_sizes": [1, 8], "prompt_len": int, "new_tokens": int, "rounds": int,
                   "warmup": int, "seed": int, "greedy": true},
      "variants": [                                    # the parent first
        {"name": "parent" | spec text, "spec": spec text | null, "drop": [parent indices],
         "layers": L-k, "removed": k, "ideal": L/(L-k),
         "params": {"total": int, "no_embeddings": int}, "weights_bytes": int, "kv_bytes_per_token": int,
         "batches": {"1": {"decode_tps": STAT, "prefill_tps": STAT, "ttft_s": STAT,
                           "kv_cache_bytes": int, "peak_memory_bytes": int,
                           "measured_peak_bytes": int | null}, ...},
         "gains": {"params": x, "params_no_embeddings": x, "kv_bytes_per_token": x, "weights_bytes": x,
                   "batches": {"1": {"decode_tps": x, "prefill_tps": x, "ttft_s": x, "peak_memory_bytes": x}}}}
      ]
    }
    STAT = {"median": float, "min": float, "max": float, "values": [float per round]}
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from lmeval_layerprune.core.arch import num_layers as arch_num_layers
from lmeval_layerprune.core.layout import BENCH_FILE, BENCH_PLOT
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.slicing import layer_subset
from lmeval_layerprune.core.spec import DropSpec, format_indices
from lmeval_layerprune.errors import BackendUnavailable, BenchError
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop

logger = logging.getLogger(__name__)

SCHEMA = "lmeval-layerprune/bench"
SCHEMA_VERSION = 1
SPEED_METRICS = ("decode_tps", "prefill_tps")  # higher is better
TIME_METRICS = ("ttft_s", "peak_memory_bytes")  # lower is better


# --------------------------------------------------------------------- reading


@dataclass
class BenchVariant:
    """One measured variant (the parent, or the parent without ``drop``)."""

    name: str
    spec: str | None
    drop: tuple[int, ...]
    layers: int
    removed: int
    ideal: float
    params_total: int
    params_no_embeddings: int
    weights_bytes: int
    kv_bytes_per_token: int
    batches: dict[int, dict[str, Any]]
    gains: dict[str, Any]

    def gain(self, metric: str = "decode_tps", batch: int | None = None) -> float | None:
        """Gain against the parent for ``metric`` at ``batch`` (default: the smallest measured)."""
        if metric in ("params", "params_no_embeddings", "kv_bytes_per_token", "weights_bytes"):
            return self.gains.get(metric)
        per_batch = self.gains.get("batches", {})
        if not per_batch:
            return None
        key = str(batch if batch is not None else min(int(b) for b in per_batch))
        return per_batch.get(key, {}).get(metric)

    def median(self, metric: str, batch: int | None = None) -> float | None:
        """The median of ``metric`` at ``batch`` (default: the smallest measured)."""
        if not self.batches:
            return None
        b = batch if batch is not None else min(self.batches)
        value = self.batches.get(b, {}).get(metric)
        return value.get("median") if isinstance(value, dict) else value


@dataclass
class BenchResult:
    """A bench file, typed (``raw`` keeps the whole JSON)."""

    path: Path | None
    model: str | None
    num_layers: int
    backend: str
    device: str
    dtype: str
    threads: int | None
    settings: dict[str, Any]
    variants: list[BenchVariant]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def parent(self) -> BenchVariant:
        return next(v for v in self.variants if not v.drop)

    @property
    def pruned(self) -> list[BenchVariant]:
        return [v for v in self.variants if v.drop]

    def variant(self, drop_or_spec: Sequence[int] | str) -> BenchVariant | None:
        """The variant that removed exactly these parent layers (or was given this spec text)."""
        if isinstance(drop_or_spec, str):
            return next((v for v in self.variants if v.spec == drop_or_spec or v.name == drop_or_spec), None)
        want = tuple(sorted(set(drop_or_spec)))
        return next((v for v in self.variants if v.drop == want), None)

    def summary(self, variant: BenchVariant | None = None, batch: int | None = None) -> str:
        """One line for a card or a job's output, e.g. ``last:25% (8 of 30 layers removed): 1.27x decode
        tokens/s (ideal 1.36x), 1.41x prefill, 1.30x less memory; cpu ..., float32, 1 thread(s)``."""
        v = variant or (self.pruned[0] if self.pruned else self.parent)
        b = batch if batch is not None else min(v.batches) if v.batches else None
        threads = f", {self.threads} thread(s)" if self.threads else ""
        return (
            f"{v.name} ({v.removed} of {self.num_layers} layers removed): "
            f"{_g(v.gain('decode_tps', b))} decode tokens/s at batch {b} (ideal {v.ideal:.2f}x), "
            f"{_g(v.gain('prefill_tps', b))} prefill, {_g(v.gain('peak_memory_bytes', b))} less memory; "
            f"{self.backend} on {self.device}, {self.dtype}{threads}"
        )

    def conditions(self) -> str:
        """One line: where the figures were measured."""
        s = self.settings
        threads = f", {self.threads} thread(s)" if self.threads else ""
        return (
            f"{self.backend} on {self.device}, {self.dtype}{threads}; prompt {s.get('prompt_len')} + "
            f"{s.get('new_tokens')} new tokens, greedy; medians of {s.get('rounds')} interleaved rounds"
        )


def load_bench(path_or_folder: str | Path) -> BenchResult:
    """Read a bench result: a JSON file, or a folder holding :data:`BENCH_FILE`."""
    p = Path(path_or_folder).expanduser()
    if p.is_dir():
        p = p / BENCH_FILE
    if not p.is_file():
        raise BenchError(f"no bench result at {str(p)!r} (expected {BENCH_FILE} written by `lmeval-prune bench`)")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"bench file {str(p)!r} is not valid JSON: {e}") from None
    result = bench_from_dict(raw, source=str(p))
    result.path = p
    return result


def bench_from_dict(raw: dict[str, Any], source: str = "bench record") -> BenchResult:
    """A :class:`BenchResult` from the JSON dict (checks the schema)."""
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BenchError(f'{source} is not a bench result (no "schema": {SCHEMA!r})')
    version = raw.get("version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BenchError(
            f"{source} has bench schema version {version!r}; this lmeval-layerprune reads up to {SCHEMA_VERSION}"
        )
    try:
        variants = [
            BenchVariant(
                name=v["name"],
                spec=v.get("spec"),
                drop=tuple(v["drop"]),
                layers=int(v["layers"]),
                removed=int(v["removed"]),
                ideal=float(v["ideal"]),
                params_total=int(v["params"]["total"]),
                params_no_embeddings=int(v["params"]["no_embeddings"]),
                weights_bytes=int(v["weights_bytes"]),
                kv_bytes_per_token=int(v["kv_bytes_per_token"]),
                batches={int(b): m for b, m in v.get("batches", {}).items()},
                gains=v.get("gains", {}),
            )
            for v in raw["variants"]
        ]
        if not any(not v.drop for v in variants):
            raise BenchError(f"{source} has no parent variant (one with an empty drop)")
        return BenchResult(
            path=None,
            model=raw.get("model"),
            num_layers=int(raw["num_layers"]),
            backend=raw.get("backend", "hf"),
            device=raw.get("device", "unknown"),
            dtype=raw.get("dtype", "unknown"),
            threads=raw.get("threads"),
            settings=raw.get("settings", {}),
            variants=variants,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, BenchError):
            raise
        raise BenchError(f"{source} is missing or has a bad field: {e!r}") from None


# --------------------------------------------------------------------- measuring


def _stat(values: Sequence[float]) -> dict[str, Any]:
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"median": median, "min": s[0], "max": s[-1], "values": list(values)}


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
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x renamed it


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _variant_facts(model: torch.nn.Module) -> dict[str, Any]:
    return {"params": param_counts(model), "weights_bytes": weights_bytes(model)}


def _device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


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


def bench_model(
    model: torch.nn.Module,
    variants: Sequence[tuple[str, Sequence[int]]],
    *,
    model_name: str | None = None,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_len: int = 128,
    new_tokens: int = 32,
    rounds: int = 5,
    warmup: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``model`` and each ``(name, drop)`` variant of it (layers swapped in place) side by side.

    Returns the bench record (the schema in the module docstring).
    """
    from tqdm.auto import tqdm

    if rounds < 1:
        raise BenchError(f"rounds must be at least 1, got {rounds}")
    if prompt_len < 1 or new_tokens < 0:
        raise BenchError(f"prompt_len must be >= 1 and new_tokens >= 0, got {prompt_len} and {new_tokens}")
    bad = [b for b in batch_sizes if int(b) < 1]
    if bad or not batch_sizes:
        raise BenchError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    n = arch_num_layers(model.config)
    all_variants: list[tuple[str, str | None, tuple[int, ...]]] = [("parent", None, ())]
    all_variants += [(name, name, tuple(sorted(set(drop)))) for name, drop in variants]
    facts: list[dict[str, Any]] = []
    for _, _, drop in all_variants:
        with layer_subset(model, drop) if drop else nullcontext(model):
            facts.append(_variant_facts(model))
    samples: list[dict[int, list[dict[str, Any]]]] = [{int(b): [] for b in batch_sizes} for _ in all_variants]
    total = (warmup + rounds) * len(batch_sizes) * len(all_variants)
    with tqdm(total=total, desc="bench", unit="run", disable=not progress) as bar:
        for r in range(warmup + rounds):
            for b in batch_sizes:
                k = r % len(all_variants)
                order = list(range(len(all_variants)))
                for j in order[k:] + order[:k]:  # rotating order: no variant always runs first
                    drop = all_variants[j][2]
                    with layer_subset(model, drop) if drop else nullcontext(model):
                        m = measure_once(model, int(b), prompt_len, new_tokens, seed=seed + r)
                    if r >= warmup:
                        samples[j][int(b)].append(m)
                    bar.update(1)
    records = []
    for j, (name, spec, drop) in enumerate(all_variants):
        batches = {}
        kv_per_token = None
        for b, ms in samples[j].items():
            kv = ms[-1]["kv_cache_bytes"]
            kv_per_token = ms[-1]["kv_bytes_per_token"]
            peaks = [m["measured_peak_bytes"] for m in ms if m["measured_peak_bytes"] is not None]
            batches[str(b)] = {
                "decode_tps": _stat([m["decode_tps"] for m in ms]),
                "prefill_tps": _stat([m["prefill_tps"] for m in ms]),
                "ttft_s": _stat([m["ttft_s"] for m in ms]),
                "kv_cache_bytes": kv,
                "peak_memory_bytes": facts[j]["weights_bytes"] + kv,
                "measured_peak_bytes": max(peaks) if peaks else None,
            }
        k = len(drop)
        records.append(
            {
                "name": name,
                "spec": spec,
                "drop": list(drop),
                "layers": n - k,
                "removed": k,
                "ideal": n / (n - k),
                "params": facts[j]["params"],
                "weights_bytes": facts[j]["weights_bytes"],
                "kv_bytes_per_token": kv_per_token,
                "batches": batches,
            }
        )
    parent = records[0]
    for rec in records:
        rec["gains"] = _gains(rec, parent)
    import transformers

    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "num_layers": n,
        "backend": "hf",
        "device": _device_text(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "settings": {
            "batch_sizes": [int(b) for b in batch_sizes],
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
            "rounds": rounds,
            "warmup": warmup,
            "seed": seed,
            "greedy": True,
        },
        "variants": records,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _gains(rec: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    gains: dict[str, Any] = {
        "params": _ratio(parent["params"]["total"], rec["params"]["total"]),
        "params_no_embeddings": _ratio(parent["params"]["no_embeddings"], rec["params"]["no_embeddings"]),
        "kv_bytes_per_token": _ratio(parent["kv_bytes_per_token"], rec["kv_bytes_per_token"]),
        "weights_bytes": _ratio(parent["weights_bytes"], rec["weights_bytes"]),
        "batches": {},
    }
    for b, m in rec["batches"].items():
        p = parent["batches"][b]
        gains["batches"][b] = {
            "decode_tps": _ratio(m["decode_tps"]["median"], p["decode_tps"]["median"]),
            "prefill_tps": _ratio(m["prefill_tps"]["median"], p["prefill_tps"]["median"]),
            "ttft_s": _ratio(p["ttft_s"]["median"], m["ttft_s"]["median"]),
            "peak_memory_bytes": _ratio(p["peak_memory_bytes"], m["peak_memory_bytes"]),
        }
    return gains


# --------------------------------------------------------------------- entry points


def _load(model: str, dtype: str, device: str | None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmeval_layerprune.core.arch import arch_for
    from lmeval_layerprune.core.embedded import resolve_pretrained

    path = str(resolve_pretrained(model))
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise BenchError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(dev).eval()
    arch_for(lm.config)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tok = None
    return lm, tok


def run_bench(
    model: str,
    drops: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_len: int = 128,
    new_tokens: int = 32,
    rounds: int = 5,
    warmup: int = 1,
    backend: str = "hf",
    dtype: str = "float32",
    device: str | None = None,
    threads: int | None = None,
    calib: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``lmeval-prune bench``: load ``model`` once, measure it and each drop spec; write JSON + PNG to ``out``."""
    from lmeval_layerprune.core.embedded import base_model_name

    if backend == "vllm":
        return run_bench_vllm(
            model,
            drops,
            batch_sizes=batch_sizes,
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            rounds=rounds,
            dtype=dtype,
            out=out,
        )
    if backend != "hf":
        raise BenchError(f"backend {backend!r} is not one of hf, vllm")
    # check every spec before loading weights: a bad spec fails fast, with drop='s error
    from transformers import AutoConfig

    from lmeval_layerprune.core.embedded import resolve_pretrained

    config = AutoConfig.from_pretrained(str(resolve_pretrained(model)))
    for text in drops:
        if not needs_model(text):
            resolve_drop(config, text)
    if threads:
        torch.set_num_threads(int(threads))
    lm, tok = _load(model, dtype, device)
    variants = resolve_variants(lm, tok, drops, calib=calib)
    record = bench_model(
        lm,
        variants,
        model_name=base_model_name(model) or model,
        batch_sizes=batch_sizes,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        rounds=rounds,
        warmup=warmup,
        progress=progress,
    )
    if out is not None:
        write_bench(record, out)
    return record


def _is_bench_file(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("schema") == SCHEMA
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def write_bench(record: dict[str, Any], out: str | Path) -> Path:
    """Write ``record`` as ``out/BENCH_FILE`` and its plot as ``out/BENCH_PLOT``; returns the JSON path."""
    from lmeval_layerprune.core.guard import guard_output

    folder = Path(out)
    path = folder / BENCH_FILE
    if path.exists():  # replace only a bench result of ours (never a file of the same name written by hand)
        guard_output(path, overwrite=True, owned=lambda p: _is_bench_file(p), what="bench file")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    plot_bench(record, folder / BENCH_PLOT)
    return path


def bench_checkpoint(
    folder: str | Path,
    parent: str | None = None,
    *,
    batch_sizes: Sequence[int] = (1,),
    prompt_len: int = 64,
    new_tokens: int = 16,
    rounds: int = 3,
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
    from lmeval_layerprune.core.embedded import base_model_name

    folder = Path(folder)
    plan = _checkpoint_plan(folder)
    parent = parent or plan.get("base_model")
    if not parent:
        raise BenchError(f"{folder} does not name its parent model; pass parent=... (the unpruned model)")
    drop = tuple(int(i) for i in plan["drop"])
    lm, _ = _load(str(parent), dtype or _checkpoint_dtype(folder), device)
    n = arch_num_layers(lm.config)
    if int(plan.get("num_layers", n)) != n:
        raise BenchError(f"{folder} was pruned from a {plan['num_layers']}-layer model, but {parent} has {n} layers")
    record = bench_model(
        lm,
        [(plan.get("spec") or format_indices(drop), drop)],
        model_name=base_model_name(parent) or str(parent),
        batch_sizes=batch_sizes,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        rounds=rounds,
        warmup=1,
        progress=progress,
    )
    record["checkpoint"] = str(folder)
    return write_bench(record, folder)


def _checkpoint_plan(folder: Path) -> dict[str, Any]:
    from lmeval_layerprune.core.layout import PLAN_ATTR

    cfg = folder / "config.json"
    if cfg.is_file():
        plan = json.loads(cfg.read_text()).get(PLAN_ATTR)
        if isinstance(plan, dict) and "drop" in plan:
            return plan
    for name in ("layer_pruning.json", "layer_pruning_plan.json"):
        f = folder / name
        if f.is_file():
            plan = json.loads(f.read_text())
            if isinstance(plan, dict) and "drop" in plan:
                return plan
    raise BenchError(f"{folder} holds no pruning plan (config.json 'layer_pruning' or layer_pruning.json)")


def _checkpoint_dtype(folder: Path) -> str:
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return name if name in ("float32", "bfloat16", "float16") else "float32"


# --------------------------------------------------------------------- vLLM


def vllm_unavailable_reason() -> str | None:
    """Why ``--backend vllm`` cannot run here (``None`` when it can)."""
    if find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'lmeval-layerprune[vllm]')"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (vLLM needs one)"
    return None


def run_bench_vllm(
    model: str,
    drops: Sequence[str],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_len: int = 128,
    new_tokens: int = 32,
    rounds: int = 3,
    dtype: str = "bfloat16",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Throughput with vLLM (continuous batching): each variant is a materialized checkpoint served in turn.

    vLLM cannot swap layers inside a running engine, so variants do not share weights here and rounds
    are not interleaved across variants (each engine runs its rounds, then is torn down).
    """
    reason = vllm_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"--backend vllm skipped: {reason}; use --backend hf")
    import gc

    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]

    from lmeval_layerprune.checkpoint.cache import cached_checkpoint
    from lmeval_layerprune.core.embedded import base_model_name, resolve_pretrained

    path = str(resolve_pretrained(model))
    from transformers import AutoConfig

    n = arch_num_layers(AutoConfig.from_pretrained(path))
    entries: list[tuple[str, str | None, tuple[int, ...], str]] = [("parent", None, (), path)]
    for text in drops:
        spec = DropSpec.parse(text)
        ckpt = cached_checkpoint(path, spec, dtype=dtype)
        plan = json.loads((Path(ckpt) / "config.json").read_text()).get("layer_pruning", {})
        entries.append((spec.text, spec.text, tuple(plan.get("drop", ())), str(ckpt)))
    records = []
    for name, spec, drop, ckpt in entries:
        llm = LLM(model=ckpt, dtype=dtype, enforce_eager=False, seed=0)
        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
        rng = torch.Generator().manual_seed(0)
        vocab = llm.get_tokenizer().vocab_size
        batches = {}
        for b in batch_sizes:
            prompts = [{"prompt_token_ids": torch.randint(10, vocab, (prompt_len,), generator=rng).tolist()}] * b
            llm.generate(prompts, params, use_tqdm=False)  # warm-up
            tps, ttft = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                outs = llm.generate(prompts, params, use_tqdm=False)
                dt = time.perf_counter() - t0
                tps.append(sum(len(o.outputs[0].token_ids) for o in outs) / dt)
                one = SamplingParams(temperature=0.0, max_tokens=1)
                t0 = time.perf_counter()
                llm.generate(prompts, one, use_tqdm=False)
                ttft.append(time.perf_counter() - t0)
            batches[str(b)] = {
                "decode_tps": _stat(tps),
                "prefill_tps": _stat([b * prompt_len / t for t in ttft]),
                "ttft_s": _stat(ttft),
                "kv_cache_bytes": None,
                "peak_memory_bytes": None,
                "measured_peak_bytes": None,
            }
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
                "batches": batches,
            }
        )
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    for rec in records:
        rec["gains"] = _gains({**rec, "batches": rec["batches"]}, records[0])
    record = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": base_model_name(model) or model,
        "num_layers": n,
        "backend": "vllm",
        "device": _device_text(torch.device("cuda")),
        "dtype": dtype,
        "threads": None,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "settings": {
            "batch_sizes": list(batch_sizes),
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
            "rounds": rounds,
            "warmup": 1,
            "seed": 0,
            "greedy": True,
        },
        "variants": records,
    }
    if out is not None:
        write_bench(record, out)
    return record


# --------------------------------------------------------------------- output


def _h(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _g(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def format_bench(record: dict[str, Any]) -> str:
    """The table ``lmeval-prune bench`` prints: medians (min-max) and gains beside the ideal L/(L-k)."""
    res = bench_from_dict(record)
    lines = [f"{res.model}: {res.num_layers} layers; {res.conditions()}"]
    lines.append(f"{'variant':<14} {'layers':>6} {'ideal':>6} {'params':>16} {'no-emb params':>16} {'KV/token':>14}")
    for v in res.variants:
        g = v.gains
        lines.append(
            f"{v.name[:14]:<14} {v.layers:>6} {v.ideal:>5.2f}x {v.params_total / 1e6:>8.1f}M {_g(g.get('params')):>6} "
            f"{v.params_no_embeddings / 1e6:>8.1f}M {_g(g.get('params_no_embeddings')):>6} "
            f"{_h(v.kv_bytes_per_token):>8} {_g(g.get('kv_bytes_per_token')):>5}"
        )
    for b in res.settings.get("batch_sizes", []):
        lines.append(f"batch {b}:")
        lines.append(
            f"  {'variant':<14} {'decode tok/s':>22} {'prefill tok/s':>24} {'first token':>22} "
            f"{'memory (weights+KV)':>22} {'ideal':>6}"
        )
        for v in res.variants:
            m = v.batches[int(b)]
            d, p, t = m["decode_tps"], m["prefill_tps"], m["ttft_s"]
            gb = v.gains.get("batches", {}).get(str(b), {})
            lines.append(
                f"  {v.name[:14]:<14} {d['median']:>8.1f} ({d['min']:.0f}-{d['max']:.0f}) "
                f"{_g(gb.get('decode_tps')):>6} "
                f"{p['median']:>9.0f} ({p['min']:.0f}-{p['max']:.0f}) {_g(gb.get('prefill_tps')):>6} "
                f"{t['median'] * 1000:>7.1f} ms ({t['min'] * 1000:.0f}-{t['max'] * 1000:.0f}) "
                f"{_g(gb.get('ttft_s')):>6} {_h(m['peak_memory_bytes']):>12} {_g(gb.get('peak_memory_bytes')):>6} "
                f"{v.ideal:>5.2f}x"
            )
    lines.append("gains: speed variant/parent, time and sizes parent/variant; ideal = L/(L-k)")
    return "\n".join(lines)


def plot_bench(record: dict[str, Any], path: str | Path) -> None:
    """Speed-up (decode and prefill, per batch size) against layers removed, with the ideal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = bench_from_dict(record)
    n = res.num_layers
    variants = sorted(res.variants, key=lambda v: (v.removed, v.name))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ks = sorted({v.removed for v in variants})
    xs = [k for k in range(0, max(ks) + 1)]
    ax.plot(xs, [n / (n - k) for k in xs], "k--", lw=1, label="ideal L/(L-k)")
    markers = "o^sv"
    for i, b in enumerate(res.settings.get("batch_sizes", [])):
        for metric, fill in (("decode_tps", None), ("prefill_tps", "none")):
            pts = [(v.removed, v.gain(metric, b)) for v in variants]
            pts = [(k, g) for k, g in pts if g is not None]
            label = f"{'decode' if metric == 'decode_tps' else 'prefill'}, batch {b}"
            ys = [g for _, g in pts]
            ax.plot([k for k, _ in pts], ys, markers[i % 4], mfc=fill, ls="none", label=label, alpha=0.8)
    for v in variants:
        if v.drop:
            ax.annotate(v.name, (v.removed, v.gain("decode_tps") or 1), fontsize=6, alpha=0.7)
    ax.set_xlabel(f"layers removed (of {n})")
    ax.set_ylabel("speed-up vs parent")
    ax.set_title(f"{res.model}: {res.device}, {res.dtype}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
