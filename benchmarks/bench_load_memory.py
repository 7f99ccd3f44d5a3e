"""Peak memory and load time: loading a Llama with half its layers removed, two ways.

What is measured
----------------
A randomly initialised ~1.1B-parameter Llama checkpoint (TinyLlama shape, 22 decoder
layers) is created once and cached. Then each approach is run in a *fresh* Python
subprocess, so its peak resident set size (RSS) is isolated from everything else:

* ``pruned``: ``lmeval_layerprune.core.slicing.load_pruned_model(ckpt, "11-21")``, which
  hands transformers only the tensors of the 11 kept layers.
* ``naive``: plain ``AutoModelForCausalLM.from_pretrained(ckpt)`` of the full model,
  then deleting layers 11..21 from ``model.model.layers`` and ``gc.collect()``.
* ``full``: plain ``from_pretrained`` with no deletion (reference).

In each child, after ``import torch, transformers`` (and the library), the current RSS
is recorded as the baseline; then only the load (plus the deletion, for ``naive``) is
timed, and the absolute peak RSS is read from ``getrusage(RUSAGE_SELF).ru_maxrss``.
Peak RSS counts every resident page of the process, including file-backed pages of
the memory-mapped safetensors file that were touched; the child also reports the
anonymous/file split of the RSS right after the load to help interpret the peak.
When the checkpoint dtype equals the load dtype, transformers 5 leaves the weights as
views of the mmap'd file, so a weight's pages only become resident once it is read;
after the load measurements the child therefore also reads every remaining weight once
and reports the peak RSS after that ("peak after touch", informational only).

Each approach runs ``--repeats`` times in alternating order; the median load time and
the maximum peak RSS are reported, with the ratios pruned/naive, and written as JSON
to ``<workdir>/results.json``. The project target is peak RSS(pruned) <= 0.65 x naive.

Run it from the repository root (offline; nothing is downloaded)::

    python benchmarks/bench_load_memory.py
    python benchmarks/bench_load_memory.py --repeats 3 --approaches pruned naive
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO_ROOT / "benchmarks" / "out" / "load_memory"
APPROACHES = ("pruned", "naive", "full")
TARGET_RATIO = 0.65

#: TinyLlama-1.1B shape.
MODEL_SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
}
DROP_SPEC = "11-21"  # drop the last 11 of 22 layers = half
KEPT_LAYERS = 11


def _mib(kib: float) -> float:
    return kib / 1024.0


def _proc_status_kib() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in KiB (Linux)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    return out


# ----------------------------------------------------------------------- setup


def create_checkpoint(ckpt: Path, dtype_name: str, seed: int) -> None:
    """Save a randomly initialised Llama of MODEL_SHAPE to ``ckpt`` (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(**MODEL_SHAPE, tie_word_embeddings=False)
    t0 = time.perf_counter()
    # Build without running the (slow) default initialisers, then fill in place.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    std = config.initializer_range
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=gen)
    n_params = sum(p.numel() for p in model.parameters())
    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt)  # safetensors (the only format in transformers 5)
    size = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    print(
        f"created {ckpt}: {n_params / 1e9:.2f}B params, {dtype_name}, "
        f"{size / 2**30:.2f} GiB on disk, {time.perf_counter() - t0:.1f}s"
    )


def ensure_checkpoint(ckpt: Path, dtype_name: str, seed: int, recreate: bool) -> None:
    config_path = ckpt / "config.json"
    if config_path.exists() and not recreate:
        saved = json.loads(config_path.read_text())
        saved_dtype = saved.get("dtype") or saved.get("torch_dtype")
        note = "" if saved_dtype in (None, dtype_name) else f" (saved as {saved_dtype}; --recreate to change)"
        print(f"using cached checkpoint {ckpt}{note}")
        return
    # Run in a subprocess so the setup's memory does not linger in this process.
    cmd = [sys.executable, __file__, "--setup-only", "--workdir", str(ckpt.parent), "--dtype", dtype_name]
    cmd += ["--seed", str(seed), "--recreate"]
    if config_path.exists():
        config_path.unlink()  # so a failed re-creation is not mistaken for a cached one
    subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------- child


