"""lmeval-prune report on synthetic lm-eval result folders (the lm_eval --output_path layout)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmeval_layerprune.core.layout import REPORT_JSON
from lmeval_layerprune.errors import ReportError
from lmeval_layerprune.lmeval.results import load_runs
from lmeval_layerprune.report.build import Recovery, build_report
from lmeval_layerprune.report.stats import GENERATIVE, LIKELIHOOD, Interval, PValue

BIN = Path(sys.executable).parent

TASKS = {  # task -> (output_type, metric, filter)
    "cls_a": ("multiple_choice", "acc", "none"),
    "cls_b": ("loglikelihood", "acc", "none"),
    "gen_a": ("generate_until", "exact_match", "first-integer"),
}


def write_run(
    folder: Path,
    values: dict[str, list[float]],
    *,
    drop: list[int] | None = None,
    num_layers: int = 10,
    method: str = "last",
    samples: bool = True,
    recovery: dict | None = None,
    date: str = "2026-01-01T00-00-00.000000",
) -> Path:
    """One lm-eval run as ``lm_eval --output_path folder --log_samples`` writes it."""
    sub = folder / "embedded"
    sub.mkdir(parents=True, exist_ok=True)
    results, configs, n_samples, hib = {}, {}, {}, {}
    for task, vals in values.items():
        output_type, metric, filt = TASKS[task]
        x = np.asarray(vals, float)
        results[task] = {
            "alias": task,
            f"{metric},{filt}": float(x.mean()),
            f"{metric}_stderr,{filt}": float(x.std(ddof=1) / math.sqrt(len(x))),
        }
        configs[task] = {"task": task, "output_type": output_type, "metric_list": [{"metric": metric}]}
        n_samples[task] = {"original": len(x), "effective": len(x)}
        hib[task] = {metric: True}
        if samples:
            with open(sub / f"samples_{task}_{date}.jsonl", "w") as fh:
                for i, v in enumerate(x):
                    fh.write(json.dumps({"doc_id": i, "filter": filt, metric: float(v), "target": "1"}) + "\n")
    drop = drop or []
    plan = {
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "num_layers": num_layers,
        "drop": drop,
        "kept": [i for i in range(num_layers) if i not in drop],
        "method": method if drop else "none",
    }
    if recovery:
        plan["recovery"] = recovery
    data = {
        "results": results,
        "configs": configs,
        "n-samples": n_samples,
        "higher_is_better": hib,
        "n-shot": {t: 0 for t in values},
        "config": {"model": "pruned-hf", "model_args": {"pretrained": "embedded"}, "layer_pruning": plan},
    }
    path = sub / f"results_{date}.json"
    path.write_text(json.dumps(data))
    return path


def binary(rng: np.random.Generator, n: int, p: float) -> list[float]:
    return (rng.random(n) < p).astype(float).tolist()


def degrade(rng: np.random.Generator, base: list[float], keep: float) -> list[float]:
    """Each right answer of the base stays right with probability ``keep`` (paired, as pruning is)."""
    b = np.asarray(base)
    return (b * (rng.random(b.size) < keep)).tolist()


@pytest.fixture
def sweep_like(tmp_path: Path) -> Path:
    """An unpruned run and `last` at 1, 2, 3 of 10 layers; classification holds, generation falls."""
    rng = np.random.default_rng(0)
    n = 400
    base = {"cls_a": binary(rng, n, 0.8), "cls_b": binary(rng, n, 0.6), "gen_a": binary(rng, n, 0.7)}
    write_run(tmp_path / "base", base)
    for k, (keep_c, keep_g) in enumerate([(1.0, 0.6), (0.97, 0.3), (0.8, 0.1)], start=1):
        vals = {
            "cls_a": degrade(rng, base["cls_a"], keep_c),
            "cls_b": degrade(rng, base["cls_b"], keep_c),
            "gen_a": degrade(rng, base["gen_a"], keep_g),
        }
        write_run(tmp_path / f"last-{k}", vals, drop=list(range(10 - k, 10)))
    return tmp_path


def _paired_ratio_ci(xp: np.ndarray, xb: np.ndarray) -> tuple[float, float, float]:
    """Independent reference: the ratio estimator's normal interval (linearised variance)."""
    r = xp.mean() / xb.mean()
    resid = xp - r * xb
    se = resid.std(ddof=1) / (math.sqrt(len(xp)) * xb.mean())
    return r, r - 1.96 * se, r + 1.96 * se


