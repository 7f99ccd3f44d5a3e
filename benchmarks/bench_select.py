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
4. Hidden-state reuse within a round: one full round (every unprotected layer) with a
   perplexity objective and with a loglikelihood (multiple-choice) task objective, reuse on
   versus off; times, ratio, identical scores.
5. The exact search with early elimination (issue #13), side by side in one run on the same
   objective: the paper's approach (measured on ``--candidates`` candidates of round 1 and
   projected to the whole search), the exhaustive search (``--exhaustive``), the exact search
   with early elimination (the default) and ``--race``: wall and CPU times, ratios, items
   evaluated, and whether each plan equals the exhaustive plan. Per-round lines are printed as
   the searches go (``--log``), so a run cut short still leaves figures.

Section 5 alone, as measured for docs/selection-search.md:
``python benchmarks/bench_select.py --sections 5 --limit 12 --chunk-size 4 --candidates 2 --n 6``

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
    parser.add_argument("--n", type=int, default=6, help="layers removed in the exact-vs-race search (default: 6)")
    parser.add_argument("--ll-task", default="arith_probe_mc_add_2d", help="loglikelihood task for section 4")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run (default: 1,2,3,4; 5: #13)")
    parser.add_argument("--chunk-size", type=int, default=4, help="section 5: items scored at a time (default: 4)")
    args = parser.parse_args()
    sections = {int(x) for x in args.sections.split(",") if x}

    from lmeval_layerprune.core.embedded import embedded_model_dir
    from lmeval_layerprune.lmeval.hf import PrunedHFLM
    from lmeval_layerprune.search.objectives import TaskObjective

    model = str(embedded_model_dir())
    lm = PrunedHFLM(pretrained=model, dtype="float32", batch_size=8)
    num_layers = int(lm.model.config.num_hidden_layers)
    objective = TaskObjective(lm, [args.task], args.limit, 777) if sections & {1, 2} else None
    layers = list(range(1, 1 + args.candidates))

    # 1. one round, side by side
    t_orig = None
    if 1 in sections:
        t_orig = _section_one_round(objective, model, num_layers, layers, args)
    if 2 in sections:
        _section_search(objective, num_layers, layers, args, t_orig)
    if 4 in sections:
        _section_reuse(lm, num_layers, args)
    if 5 in sections:
        _section_exact(lm, model, num_layers, args)


def _section_exact(lm, model, num_layers, args) -> None:
    import logging
    import resource

    from lmeval_layerprune.core.journal import Journal
    from lmeval_layerprune.search.greedy import GreedySettings, greedy_search
    from lmeval_layerprune.search.objectives import TaskObjective

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True)
    for name in ("lm_eval", "lmeval_layerprune.lmeval.hf", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    objective = TaskObjective(lm, [args.task], args.limit, 777, chunk_size=args.chunk_size)
    cands = sum(num_layers - 1 - r for r in range(args.n))
    print(
        f"5. exact search, n={args.n}, {args.task} limit {args.limit}, chunks of {args.chunk_size}, "
        f"{cands} candidates; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
        flush=True,
    )
    # the paper's approach on the first candidates of round 1 (fresh mergekit + lm_eval each)
    layers = list(range(num_layers - 1, num_layers - 1 - args.candidates, -1))
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        orig = {c: _original_candidate(model, c, num_layers, args.task, args.limit, Path(tmp)) for c in layers}
    t_paper = (time.perf_counter() - t) / len(layers)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_paper = (ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime) / len(layers)
    objective.start_round([])
    ours = {c: objective([c])[args.task] for c in layers}
    print(
        f"   paper's approach: {t_paper:.1f} s wall, {cpu_paper:.1f} s CPU per candidate (layers {layers}); "
        f"projected to the search: {t_paper * cands:.0f} s wall, {cpu_paper * cands:.0f} s CPU; "
        f"same scores as ours: {orig == ours}",
        flush=True,
    )
    runs = {}
    for mode, kw in (
        ("elimination", {}),
        ("exhaustive", {"exhaustive": True}),
        ("race", {"race": True}),
    ):
        p0, t = time.process_time(), time.perf_counter()
        settings = GreedySettings(args.n, protect=(0,), progress=False, **kw)
        res = greedy_search(objective, num_layers, Journal(None, mode), settings)
        runs[mode] = (res, time.perf_counter() - t, time.process_time() - p0)
        info = res.get("search", {})
        print(
            f"   {mode:11s}: {runs[mode][1]:7.0f} s wall, {runs[mode][2]:7.0f} s CPU; plan {res['drop']} "
            f"(order {res['order']}); items {info.get('items_evaluated')} of {info.get('items_exhaustive')}; "
            f"stopped {info.get('stopped')}; ties {[r.get('ties') for r in res['rounds']]}",
            flush=True,
        )
    ref = runs["exhaustive"][0]
    for mode, (res, wall, cpu) in runs.items():
        same = sum(a == b for a, b in zip(ref["order"], res["order"], strict=True))
        print(
            f"   {mode:11s}: {t_paper * cands / wall:6.1f}x the paper's approach (wall), "
            f"{cpu_paper * cands / cpu:6.1f}x (CPU), {runs['exhaustive'][1] / wall:5.2f}x the exhaustive search; "
            f"same plan as exhaustive: {res['drop'] == ref['drop']} ({same}/{args.n} rounds)",
            flush=True,
        )


def _section_one_round(objective, model, num_layers, layers, args) -> float:
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
    return t_orig


def _section_search(objective, num_layers, layers, args, t_orig) -> None:
    from lmeval_layerprune.core.journal import Journal
    from lmeval_layerprune.search.greedy import GreedySettings, greedy_search

    t = time.perf_counter()
    exact = greedy_search(objective, num_layers, Journal(None, "exact"), GreedySettings(args.n, (0,), progress=False))
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    race = GreedySettings(args.n, (0,), race=True, progress=False)
    raced = greedy_search(objective, num_layers, Journal(None, "race"), race)
    t_race = time.perf_counter() - t
    cands = sum(num_layers - 1 - r for r in range(args.n))
    print(f"2. full search, n={args.n} ({cands} candidates in exact mode)")
    print(f"   exact : {t_exact:7.1f} s  order {exact['order']}  plan {exact['drop']}")
    print(f"   race  : {t_race:7.1f} s  order {raced['order']}  plan {raced['drop']}")
    rounds = sum(a == b for a, b in zip(exact["order"], raced["order"], strict=True))
    print(
        f"   race agrees: same plan {exact['drop'] == raced['drop']}, same layer in {rounds}/{args.n} rounds; "
        f"budget {_budget(raced):.1f} vs {_budget(exact):.1f} full-candidate evaluations"
    )
    print(f"   race vs exact: {t_exact / t_race:5.2f}x")
    if t_orig is not None:
        projected = cands * t_orig / len(layers)
        print(f"   original approach, projected from section 1: {projected:7.1f} s")
        print(f"   speed-up vs original: exact {projected / t_exact:5.2f}x, race {projected / t_race:5.2f}x")

    # 3. growth
    per = t_exact / exact["evaluations"]
    print(f"3. growth: candidates evaluated (x {per:.2f} s each here) = sum over rounds of the unprotected layers left")
    for n_layers in (24, 32, 48, 64):
        row = [f"{n_layers:3d} layers"]
        for n in (4, 8, 16):
            c = sum(n_layers - 1 - r for r in range(n))
            row.append(f"n={n:2d}: {c:4d} cand ~{c * per / 60:6.1f} min")
        print("   " + "  ".join(row))


def _budget(result: dict) -> float:
    """Full-budget-equivalent candidate evaluations of a search (baseline excluded)."""
    from lmeval_layerprune.search.greedy import RACE_RUNGS

    total = 0.0
    for r in result["rounds"]:
        reached = r.get("budget", {k: 1.0 for k in r["scores"]})  # the last rung each candidate ran
        total += sum(sum(f for f in RACE_RUNGS if f <= b) if "budget" in r else b for b in reached.values())
    return total


def _section_reuse(lm, num_layers: int, args) -> None:
    from lmeval_layerprune.methods.capture import load_calibration_texts
    from lmeval_layerprune.search.objectives import PerplexityObjective, TaskObjective

    candidates = list(range(num_layers - 1, 0, -1))  # every unprotected layer, deepest first
    objectives = {
        "perplexity (16 calibration texts)": PerplexityObjective(
            lm.model, lm.tokenizer, load_calibration_texts(None, 16)
        ),
        f"loglikelihood ({args.ll_task}, limit {args.limit})": TaskObjective(lm, [args.ll_task], args.limit, 777),
    }
    print(f"4. hidden-state reuse, one full round ({len(candidates)} candidates)")
    for name, objective in objectives.items():
        times, scores = {}, {}
        for enabled in (False, True):
            objective.reuse.enabled = enabled
            objective.start_round([])
            t = time.perf_counter()
            scores[enabled] = [objective([c]) for c in candidates]
            times[enabled] = time.perf_counter() - t
        print(
            f"   {name}: recompute {times[False]:6.1f} s, reuse {times[True]:6.1f} s, "
            f"{times[False] / times[True]:4.2f}x, identical scores: {scores[False] == scores[True]}"
        )


if __name__ == "__main__":
    main()