def child(approach: str, ckpt: Path, load_dtype_name: str) -> None:
    """Load with one approach and print one JSON line of measurements."""
    import torch
    import transformers  # noqa: F401  (part of the baseline)
    from transformers import AutoModelForCausalLM

    from lmeval_layerprune.checkpoint.load import load_pruned_model
    from lmeval_layerprune.core import (
        spec,  # noqa: F401  (imported lazily by the loader)
    )

    gc.collect()
    baseline = _proc_status_kib()["VmRSS"]
    dtype = getattr(torch, load_dtype_name)

    t0 = time.perf_counter()
    if approach == "pruned":
        model = load_pruned_model(str(ckpt), DROP_SPEC, dtype=dtype)
    elif approach == "naive":
        model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=dtype)
        model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:KEPT_LAYERS])
        model.config.num_hidden_layers = KEPT_LAYERS
        gc.collect()
    elif approach == "full":
        model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=dtype)
    else:
        raise ValueError(f"unknown approach {approach!r}")
    load_s = time.perf_counter() - t0

    num_layers = len(model.model.layers)
    if approach in ("pruned", "naive"):
        assert model.config.num_hidden_layers == KEPT_LAYERS, model.config.num_hidden_layers
        assert num_layers == KEPT_LAYERS, num_layers
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    after = _proc_status_kib()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    # Then read every weight once (as any evaluation would): lazily mapped pages become resident.
    t1 = time.perf_counter()
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    touch_s = time.perf_counter() - t1
    touched_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = {
        "approach": approach,
        "load_s": round(load_s, 3),
        "peak_rss_mib": round(_mib(peak_kib), 1),
        "baseline_rss_mib": round(_mib(baseline), 1),
        "num_layers": num_layers,
        "rss_after_mib": round(_mib(after["VmRSS"]), 1),
        "rss_anon_after_mib": round(_mib(after.get("RssAnon", 0)), 1),
        "rss_file_after_mib": round(_mib(after.get("RssFile", 0)), 1),
        "param_mib": round(param_bytes / 2**20, 1),
        "touch_s": round(touch_s, 3),
        "touched_peak_rss_mib": round(_mib(touched_peak_kib), 1),
    }
    print(json.dumps(record), flush=True)


# ---------------------------------------------------------------------- parent