def test_paired_bootstrap_intervals_match_independent_computations(sweep_like: Path) -> None:
    runs = load_runs([sweep_like])
    report = build_report(runs, iters=4000, seed=7)
    base = next(r for r in runs if r.plan["drop"] == [])
    for info in report.infos:
        if not info.layers_removed:
            continue
        for task in TASKS:
            c = report.comparisons[info.label][task]
            metric = TASKS[task][1]
            xp = np.array([v for _, v in sorted(info.run.items(task, metric).items())])
            xb = np.array([v for _, v in sorted(base.items(task, metric).items())])
            r, lo, hi = _paired_ratio_ci(xp, xb)
            assert c.retention.value == pytest.approx(r, abs=1e-12)
            assert c.source.startswith("paired bootstrap (400 items)")
            # percentile bootstrap vs normal theory: within Monte Carlo and skew error
            assert c.retention.low == pytest.approx(lo, abs=0.02)
            assert c.retention.high == pytest.approx(hi, abs=0.02)
            # an independent numpy bootstrap (own generator) gives the same interval
            rng = np.random.default_rng(99)
            idx = rng.integers(0, len(xp), size=(4000, len(xp)))
            reps = xp[idx].mean(1) / xb[idx].mean(1)
            assert c.retention.low == pytest.approx(np.percentile(reps, 2.5), abs=0.015)
            assert c.retention.high == pytest.approx(np.percentile(reps, 97.5), abs=0.015)
            d = xp.mean() - xb.mean()
            assert c.delta.value == pytest.approx(d)
            assert c.delta.low <= d <= c.delta.high


def test_intervals_are_reproducible_and_paired(sweep_like: Path) -> None:
    runs = load_runs([sweep_like])
    a = build_report(runs, iters=500, seed=3).to_json()
    b = build_report(runs, iters=500, seed=3).to_json()
    assert a == b
    # pairing: a run identical to the base has retention exactly 1 with a zero-width interval
    rep = build_report([runs[0], runs[0]], iters=200)
    c = next(iter(rep.comparisons.values()))["cls_a"]
    assert (c.retention.value, c.retention.low, c.retention.high) == (1.0, 1.0, 1.0)


def test_summary_threshold_and_gap(sweep_like: Path) -> None:
    report = build_report(load_runs([sweep_like]), iters=2000)
    lines = report.summary_lines()
    # classification keeps >= 90% through 2 of 10 layers (keep 0.97), not at 3 (keep 0.8)
    cls = next(line for line in lines if line.startswith(f"{LIKELIHOOD} / last"))
    assert "largest ratio with retention >= 90%: 0.20 (2 of 10 layers)" in cls
    gen = next(line for line in lines if line.startswith(f"{GENERATIVE} / last"))
    assert "below 90% already at the smallest ratio" in gen
    gaps = {label: g for label, g in report.gaps.items()}
    assert all(g.significant for g in gaps.values())
    assert len(gaps) == 3 and all(g.difference.interval.value > 0.3 for g in gaps.values())
    # the type mean is the mean of the task retentions
    t = report.types["last:2/10"][LIKELIHOOD]
    comps = report.comparisons["last:2/10"]
    assert t.retention.value == pytest.approx((comps["cls_a"].retention.value + comps["cls_b"].retention.value) / 2)


def test_gap_not_significant_when_both_types_fall_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = {"cls_a": binary(rng, 60, 0.7), "gen_a": binary(rng, 60, 0.7)}
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "p", {t: degrade(rng, v, 0.7) for t, v in base.items()}, drop=[9])
    report = build_report(load_runs([tmp_path]), iters=2000)
    gap = report.gaps["last:1/10"]
    assert not gap.significant and gap.difference.p.value > 0.05
    assert "not significant" in report.summary_lines()[-1]


