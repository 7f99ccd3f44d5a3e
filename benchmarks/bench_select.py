"""The greedy layer search on the embedded model, measured side by side in one run.

1. One greedy round over ``--candidates`` candidate layers with an ``arith_probe`` objective
   (same items, same greedy decoding), two ways:
   * this implementation (exact mode): one loaded model, candidates swap the layer list;
   * the original approach: for each candidate write a checkpoint with ``mergekit-yaml``, start
     a fresh ``lm_eval --model hf`` process on it, read its score.
   Prints both times, the ratio, and whether every candidate's score is identical.
2. A full ``--n`` search, exact versus ``--race``: times, ratio, whether the plans agree, and the
   original approach's cost projected from its measured per-candidate time.
3. How the cost grows: candidates evaluated by a search for a few layer counts and N.

Offline; run from the repository root: ``python benchmarks/bench_select.py``.
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


def _original_candidate(model: str, layer: int, num_layers: int, task: str, limit: int, work: Path) -> float:
    """Write the candidate with mergekit, evaluate it in a fresh lm_eval process; return its score."""
    import yaml

    ranges = [r for r in ([0, layer], [layer + 1, num_layers]) if r[0] < r[1]]
    cfg = {
        "slices": [{"sources": [{"model": model, "layer_range": r}]} for r in ranges],
        "merge_method": "passthrough",
        "dtype": "float32",
    }
    (work / "mk.yaml").write_text(yaml.safe_dump(cfg))
    out = work / f"cand{layer}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [str(BIN / "mergekit-yaml"), str(work / "mk.yaml"), str(out)], check=True, env=env, capture_output=True
    )
    res_dir = work / f"res{layer}"
    subprocess.run(
        [
            str(BIN / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={out},dtype=float32",
            "--tasks",
            task,
            "--limit",
            str(limit),
            "--device",
            "cpu",
            "--batch_size",
            "8",
            "--output_path",
            str(res_dir),
            "--metadata",
            json.dumps({"seed": 777}),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    res = json.loads(sorted(res_dir.rglob("results_*.json"))[-1].read_text())
    return float(res["results"][task]["exact_match,first-integer"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="arith_probe_add_1d", help="objective task (default: arith_probe_add_1d)")
    parser.add_argument("--limit", type=int, default=27, help="items (default: 27; racing uses 3, 9, 27)")
    parser.add_argument("--candidates", type=int, default=6, help="candidates in the one-round comparison")
    parser.add_argument("--n", type=int, default=3, help="layers removed in the exact-vs-race search (default: 3)")
    args = parser.parse_args()

    from lmeval_layerprune.embedded import embedded_model_dir
    from lmeval_layerprune.lm import PrunedHFLM
    from lmeval_layerprune.select import Journal, TaskObjective, greedy_search

    model = str(embedded_model_dir())
    lm = PrunedHFLM(pretrained=model, dtype="float32", batch_size=8)
    num_layers = int(lm.model.config.num_hidden_layers)
    objective = TaskObjective(lm, [args.task], args.limit, 777)
    layers = list(range(1, 1 + args.candidates))

    # 1. one round, side by side
    t = time.perf_counter()
    ours = {c: objective([c])[args.task] for c in layers}
    t_ours = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        orig = {c: _original_candidate(model, c, num_layers, args.task, args.limit, Path(tmp)) for c in layers}
        t_orig = time.perf_counter() - t
    print(f"1. one greedy round, {len(layers)} candidates, {args.task} limit {args.limit}")
    print(f"   this implementation : {t_ours:7.1f} s ({t_ours / len(layers):5.2f} s/candidate)")
    print(f"   original approach   : {t_orig:7.1f} s ({t_orig / len(layers):5.2f} s/candidate)")
    print(f"   speed-up            : {t_orig / t_ours:7.2f}x")
    print(f"   identical scores    : {ours == orig}  ours={ours}  original={orig}")

    # 2. full search, exact vs race
    t = time.perf_counter()
    exact = greedy_search(objective, num_layers, args.n, [0], Journal(None, "exact"), progress=False)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    raced = greedy_search(objective, num_layers, args.n, [0], Journal(None, "race"), progress=False, race=True)
    t_race = time.perf_counter() - t
    cands = sum(num_layers - 1 - r for r in range(args.n))
    projected = cands * t_orig / len(layers)
    print(f"2. full search, n={args.n} ({cands} candidates in exact mode)")
    print(f"   exact : {t_exact:7.1f} s  plan {exact['drop']}")
    print(f"   race  : {t_race:7.1f} s  plan {raced['drop']}  (agrees: {exact['drop'] == raced['drop']})")
    print(f"   original approach, projected: {projected:7.1f} s")
    print(
        f"   speed-up vs original: exact {projected / t_exact:5.2f}x, race {projected / t_race:5.2f}x; "
        f"race vs exact {t_exact / t_race:5.2f}x"
    )

    # 3. growth
    per = t_exact / exact["evaluations"]
    print(f"3. growth: candidates evaluated (x {per:.2f} s each here) = sum over rounds of the unprotected layers left")
    for n_layers in (24, 32, 48, 64):
        row = [f"{n_layers:3d} layers"]
        for n in (4, 8, 16):
            c = sum(n_layers - 1 - r for r in range(n))
            row.append(f"n={n:2d}: {c:4d} cand ~{c * per / 60:6.1f} min")
        print("   " + "  ".join(row))


if __name__ == "__main__":
    main()
