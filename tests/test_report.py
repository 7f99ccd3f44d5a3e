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
    extra: dict | None = None,
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
    plan.update(extra or {})  # a plan's extras sit at its top level (PruningPlan.to_dict)
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


# ------------------------------------------------------------ p-values and BCa


def _strong_gap(tmp_path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(21)
    base = {"cls_a": binary(rng, n, 0.8), "gen_a": binary(rng, n, 0.8)}
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "p", {"cls_a": base["cls_a"], "gen_a": degrade(rng, base["gen_a"], 0.2)}, drop=[9])
    return tmp_path


def test_p_values_never_finer_than_their_resamples(tmp_path: Path) -> None:
    """No resample crosses 0: the p-value is reported as '< 2/B', in report.md, the summary and
    report.json (with the number of resamples), never as 0."""
    runs = load_runs([_strong_gap(tmp_path)])
    for iters in (1000, 10_000):
        report = build_report(runs, iters=iters)
        p = report.gaps["last:1/10"].difference.p
        assert (p.crossings, p.resamples, p.below_resolution) == (0, iters, True)
        assert p.text == f"< {2 / iters:g}" and p.resolution == 2 / iters
        assert f"bootstrap p < {2 / iters:g})" in "\n".join(report.summary_lines())
        gap = report.to_json()["runs"][1]["gap"]
        assert gap["p"] == 2 / iters and gap["p_below"] and gap["p_resamples"] == iters and gap["p_crossings"] == 0


def test_p_value_equals_an_independent_count_of_crossing_resamples(tmp_path: Path) -> None:
    """The gap's p is twice the share of the resamples on the far side of 0, counted here from the
    raw item values with the report's own draws; its interval is their percentile interval."""
    from lmeval_layerprune.report.stats import bootstrap_draws

    rng = np.random.default_rng(4)
    n, iters = 80, 4000
    base = {"cls_a": binary(rng, n, 0.7), "gen_a": binary(rng, n, 0.7)}
    pruned = {"cls_a": degrade(rng, base["cls_a"], 0.85), "gen_a": degrade(rng, base["gen_a"], 0.95)}
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "p", pruned, drop=[0])
    gap = build_report(load_runs([tmp_path]), iters=iters, seed=9).gaps["last:1/10"]
    reps = {}
    for t in base:
        x, b = np.array(pruned[t]), np.array(base[t])
        draws = bootstrap_draws(t, n, iters, 9)  # each task its own family: its own draw
        reps[t] = x[draws].mean(1) / b[draws].mean(1)
    d = reps["cls_a"] - reps["gen_a"]
    k = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    assert 0 < k < iters / 2  # a p-value with crossings: neither a bound nor 1
    assert gap.difference.p.crossings == k and gap.difference.p.value == pytest.approx(2 * k / iters)
    assert gap.difference.interval.low == pytest.approx(np.percentile(d, 2.5))
    assert gap.difference.p.mc_se == pytest.approx(2 * math.sqrt(k / iters * (1 - k / iters) / iters))


def test_p_value_text() -> None:
    from lmeval_layerprune.report.stats import PValue

    assert [PValue(0, b).text for b in (10_000, 2000, 3000, 20_000)] == ["< 0.0002", "< 0.001", "< 0.00067", "< 0.0001"]
    assert PValue(18, 10_000).text == "= 0.0036" and PValue(4100, 10_000).text == "= 0.82"
    assert PValue(5000, 10_000).text == "= 1.0" and PValue(0, 0).text == "=?"


def test_default_resamples_and_every_printed_p_at_or_above_resolution(sweep_like: Path, tmp_path: Path) -> None:
    import re

    from lmeval_layerprune.report.stats import DEFAULT_BOOTSTRAP
    from lmeval_layerprune.report.write import write_report

    assert DEFAULT_BOOTSTRAP >= 10_000
    report, out = write_report([sweep_like], tmp_path / "rep", plots=False)
    data = json.loads((out / REPORT_JSON).read_text())
    assert data["bootstrap"] == DEFAULT_BOOTSTRAP == report.iters
    text = (out / "report.md").read_text()
    printed = [float(x) for x in re.findall(r"\bp [<=] ([0-9.]+)", text)]
    assert printed and min(printed) >= 2 / DEFAULT_BOOTSTRAP
    for run in data["runs"]:
        if run["gap"]:
            assert run["gap"]["p"] >= 2 / DEFAULT_BOOTSTRAP and run["gap"]["p_resamples"] == DEFAULT_BOOTSTRAP