def test_stderr_fallback_without_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = {"cls_a": binary(rng, 100, 0.8)}
    pruned = {"cls_a": degrade(rng, base["cls_a"], 0.7)}
    write_run(tmp_path / "base", base, samples=False)
    write_run(tmp_path / "p", pruned, drop=[8, 9], samples=False)
    report = build_report(load_runs([tmp_path]))
    c = report.comparisons["last:2/10"]["cls_a"]
    p, b = np.mean(pruned["cls_a"]), np.mean(base["cls_a"])
    se_p = np.std(pruned["cls_a"], ddof=1) / 10
    se_b = np.std(base["cls_a"], ddof=1) / 10
    se_r = math.sqrt(se_p**2 / b**2 + p**2 * se_b**2 / b**4)
    assert c.source == "stderr"
    assert c.retention.value == pytest.approx(p / b)
    assert c.retention.low == pytest.approx(p / b - 1.96 * se_r)
    assert c.retention.high == pytest.approx(p / b + 1.96 * se_r)
    assert c.delta.low == pytest.approx(p - b - 1.96 * math.hypot(se_p, se_b))


def test_zero_baseline_has_no_retention_and_is_noted(tmp_path: Path) -> None:
    write_run(tmp_path / "base", {"gen_a": [0.0] * 20, "cls_a": [1.0] * 10 + [0.0] * 10})
    write_run(tmp_path / "p", {"gen_a": [0.0] * 20, "cls_a": [1.0] * 5 + [0.0] * 15}, drop=[9])
    report = build_report(load_runs([tmp_path]), iters=300)
    assert report.comparisons["last:1/10"]["gen_a"].retention.value is None
    assert report.comparisons["last:1/10"]["cls_a"].retention.value == pytest.approx(0.5)
    assert any("gen_a" in n for n in report.notes)
    assert GENERATIVE not in report.types["last:1/10"]


def test_no_unpruned_run_is_a_clear_error(tmp_path: Path) -> None:
    write_run(tmp_path / "p", {"cls_a": [1.0, 0.0]}, drop=[9])
    with pytest.raises(ReportError, match="none of the runs is unpruned"):
        build_report(load_runs([tmp_path]))


