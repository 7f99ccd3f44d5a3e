"""One greedy ``select`` side by side in one run: ``--executor ray --workers 2`` (1 thread each), in process
with 1 thread, and (``--two-threads``) in process with 2 threads. Prints each wall time, the ratios, the
machine's load (``/proc/loadavg``) before and after each run, and whether the plans are identical
(layers, order, every round's choice and its score, ties).

    PYTHONPATH=. python benchmarks/bench_select_ray.py [--model embedded] [--tasks arith_probe_add_1d] \
        [--limit 8] [--chunk-size 4] [--n 2] [--two-threads]

On a 2-core machine shared with other jobs, 2 torch threads in one process can take several times
longer than 1 (the threads wait for each other), hence ``--two-threads`` is off by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace, out: Path, threads: int, extra: list[str]) -> tuple[float, dict]:
    cmd = [
        str(BIN / "lmeval-prune"), "select", args.model, "--method", "iterative", "--n", str(args.n),
        "--tasks", args.tasks, "--limit", str(args.limit), "--chunk-size", str(args.chunk_size),
        "--out", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


def essence(plan: dict) -> dict:
    """What must be identical: the layers, their order, each round's choice, its score and ties."""
    rounds = [(r["chosen"], r["scores"][str(r["chosen"])], r.get("ties"), r.get("secondary")) for r in plan["rounds"]]
    return {"drop": plan["drop"], "order": plan["order"], "rounds": rounds, "baseline": plan["baseline"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--tasks", default="arith_probe_add_1d")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=4)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--two-threads", action="store_true", help="also in process with 2 threads")
    args = p.parse_args()
    ways = {
        "ray, 2 workers x 1 thread": (1, ["--executor", "ray", "--workers", "2", "--threads-per-worker", "1"]),
        "in process, 1 thread": (1, []),
    }
    if args.two_threads:
        ways["in process, 2 threads"] = (2, [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (threads, extra)) in enumerate(ways.items()):
            before = load()
            wall, plan = run(args, Path(tmp) / f"plan{i}.json", threads, extra)
            results[name] = (wall, plan)
            search = plan["search"]
            print(
                f"{name:28s} {wall:7.1f} s  items {search['items_evaluated']}/{search['items_exhaustive']}, "
                f"stopped {search['stopped']}, plan {plan['order']}  (load {before} -> {load()})",
                flush=True,
            )
    base = results["in process, 1 thread"][0]
    for name, (wall, _) in results.items():
        print(f"  {name}: {base / wall:.2f}x the 1-thread in-process wall time")
    same = len({json.dumps(essence(plan), sort_keys=True) for _, plan in results.values()}) == 1
    print(f"identical plans (layers, order, each round's choice, score and ties): {same}")


if __name__ == "__main__":
    main()