def test_bca_intervals_equal_scipy(tmp_path: Path) -> None:
    """BCa beside the percentile interval: per task (one paired sample) and per type (two
    independent families, each a paired sample of a generative task and its multiple-choice twin),
    against scipy.stats.bootstrap(method='BCa') within Monte Carlo error."""
    stats = pytest.importorskip("scipy.stats")
    from lmeval_layerprune.report.stats import Comparison, _paired, type_summary

    rng = np.random.default_rng(1)
    n = 30  # few items from a skewed distribution: BCa moves away from the percentile interval
    xb = rng.lognormal(0, 1.0, n)
    xp = rng.lognormal(0, 1.0, n) * 0.5 + xb * 0.3

    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return a.mean(axis) / b.mean(axis)

    _, percentile, _, _, bca = _paired(xp, xb, "fam", True, True, 40_000, 1)
    ref = stats.bootstrap((xp, xb), ratio, paired=True, n_resamples=40_000, method="BCa", rng=rng)
    assert bca.low == pytest.approx(ref.confidence_interval.low, rel=0.015)
    assert bca.high == pytest.approx(ref.confidence_interval.high, rel=0.015)
    assert bca.high - percentile.high > 0.08  # far more than the tolerance: a percentile interval would fail

    # per type: tasks "x_1" / "x_mc_1" share family x_1; "y_2" / "y_mc_2" share y_2 (other n)
    fams = {"x_1": 25, "y_2": 18}
    data, members = {}, []
    for fam, m in fams.items():
        base = rng.lognormal(0, 1.0, (2, m))
        run = rng.lognormal(0, 1.0, (2, m)) * 0.5 + base * 0.3
        data[fam] = np.stack([run, base])  # (run/base, twin, item)
        for k, task in enumerate((fam, fam.replace("_", "_mc_"))):
            delta, ret, reps, jack, b = _paired(run[k], base[k], fam, True, True, 40_000, 5)
            members.append(Comparison(task, "m", "generative", 0, None, 0, m, delta, ret, "", reps, jack, b))
    t = type_summary("generative", members)

    def mean_ratio(i1: np.ndarray, i2: np.ndarray, axis: int = -1) -> np.ndarray:
        """The type mean over resampled item positions of each family (the items as index samples)."""
        out = 0.0
        for fam, idx in (("x_1", i1.astype(int)), ("y_2", i2.astype(int))):
            for k in (0, 1):
                out = out + ratio(data[fam][0, k][idx], data[fam][1, k][idx])
        return out / 4

    samples = (np.arange(fams["x_1"], dtype=float), np.arange(fams["y_2"], dtype=float))
    ref = stats.bootstrap(samples, mean_ratio, n_resamples=40_000, method="BCa", rng=rng, vectorized=True)
    assert t.bca.low == pytest.approx(ref.confidence_interval.low, rel=0.015)
    assert t.bca.high == pytest.approx(ref.confidence_interval.high, rel=0.015)
    pct = stats.bootstrap(samples, mean_ratio, n_resamples=40_000, method="percentile", rng=rng, vectorized=True)
    assert t.retention.low == pytest.approx(pct.confidence_interval.low, rel=0.015)
    assert t.retention.high == pytest.approx(pct.confidence_interval.high, rel=0.015)
    assert t.retention.high - t.bca.high > 0.03  # BCa differs from the percentile interval by more than the tolerance


# ------------------------------------------------------ recovery cost, merged cells, methods


def _cost(trainable: int, tokens: int, seconds: float) -> dict:
    return {"trainable_parameters": trainable, "total_parameters": 1_000_000, "training_tokens": tokens,
            "train_seconds": seconds}  # fmt: skip


