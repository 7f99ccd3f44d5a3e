"""How fast ``lmeval-prune report`` reads result folders: 100 lm-eval runs (4 tasks x 90 items, with
per-item samples, in lm-eval's --output_path layout), read with results.load_runs, then the whole
report (paired bootstraps, tables; plots off). Prints the times; the target is under 2 s to read.

    PYTHONPATH=. python benchmarks/bench_report.py [--runs 100] [--items 90]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS = {"mc_a": ("multiple_choice", "acc"), "mc_b": ("multiple_choice", "acc"),
         "gen_a": ("generate_until", "exact_match"), "gen_b": ("generate_until", "exact_match")}  # fmt: skip


def write_run(folder: Path, rng: np.random.Generator, items: int, drop: list[int]) -> None:
    sub = folder / "model"
    sub.mkdir(parents=True)
    date = "2026-01-01T00-00-00.000000"
    results, configs = {}, {}
    for task, (kind, metric) in TASKS.items():
        x = (rng.random(items) < 0.6).astype(float)
        results[task] = {f"{metric},none": x.mean(), f"{metric}_stderr,none": x.std() / items**0.5}
        configs[task] = {"task": task, "output_type": kind, "metric_list": [{"metric": metric}]}
        with open(sub / f"samples_{task}_{date}.jsonl", "w") as fh:
            for i, v in enumerate(x):  # realistic record size: prompt and responses included
                prompt = "Question: ...\nAnswer:" * 20
                rec = {"doc_id": i, "filter": "none", metric: v, "doc": {"q": "What is 3 + 4?" * 8},
                       "arguments": {"gen_args_0": {"arg_0": prompt}}, "resps": [["7"]]}  # fmt: skip
                fh.write(json.dumps(rec) + "\n")
    plan = {"base_model": "m", "num_layers": 30, "drop": drop, "method": "last" if drop else "none"}
    data = {"results": results, "configs": configs, "n-samples": {t: {"effective": items} for t in TASKS},
            "config": {"model": "pruned-hf", "model_args": {"pretrained": "m"}, "layer_pruning": plan}}  # fmt: skip
    (sub / f"results_{date}.json").write_text(json.dumps(data))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--items", type=int, default=90)
    ap.add_argument("--iters", type=int, default=2000, help="bootstrap resamples (the report's default: 10,000)")
    args = ap.parse_args()
    from lmeval_layerprune.lmeval.results import load_runs
    from lmeval_layerprune.report.build import build_report

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.runs):
            write_run(root / f"run{i:03d}", rng, args.items, list(range(30 - i % 10, 30)) if i % 10 else [])
        t0 = time.perf_counter()
        runs = load_runs([root])
        t1 = time.perf_counter()
        for r in runs:  # what the report reads per run beyond the results file
            for t in TASKS:
                r.items(t)
        t2 = time.perf_counter()
        report = build_report(runs, iters=args.iters)
        t3 = time.perf_counter()
    print(f"{len(runs)} runs, {len(TASKS)} tasks x {args.items} items each (with samples)")
    print(f"load_runs (results files): {t1 - t0:.3f} s")
    print(f"+ every per-item samples file: {t2 - t1:.3f} s  (read total {t2 - t0:.3f} s)")
    print(f"full report (paired bootstrap, {args.iters} resamples, {len(report.infos)} runs): {t3 - t2:.3f} s")


if __name__ == "__main__":
    main()
