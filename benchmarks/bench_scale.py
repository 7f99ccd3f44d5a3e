"""One sweep, three ways, side by side in one run: Ray with 1 worker x 1 thread, Ray with 2 workers x
1 thread, and (``--local``) in process with 1 thread. Prints each wall time, the 1-worker / 2-worker
ratio, the machine's load (``/proc/loadavg``) before and after each run with the parallel capacity other users
leave (two busy processes against one: 2.0 on an idle 2-core machine, the ceiling of the ratio), whether every cell's
per-sample generations, scores and plan are identical across the runs, and what the measured
per-cell times would give on 8 GPUs and on 4 nodes of 8 GPUs (list scheduling of the measured
cells, each worker paying the measured start-up once).

    PYTHONPATH=. python benchmarks/bench_scale.py [--model embedded] [--methods last,bi,angular] \
        [--ratios 0.1,0.2] [--tasks arith_probe_mc_add_1d,arith_probe_add_1d] [--limit 40] [--local]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"^sweep: \[\d+/\d+\] (\S+) on (\S+) in ([\d.]+) s$")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def outputs(out: Path) -> dict:
    """cell -> (scores, plan, every sample's responses) of a sweep folder."""
    found = {}
    for results in sorted(out.glob("*/*/results_*.json")):
        data = json.loads(results.read_text())
        samples = {}
        for task in data["configs"]:
            (path,) = results.parent.glob(f"samples_{task}_*.jsonl")
            rows = [json.loads(x) for x in path.read_text().splitlines()]
            samples[task] = [(r["doc_id"], r["resps"], r["filtered_resps"]) for r in rows]
        scores = {t: {k: v for k, v in m.items() if "," in k} for t, m in data["results"].items()}
        found[results.parent.parent.name] = (scores, data["config"]["layer_pruning"]["drop"], samples)
    return found


def _spin(seconds: list[float]) -> None:
    t0, x = time.perf_counter(), 0
    for i in range(3_000_000):
        x += i * i
    seconds.append(time.perf_counter() - t0)


def capacity() -> float:
    """How many cores this machine gives two busy processes right now: 2 x (one alone) / (two at once).
    2.0 on an idle 2-core machine; other users' load pulls it towards 1 (the ceiling of the ratio)."""
    with mp.Manager() as m:
        alone = m.list()
        _spin(alone)
        both = m.list()
        procs = [mp.Process(target=_spin, args=(both,)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return 2 * alone[0] / max(both)


def run(label: str, cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, float], str, str]:
    before = f"{load()}, 2-process capacity {capacity():.2f}"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    cells = {m.group(1): float(m.group(3)) for m in map(LINE.match, proc.stdout.splitlines()) if m}
    return wall, cells, before, load()


def makespan(durations: list[float], workers: int, startup: float) -> float:
    """Longest-first list scheduling of ``durations`` on ``workers`` that each start after ``startup``."""
    free = [startup] * workers
    heapq.heapify(free)
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--methods", default="last,bi,angular")
    ap.add_argument("--ratios", default="0.1,0.2")
    ap.add_argument("--tasks", default="arith_probe_mc_add_1d,arith_probe_add_1d")
    ap.add_argument("--limit", default="40")
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--local", action="store_true", help="also run in process (1 thread) and compare")
    args = ap.parse_args()
    lmp = str(Path(sys.executable).parent / "lmeval-prune")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    grid = ["--methods", args.methods, "--ratios", args.ratios, "--tasks", args.tasks, "--limit", args.limit,
            "--batch-size", args.batch_size, "--no-progress"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {
            "ray 1 worker x 1 thread": ["--executor", "ray", "--workers", "1", "--threads-per-worker", "1"],
            "ray 2 workers x 1 thread": ["--executor", "ray", "--workers", "2", "--threads-per-worker", "1"],
        }
        if args.local:
            runs["in process, 1 thread"] = ["--executor", "local", "--device", "cpu"]
        measured = {}
        for i, (label, extra) in enumerate(runs.items()):
            out = root / f"run{i}"
            measured[label] = (*run(label, [lmp, "sweep", args.model, *grid, "--out", str(out), *extra], env), out)
        print(f"sweep of {args.model}: {args.methods} at {args.ratios}; {args.tasks}, limit {args.limit}")
        print(f"CPUs: {os.cpu_count()}")
        for label, (wall, cells, before, after, _) in measured.items():
            per = ", ".join(f"{c} {t:.1f}" for c, t in sorted(cells.items()))
            print(f"{label:<26} {wall:7.1f} s   load before {before} / after {after}   cells (s): {per}")
        one, two = measured["ray 1 worker x 1 thread"], measured["ray 2 workers x 1 thread"]
        print(f"ratio (1 worker / 2 workers): {one[0] / two[0]:.2f}x")
        reference = outputs(one[4])
        same = {label: outputs(m[4]) == reference for label, m in measured.items()}
        print(f"{len(reference)} cells; identical per-sample generations, scores and plans: {same}")
        # the estimate: measured cell times (1 worker, the least contended), start-up = wall - cells
        durations = list(one[1].values())
        startup = max(0.0, one[0] - sum(durations))
        mean = sum(durations) / len(durations)
        print(f"measured: start-up (Ray + one model load) {startup:.1f} s; cell mean {mean:.1f} s")
        paper = durations * math.ceil(84 / len(durations))  # e.g. 4 methods x 5 ratios + base, 4 task suites
        for workers, what in ((1, "1 worker"), (8, "8 GPUs (1 node)"), (32, "4 nodes x 8 GPUs")):
            for name, cells in (("this grid", durations), (f"{len(paper)} cells", paper)):
                t = makespan(cells, workers, startup)
                print(f"  {what:<18} {name:<10} ~{t:8.1f} s  ({makespan(cells, 1, startup) / t:5.2f}x of 1 worker)")


if __name__ == "__main__":
    main()
