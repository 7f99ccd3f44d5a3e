"""What ``lmeval-prune report`` costs on the committed sweep evidence (docs/results/sweep-smollm2/runs:
11 runs, 4 tasks x 90 items), a reference version of the package (default: the ``house`` branch,
taken with ``git archive``) against the working tree, side by side in one run (interleaved rounds,
each a fresh process). Then, in this process, where the time goes: importing the report command,
and building the report at 2,000 against 10,000 and 20,000 resamples.

    python benchmarks/bench_report_evidence.py [--ref house] [--rounds 3] [--plots]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "results" / "sweep-smollm2" / "runs"
CODE = "import sys; from lmeval_layerprune.cli import main; sys.exit(main(sys.argv[1:]))"


def _timed(pythonpath: Path, out: Path, plots: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "HF_HUB_OFFLINE": "1", "LMEVAL_LAYERPRUNE_NO_AUTOLOAD": "1"}
    argv = [sys.executable, "-c", CODE, "report", str(RUNS), "--out", str(out), *([] if plots else ["--no-plots"])]
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="house", help="git revision of the reference version")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plots", action="store_true", help="write the plots too (matplotlib's time included)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref"
        ref.mkdir()
        git = ["git", "-C", str(ROOT), "archive", args.ref, "lmeval_layerprune"]
        archive = subprocess.run(git, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(ref)], input=archive.stdout, check=True)
        times: dict[str, list[float]] = {"ref": [], "new": []}
        for k in range(args.rounds):
            for name, path in (("ref", ref), ("new", ROOT)):
                times[name].append(_timed(path, Path(tmp) / f"{name}{k}", args.plots))
    ref_s, new_s = statistics.median(times["ref"]), statistics.median(times["new"])
    print(f"report on {RUNS.relative_to(ROOT)} ({'with' if args.plots else 'without'} plots), median of {args.rounds}:")
    print(f"  {args.ref}: {ref_s:.2f} s   working tree: {new_s:.2f} s   ({new_s / ref_s:.2f}x)")

    sys.path.insert(0, str(ROOT))
    t = time.perf_counter()
    import lmeval_layerprune.cli.report  # noqa: F401  (what the command imports)
    from lmeval_layerprune.lmeval.results import load_runs
    from lmeval_layerprune.report.build import build_report

    print(f"  import of the report command (working tree): {time.perf_counter() - t:.2f} s")
    runs = load_runs([RUNS])
    for iters in (2000, 10_000, 20_000, 2000, 10_000, 20_000):
        t = time.perf_counter()
        build_report(runs, iters=iters)
        print(f"  build_report, {iters:>6} resamples: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