def run_child(approach: str, ckpt: Path, load_dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", approach, "--ckpt", str(ckpt), "--load-dtype", load_dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"child {approach!r} failed with exit code {proc.returncode}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {approach!r} printed no result:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


def summarise(runs: list[dict]) -> dict:
    peak = max(r["peak_rss_mib"] for r in runs)
    baseline = statistics.median(r["baseline_rss_mib"] for r in runs)
    delta = max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs)
    last = runs[-1]
    return {
        "load_s_median": round(statistics.median(r["load_s"] for r in runs), 3),
        "peak_rss_mib_max": peak,
        "baseline_rss_mib_median": baseline,
        "delta_rss_mib_max": round(delta, 1),
        "touched_peak_rss_mib_max": max(r["touched_peak_rss_mib"] for r in runs),
        "num_layers": last["num_layers"],
        "param_mib": last["param_mib"],
        "runs": runs,
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def print_table(summary: dict[str, dict]) -> None:
    header = (
        f"{'approach':<8} {'layers':>6} {'params MiB':>10} {'load s':>8} {'peak RSS MiB':>13} "
        f"{'baseline MiB':>13} {'delta MiB':>10} {'anon/file after MiB':>20} {'peak after touch':>17}"
    )
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        last = s["runs"][-1]
        split = f"{last['rss_anon_after_mib']:.0f}/{last['rss_file_after_mib']:.0f}"
        print(
            f"{name:<8} {s['num_layers']:>6} {s['param_mib']:>10.0f} {s['load_s_median']:>8.2f} "
            f"{s['peak_rss_mib_max']:>13.0f} {s['baseline_rss_mib_median']:>13.0f} "
            f"{s['delta_rss_mib_max']:>10.0f} {split:>20} {s['touched_peak_rss_mib_max']:>17.0f}"
        )


def parent(args: argparse.Namespace) -> int:
    workdir = args.workdir.resolve()
    ckpt = workdir / "ckpt"
    ensure_checkpoint(ckpt, args.dtype, args.seed, args.recreate)

    approaches = list(dict.fromkeys(args.approaches))
    runs: dict[str, list[dict]] = {a: [] for a in approaches}
    for rep in range(args.repeats):
        order = approaches if rep % 2 == 0 else approaches[::-1]
        for approach in order:
            rec = run_child(approach, ckpt, args.load_dtype)
            runs[approach].append(rec)
            print(f"  repeat {rep + 1}/{args.repeats} {approach:<6} {json.dumps(rec)}", flush=True)

    summary = {a: summarise(r) for a, r in runs.items()}
    print()
    print_table(summary)

    result: dict = {
        "checkpoint": str(ckpt),
        "checkpoint_dtype": args.dtype,
        "load_dtype": args.load_dtype,
        "drop": DROP_SPEC,
        "repeats": args.repeats,
        "target_peak_rss_ratio": TARGET_RATIO,
        "approaches": summary,
    }
    if "pruned" in summary and "naive" in summary:
        p, n = summary["pruned"], summary["naive"]
        ratios = {
            "peak_rss_pruned_over_naive": _ratio(p["peak_rss_mib_max"], n["peak_rss_mib_max"]),
            "delta_rss_pruned_over_naive": _ratio(p["delta_rss_mib_max"], n["delta_rss_mib_max"]),
            "load_s_pruned_over_naive": _ratio(p["load_s_median"], n["load_s_median"]),
            "touched_peak_rss_pruned_over_naive": _ratio(p["touched_peak_rss_mib_max"], n["touched_peak_rss_mib_max"]),
        }
        met = ratios["peak_rss_pruned_over_naive"] is not None and ratios["peak_rss_pruned_over_naive"] <= TARGET_RATIO
        result["ratios"] = ratios
        result["target_met"] = met
        print()
        print(f"peak RSS          pruned/naive: {ratios['peak_rss_pruned_over_naive']:.3f}")
        print(f"delta-over-base   pruned/naive: {ratios['delta_rss_pruned_over_naive']:.3f}")
        print(f"load time         pruned/naive: {ratios['load_s_pruned_over_naive']:.3f}")
        print(f"peak after touch  pruned/naive: {ratios['touched_peak_rss_pruned_over_naive']:.3f}  (informational)")
        verdict = "MET" if met else "NOT met"
        print(f"target peak RSS <= {TARGET_RATIO:.2f}x naive: {verdict}")

    out = workdir / "results.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


# ------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="directory for the cached checkpoint (<workdir>/ckpt) and results.json (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="dtype the random checkpoint is saved in (default: %(default)s, ~2 GiB on disk)",
    )
    parser.add_argument(
        "--load-dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="dtype passed to from_pretrained / load_pruned_model (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per approach, alternating order (default: 2)")
    parser.add_argument(
        "--approaches",
        nargs="+",
        choices=APPROACHES,
        default=list(APPROACHES),
        help="approaches to measure (default: all three)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default: 0)")
    parser.add_argument("--recreate", action="store_true", help="re-create the checkpoint even if it is cached")
    parser.add_argument("--setup-only", action="store_true", help="only create the checkpoint, then exit")
    # Internal: run one measurement (used by the parent process).
    parser.add_argument("--child", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        child(args.child, args.ckpt, args.load_dtype)
        return 0
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.setup_only:
        ckpt = args.workdir.resolve() / "ckpt"
        if args.recreate or not (ckpt / "config.json").exists():
            create_checkpoint(ckpt, args.dtype, args.seed)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
