"""A sweep's grid against the same grid as separate ``lm_eval`` processes, on the same items.

The sweep loads the model once, evaluates the unpruned baseline once and swaps layers in place per
cell; the separate runs start one ``lm_eval --model pruned-hf --model_args pretrained=M,drop=LAYERS``
process per cell (the resolved layers of the sweep's cells, so both sides evaluate the same models).
Prints wall time of each side, the ratio, and whether every score is identical.

    PYTHONPATH=. python benchmarks/bench_sweep.py [--model embedded] [--ratios 0,0.1,0.2,0.3] \
        [--tasks arith_probe_mc_add_1d,arith_probe_add_1d] [--limit 10]
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


def scores(results_file: Path) -> dict:
    data = json.loads(results_file.read_text())
    return {t: {k: v for k, v in m.items() if "," in k} for t, m in data["results"].items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--methods", default="last")
    ap.add_argument("--ratios", default="0,0.1,0.2,0.3")
    ap.add_argument("--tasks", default="arith_probe_mc_add_1d,arith_probe_add_1d")
    ap.add_argument("--limit", default="10")
    ap.add_argument("--batch-size", default="16")
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    common = ["--tasks", args.tasks, "--limit", args.limit, "--batch_size", args.batch_size, "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(
            [str(bindir / "lmeval-prune"), "sweep", args.model, "--methods", args.methods, "--ratios", args.ratios,
             "--out", str(root / "sweep"), "--no-progress", *common],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        t_sweep = time.perf_counter() - t0
        manifest = json.loads((root / "sweep" / "sweep.json").read_text())
        same = True
        t_sep = 0.0
        for name, cell in sorted(manifest["cells"].items()):
            drop = cell["plan"].get("spec_resolved") or ",".join(map(str, cell["plan"]["drop"])) or "none"
            out = root / "separate" / name
            t0 = time.perf_counter()
            subprocess.run(
                [str(bindir / "lm_eval"), "--model", "pruned-hf", "--model_args",
                 f"pretrained={args.model},drop={drop},dtype=float32", "--output_path", str(out), *common],
                check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            t_sep += time.perf_counter() - t0
            (theirs,) = out.rglob("results_*.json")
            if scores(theirs) != scores(Path(cell["results"])):
                same = False
                print(f"  {name}: scores differ")
    n = len(manifest["cells"])
    print(f"{n} cells ({args.methods} at {args.ratios}; {args.tasks}, limit {args.limit}) on {args.model}")
    print(f"sweep (one process): {t_sweep:.1f} s; separate lm_eval processes: {t_sep:.1f} s")
    print(f"ratio: {t_sep / t_sweep:.2f}x; identical scores: {same}")


if __name__ == "__main__":
    main()