def test_report_cli_writes_tables_plots_and_summary(sweep_like: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base_vals = json.loads(json.dumps([1.0] * 300 + [0.0] * 100))
    healed = {
        "cls_a": degrade(rng, base_vals, 0.99),
        "cls_b": degrade(rng, base_vals, 0.9),
        "gen_a": degrade(rng, base_vals, 0.5),
    }
    write_run(sweep_like / "healed", healed, drop=[8, 9], recovery={"recipe": "demo-selfgen-lora"})
    out = tmp_path / "rep"
    proc = subprocess.run(
        [str(BIN / "lmeval-prune"), "report", str(sweep_like), "--out", str(out), "--bootstrap", "500"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "largest ratio with retention >= 90%" in proc.stdout
    md = (out / "report.md").read_text()
    assert "## Per task" in md and "### gen_a" in md and "last:2/10 healed" in md
    for png in ("retention.png", "retention_tasks.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / REPORT_JSON).read_text())
    # run paths are relative to the report's folder: a committed report names no local directory
    assert all(not Path(r["path"]).is_absolute() and (out / r["path"]).is_file() for r in data["runs"])
    healed_run = next(r for r in data["runs"] if r["healed"])
    assert healed_run["ratio"] == pytest.approx(0.2) and healed_run["method"] == "last"
    # --out naming one of the inputs' files: refused in one line, the file untouched
    results_file = next((sweep_like / "base").rglob("results_*.json"))
    before = results_file.read_bytes()
    onto = subprocess.run(
        [str(BIN / "lmeval-prune"), "report", str(sweep_like), "--out", str(results_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert onto.returncode == 2 and "is a file, not a folder" in onto.stderr and "Traceback" not in onto.stderr
    assert results_file.read_bytes() == before
    bad = subprocess.run(
        [str(BIN / "lmeval-prune"), "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "missing" in bad.stderr and "Traceback" not in bad.stderr


def test_recovery_against_the_unhealed_twin_and_between_recipes(tmp_path: Path) -> None:
    """Healing is read against the same layers removed unhealed, paired over items, and two recipes
    against each other; figures against an independent linearised interval."""
    rng = np.random.default_rng(11)
    n = 600
    base = {"cls_a": binary(rng, n, 0.8), "gen_a": binary(rng, n, 0.7)}
    pruned = {"cls_a": degrade(rng, base["cls_a"], 0.9), "gen_a": degrade(rng, base["gen_a"], 0.3)}
    # healing A wins back part of generation; B equals A on all but 6 items (no real difference)
    gen_a = np.maximum(pruned["gen_a"], degrade(rng, base["gen_a"], 0.5))
    gen_b = gen_a.copy()
    gen_b[:6] = 1 - gen_b[:6]
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "pruned", pruned, drop=[7, 8, 9])
    write_run(tmp_path / "heal-a", {**pruned, "gen_a": gen_a.tolist()}, drop=[7, 8, 9], recovery={"recipe": "A"})
    write_run(tmp_path / "heal-b", {**pruned, "gen_a": gen_b.tolist()}, drop=[7, 8, 9], recovery={"recipe": "B"})
    write_run(tmp_path / "other", pruned, drop=[1, 2, 3])  # other layers: not anyone's twin
    report = build_report(load_runs([tmp_path]), iters=4000)
    rec = {(r.recipe, r.kind): r for r in report.recovery}
    assert set(rec) == {(x, k) for x in "AB" for k in (LIKELIHOOD, GENERATIVE)}
    assert {r.pruned for r in report.recovery} == {"last:3/10 (pruned/embedded)"}  # not "other"
    r = rec["A", GENERATIVE]
    b, u, h = (np.asarray(v) for v in (base["gen_a"], pruned["gen_a"], gen_a))
    point, lo, hi = _paired_ratio_ci(h - u, b)
    assert r.change.value == pytest.approx(point) and r.before.value == pytest.approx(u.mean() / b.mean())
    assert r.change.low == pytest.approx(lo, abs=0.015) and r.change.high == pytest.approx(hi, abs=0.015)
    assert r.change.low > 0 and r.p.value < 0.001
    assert r.share_recovered == pytest.approx((h.mean() - u.mean()) / (b.mean() - u.mean()))
    # classification did not change: zero change, no interval width to speak of
    assert rec["A", LIKELIHOOD].change.value == pytest.approx(0.0)
    (c_gen,) = [c for c in report.contrasts if c.kind == GENERATIVE]
    assert {c_gen.first, c_gen.second} == {"last:3/10 healed (heal-a/embedded)", "last:3/10 healed (heal-b/embedded)"}
    assert c_gen.difference.low < 0 < c_gen.difference.high and c_gen.p.value > 0.05
    lines = "\n".join(report.summary_lines())
    assert "recovery at" in lines and "won back" in lines and "not significant" in lines
    # a pruned run that lost (almost) nothing has no share to win back: no division by next to nothing
    p = PValue(1, 200)
    nearly_whole = Recovery("h", "u", "A", GENERATIVE, Interval(0.99), Interval(1.2), Interval(0.21), p)
    assert nearly_whole.share_recovered is None
    assert Recovery(
        "h", "u", "A", GENERATIVE, Interval(0.5), Interval(1.1), Interval(0.6), p
    ).share_recovered == pytest.approx(1.2)


def test_tasks_limits_the_report_and_unknown_ones_are_named(sweep_like: Path) -> None:
    runs = load_runs([sweep_like])
    full = build_report(runs, iters=200)
    only = build_report(runs, iters=200, tasks=["gen_a", "cls_a"])
    assert only.tasks == ["cls_a", "gen_a"] and set(full.tasks) == {"cls_a", "cls_b", "gen_a"}
    label = "last:1/10"
    assert set(only.comparisons[label]) == {"cls_a", "gen_a"}
    # the type mean now covers only cls_a, and equals that task's retention
    assert only.types[label][LIKELIHOOD].retention.value == pytest.approx(
        full.comparisons[label]["cls_a"].retention.value
    )
    with pytest.raises(ReportError, match=r"no run scored task\(s\) gen_b; the runs hold: cls_a, cls_b, gen_a"):
        build_report(runs, tasks=["gen_b"])