def test_recovery_table_carries_the_cost_of_each_recipe(tmp_path: Path) -> None:
    from lmeval_layerprune.report.markdown import render_markdown

    rng = np.random.default_rng(8)
    n = 200
    base = {"cls_a": binary(rng, n, 0.8), "gen_a": binary(rng, n, 0.7)}
    pruned = {t: degrade(rng, v, 0.5) for t, v in base.items()}
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "pruned", pruned, drop=[8, 9])
    healed = {t: np.maximum(pruned[t], degrade(rng, base[t], 0.6)).tolist() for t in base}
    rec_a = {"recipe": "lora", **_cost(12_345, 65_536, 412.0)}
    rec_b = {"recipe": "partial", **_cost(250_000, 65_536, 95.5)}
    write_run(tmp_path / "heal-a", healed, drop=[8, 9], recovery=rec_a)
    write_run(tmp_path / "heal-b", healed, drop=[8, 9], recovery=rec_b)
    write_run(tmp_path / "heal-old", healed, drop=[8, 9], recovery={"recipe": "older"})  # healed before costs
    report = build_report(load_runs([tmp_path]), iters=500)
    by_recipe = {(r.recipe, r.kind): r for r in report.recovery}
    assert by_recipe["lora", GENERATIVE].cost == {k: float(v) for k, v in _cost(12_345, 65_536, 412.0).items()}
    assert set(by_recipe["older", GENERATIVE].cost.values()) == {None}
    md = render_markdown(report)
    table = md.split("## Recovery")[1].split("\n\n")[2].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[-3:] == ["trainable parameters", "training tokens", "training time"]
    rows = {(c[1], c[2]): c for c in ([x.strip() for x in line.strip("|").split("|")] for line in table[2:])}
    change = by_recipe["lora", GENERATIVE].change
    # the cost sits on the same line as the paired change it bought
    assert rows["lora", GENERATIVE][5].startswith(change.fmt())
    assert rows["lora", GENERATIVE][-3:] == ["12.3k (1.23%)", "65.5k", "6.9 min"]
    assert rows["partial", LIKELIHOOD][-3:] == ["250k (25.00%)", "65.5k", "1.6 min"]
    assert rows["older", GENERATIVE][-3:] == ["n/a", "n/a", "n/a"]
    lines = [x for x in report.summary_lines() if x.startswith("recovery at") and "(partial)" in x]
    assert lines and all(
        "trainable parameters 250k (25.00%), training tokens 65.5k, training time 1.6 min" in x for x in lines
    )
    rec_json = report.to_json()["recovery"]
    assert {r["recipe"]: r["cost"]["training_tokens"] for r in rec_json} == {
        "lora": 65536.0,
        "partial": 65536.0,
        "older": None,
    }


def test_a_merged_cell_sits_beside_the_drop_of_the_same_layers(tmp_path: Path) -> None:
    """Layer collapse (plan ``extra.transform == "merge"``): same layers as a drop cell, merged; shown
    right after that cell and labelled; never the unhealed twin of a healed drop run."""
    from lmeval_layerprune.report.markdown import render_markdown
    from lmeval_layerprune.report.plots import plot_retention

    rng = np.random.default_rng(9)
    n = 120
    base = {"cls_a": binary(rng, n, 0.8), "gen_a": binary(rng, n, 0.7)}
    write_run(tmp_path / "base", base)
    for name, drop, keep, method in (("a", [4, 5], 0.6, "angular"), ("l", [8, 9], 0.5, "last")):
        write_run(tmp_path / name, {t: degrade(rng, v, keep) for t, v in base.items()}, drop=drop, method=method)
    merged = {t: degrade(rng, v, 0.8) for t, v in base.items()}
    write_run(tmp_path / "m", merged, drop=[4, 5], method="collapse", extra={"transform": "merge"})
    write_run(tmp_path / "h", merged, drop=[4, 5], method="angular", recovery={"recipe": "r"})
    report = build_report(load_runs([tmp_path]), iters=300)
    labels = [i.label for i in report.infos]
    assert labels.index("collapse:2/10 merged") == labels.index("angular:2/10") + 1
    info = report.infos[labels.index("collapse:2/10 merged")]
    assert info.merged and info.transform == "merge" and info.drop == [4, 5]
    # the healed angular run is compared with the dropped angular run, not with the merged one
    assert {r.pruned for r in report.recovery} == {"angular:2/10"}
    md = render_markdown(report)
    assert "| collapse:2/10 merged | collapse (merged, not dropped; beside angular:2/10) |" in md
    assert report.to_json()["runs"][labels.index("collapse:2/10 merged")]["transform"] == "merge"
    plot_retention(report, tmp_path / "r.png")  # its own line in the plot
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_report_names_each_method_with_its_registry_definition(sweep_like: Path) -> None:
    from lmeval_layerprune.methods.registry import get_method
    from lmeval_layerprune.report.markdown import render_markdown

    report = build_report(load_runs([sweep_like]), iters=200)
    last = get_method("last")
    assert report.methods == {
        "last": {"description": last.description, "definition": last.definition, "citation": last.citation,
                 "url": last.url},
    }  # fmt: skip
    assert f"- `last`: {last.description}. Definition: {last.definition}" in render_markdown(report)
    assert report.to_json()["methods"]["last"]["definition"] == last.definition
