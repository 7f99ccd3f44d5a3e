"""The bench record: its schema, the workload every variant runs, and reading it back.

``lmeval-prune bench`` (:mod:`lmeval_layerprune.speed.bench`) writes the record as :data:`BENCH_FILE`
(:mod:`lmeval_layerprune.speed.bench_output`); :func:`load_bench` reads it back for the model card and
the study report (this module imports neither torch nor transformers).

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

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import BENCH_FILE
from lmeval_layerprune.errors import BenchError

SCHEMA = "lmeval-layerprune/bench"
SCHEMA_VERSION = 1
SPEED_METRICS = ("decode_tps", "prefill_tps")  # higher is better
TIME_METRICS = ("ttft_s", "peak_memory_bytes")  # lower is better


@dataclass(frozen=True)
class BenchWorkload:
    """What every variant runs, recorded as the bench record's ``settings``: ``prompt_len`` prompt tokens per
    sequence, then ``new_tokens`` greedy decode steps, at every batch size; ``warmup`` rounds not reported,
    then ``rounds`` measured rounds (medians reported); ``seed`` of the random prompts."""

    batch_sizes: tuple[int, ...] = (1, 8)
    prompt_len: int = 128
    new_tokens: int = 32
    rounds: int = 5
    warmup: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = tuple(self.batch_sizes)
        if not sizes or any(int(b) < 1 for b in sizes):
            raise BenchError(f"batch sizes must be positive integers, got {list(sizes)}")
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in sizes))
        if self.rounds < 1:
            raise BenchError(f"rounds must be at least 1, got {self.rounds}")
        if self.prompt_len < 1 or self.new_tokens < 0:
            raise BenchError(
                f"prompt_len must be >= 1 and new_tokens >= 0, got {self.prompt_len} and {self.new_tokens}"
            )
        if self.warmup < 0:
            raise BenchError(f"warmup must be >= 0, got {self.warmup}")

    def to_record(self) -> dict[str, Any]:
        """The record's ``settings``."""
        return {
            "batch_sizes": list(self.batch_sizes),
            "prompt_len": self.prompt_len,
            "new_tokens": self.new_tokens,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "seed": self.seed,
            "greedy": True,
        }


#: a short bench: ``slice --bench``, ``heal --bench`` and the demo
QUICK_WORKLOAD = BenchWorkload(batch_sizes=(1,), prompt_len=64, new_tokens=16, rounds=3)


# --------------------------------------------------------------------- building blocks


def stat(values: Sequence[float]) -> dict[str, Any]:
    """A STAT of the schema: median, min, max and every value."""
    s = sorted(values)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"median": median, "min": s[0], "max": s[-1], "values": list(values)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def gains(rec: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """The ``gains`` of variant ``rec`` against ``parent``: speed variant/parent, time and sizes parent/variant."""
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


def gain_text(x: float | None) -> str:
    """A gain as printed: ``1.27x`` (``-`` when unknown)."""
    return f"{x:.2f}x" if x is not None else "-"


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
            f"{gain_text(v.gain('decode_tps', b))} decode tokens/s at batch {b} (ideal {v.ideal:.2f}x), "
            f"{gain_text(v.gain('prefill_tps', b))} prefill, {gain_text(v.gain('peak_memory_bytes', b))} less memory; "
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
