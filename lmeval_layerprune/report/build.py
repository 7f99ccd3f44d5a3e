"""Tables, intervals and plots of pruned runs against their parent: ``lmeval-prune report``.

Reads any lm-eval results through :mod:`lmeval_layerprune.lmeval.results` (a sweep folder, folders or
files of plain ``lm_eval`` runs) and writes into ``--out``:

* ``report.md``: a summary, then a table per task: score, change and retention (score /
  unpruned score) with a 95% interval per run;
* ``retention.png``: retention against the fraction of layers removed, one line per method,
  likelihood-scored (multiple choice, loglikelihood) and generative tasks in separate panels,
  healed runs marked, interval bands; ``retention_tasks.png``: the same per task;
* ``report.json``: every number of the report.

Intervals. With per-item samples (``--log_samples``; a sweep always writes them), the interval is
a paired percentile bootstrap: the items both runs scored are resampled together (the same draw
for the run and the unpruned reference, and for twin tasks over the same documents such as
``arith_probe_add_1d`` / ``arith_probe_mc_add_1d``), ``B`` times with a fixed seed. Without samples
it falls back to lm-eval's standard errors (delta method, the two runs taken as independent). The
per-type retention is the mean over that type's tasks, its interval from the same replicates; the
classification/generation gap is the difference of the two means, with its bootstrap interval and a
two-sided bootstrap p-value. Recovery is read the same way: each healed run against the run that
removed the same layers without healing (change in per-type retention, paired over the same items,
and the share of the lost retention it won back), and healed runs of the same layers by different
recipes against each other (e.g. self-generated against original responses). A task whose
unpruned score is 0 (or whose metric can be negative) has no retention and is left out of the
means (its change is still reported).

Which run is a parent's unpruned reference, and which fraction each run removed, come from the
pruning plan lm-eval recorded (``config["layer_pruning"]``; a sweep's cells also carry
``config["sweep"]``), else from the ``layer_pruning`` record in a local checkpoint's ``config.json``;
a run without either counts as unpruned when its model arguments drop nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmeval_layerprune.core.layout import (
    PLAN_ATTR,
    PLOT_FILE,
    REPORT_FILE,
    REPORT_JSON,
    TASK_PLOT_FILE,
    TOKEN_AGREEMENT_FILE,
    TRADEOFF_PLOT_FILE,
)
from lmeval_layerprune.errors import ReportError

GENERATIVE = "generative"
LIKELIHOOD = "likelihood"
TYPE_LABELS = {LIKELIHOOD: "classification-style (loglikelihood / multiple choice)", GENERATIVE: "generative"}
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 1234
THRESHOLD = 0.9
#: the least retention lost (1 - unhealed) for which the share won back by healing is reported
MIN_LOSS = 0.05


# ------------------------------------------------------------------ the runs


@dataclass
class RunInfo:
    """What the report needs to know about one run."""

    run: Any
    label: str
    base: str | None
    method: str
    layers_removed: int | None
    num_layers: int | None
    healed: bool
    drop: list[int] | None
    extras: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None  # healed runs: the recovery recipe (sweep cell or plan's recovery record)

    @property
    def ratio(self) -> float | None:
        if self.layers_removed is None or not self.num_layers:
            return None
        return self.layers_removed / self.num_layers

    @property
    def unpruned(self) -> bool:
        return self.layers_removed == 0 and not self.healed


def _checkpoint_plan(run: Any) -> dict[str, Any] | None:
    """The ``layer_pruning`` record of a local checkpoint the run evaluated (``--model hf``)."""
    pretrained = run.model_args.get("pretrained")
    if not isinstance(pretrained, str):
        return None
    cfg = Path(pretrained).expanduser() / "config.json"
    try:
        plan = json.loads(cfg.read_text()).get(PLAN_ATTR) if cfg.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return plan if isinstance(plan, dict) else None


def _drops_nothing(run: Any) -> bool:
    drop = run.model_args.get("drop")
    return drop is None or str(drop).strip().lower() in ("", "none", "[]")


def describe_run(run: Any) -> RunInfo:
    """Method, layers removed and healing of ``run`` from its recorded plan (see the module doc)."""
    config = run.config or {}
    sweep = config.get("sweep") if isinstance(config.get("sweep"), dict) else None
    plan = run.plan or _checkpoint_plan(run)
    drop = [int(i) for i in plan["drop"]] if plan and isinstance(plan.get("drop"), list) else None
    num_layers = int(plan["num_layers"]) if plan and plan.get("num_layers") else None
    healed = bool((sweep or {}).get("healed") or (plan or {}).get("recovery"))
    if sweep:
        method = "none" if sweep.get("layers_removed") == 0 else str(sweep["method"])
        removed = int(sweep["layers_removed"])
        num_layers = int(sweep.get("num_layers") or num_layers or 0) or None
        label = str(sweep["cell"])
    elif drop is not None:
        removed = len(drop)
        method = "none" if removed == 0 else str(plan.get("method") or "explicit")
        label = "unpruned" if removed == 0 else f"{method}:{removed}/{num_layers}" + (" healed" if healed else "")
    elif _drops_nothing(run) and not healed:
        removed, method, label = 0, "none", "unpruned"
    else:
        removed, method, label = None, str(run.model_args.get("drop") or "?"), f"drop={run.model_args.get('drop')}"
    base = (plan or {}).get("base_model") or run.model
    recovery = (plan or {}).get("recovery") if isinstance((plan or {}).get("recovery"), dict) else {}
    recipe = (sweep or {}).get("recipe") or recovery.get("recipe") if healed else None
    return RunInfo(run, label, base, method, removed, num_layers, healed, drop, cell_extras(run), recipe)


def cell_extras(run: Any) -> dict[str, Any]:
    """Extra measurements stored beside a run's results: token agreement (``token_agreement.json``,
    written by ``sweep --token-agreement``). Hook for more (see docs/study.md)."""
    out: dict[str, Any] = {}
    if run.path is None:
        return out
    for folder in (run.path.parent, run.path.parent.parent):
        f = folder / TOKEN_AGREEMENT_FILE
        if f.is_file():
            try:
                out["token_agreement"] = float(json.loads(f.read_text())["agreement"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            break
    return out


def _unique_labels(infos: list[RunInfo]) -> None:
    seen: dict[str, int] = {}
    for info in infos:
        seen[info.label] = seen.get(info.label, 0) + 1
    for info in infos:
        if seen[info.label] > 1 and info.run.path is not None:
            info.label = f"{info.label} ({info.run.path.parent.parent.name}/{info.run.path.parent.name})"


# ----------------------------------------------------------------- intervals


@dataclass
class Interval:
    value: float | None
    low: float | None = None
    high: float | None = None

    def fmt(self, digits: int = 3) -> str:
        if self.value is None or not math.isfinite(self.value):
            return "-"
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def percentile_interval(reps: np.ndarray, value: float | None) -> Interval:
    """The point estimate with the 2.5 / 97.5 percentiles of the finite replicates."""
    if value is None or not math.isfinite(value):
        return Interval(None)
    finite = reps[np.isfinite(reps)]
    if finite.size < max(10, reps.size // 2):
        return Interval(value)
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return Interval(float(value), float(lo), float(hi))


def _family(task: str) -> str:
    """Twin tasks (``x_mc_y`` / ``x_y``, ``x_mc`` / ``x``) share a family and so a bootstrap draw."""
    return re.sub(r"_mc(?=_|$)", "", task)


def bootstrap_draws(key: str, n: int, iters: int, seed: int) -> np.ndarray:
    """``iters`` resamples of ``n`` item positions, the same for every call with the same key and n."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n])
    return rng.integers(0, n, size=(iters, n))


def _ratio(num: np.ndarray, den: np.ndarray, higher_is_better: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den if higher_is_better else den / num
    return np.where(np.isfinite(out), out, np.nan)


@dataclass
class Comparison:
    """One run's score of one task against the unpruned reference."""

    task: str
    metric: str
    kind: str
    score: float
    stderr: float | None
    base: float
    n: int | None
    delta: Interval
    retention: Interval
    source: str  # "paired bootstrap (n items)" / "stderr" / ""
    reps: np.ndarray | None = field(default=None, repr=False)  # retention replicates


def compare(
    run: Any,
    ref: Any,
    task: str,
    metric: str,
    filt: str | None,
    *,
    iters: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> Comparison | None:
    """Score, change and retention of ``run`` against ``ref`` on one task metric, with intervals."""
    s = run.score(task, metric, filt)
    b = ref.score(task, metric, filt)
    if s is None or b is None:
        return None
    kind = s.kind if hasattr(s, "kind") else (GENERATIVE if s.output_type == "generate_until" else LIKELIHOOD)
    hib = s.higher_is_better is not False
    ratio_ok = b.value > 0 and s.value >= 0
    x = run.items(task, metric=metric, filter=s.filter)
    y = ref.items(task, metric=metric, filter=b.filter)
    common = sorted(set(x) & set(y)) if x and y else []
    if common and ratio_ok:
        ratio_ok = min(min(x[i] for i in common), min(y[i] for i in common)) >= 0
    if len(common) >= 2:
        xp = np.fromiter((x[i] for i in common), float, len(common))
        xb = np.fromiter((y[i] for i in common), float, len(common))
        draws = bootstrap_draws(_family(task), len(common), iters, seed)
        mp, mb = xp[draws].mean(axis=1), xb[draws].mean(axis=1)
        point_p, point_b = float(xp.mean()), float(xb.mean())
        delta = percentile_interval(mp - mb, point_p - point_b)
        reps = _ratio(mp, mb, hib) if ratio_ok else None
        point_r = float(_ratio(np.array([point_p]), np.array([point_b]), hib)[0]) if ratio_ok else None
        retention = percentile_interval(reps, point_r) if reps is not None else Interval(None)
        source = f"paired bootstrap ({len(common)} items)"
    else:
        # no per-item values: lm-eval's standard errors, the runs taken as independent (delta method)
        se_p, se_b = s.stderr, b.stderr
        known = se_p is not None and se_b is not None
        d = s.value - b.value
        se_d = math.hypot(se_p, se_b) if known else None
        delta = Interval(d, d - 1.96 * se_d, d + 1.96 * se_d) if se_d is not None else Interval(d)
        reps = None
        if ratio_ok:
            num, den = (s.value, b.value) if hib else (b.value, s.value)
            r = num / den if den else None
            if r is not None and known:
                se_num, se_den = (se_p, se_b) if hib else (se_b, se_p)
                se_r = math.sqrt(se_num**2 / den**2 + num**2 * se_den**2 / den**4)
                retention = Interval(r, r - 1.96 * se_r, r + 1.96 * se_r)
                z = np.random.default_rng([seed, zlib.crc32(task.encode())]).standard_normal(iters)
                reps = r + se_r * z
            else:
                retention = Interval(r)
        else:
            retention = Interval(None)
        source = "stderr" if known else ""
    return Comparison(task, metric, kind, s.value, s.stderr, b.value, s.n, delta, retention, source, reps)


# --------------------------------------------------------------------- report


@dataclass
class TypeSummary:
    """Mean retention of one task type for one run, with its bootstrap interval."""

    kind: str
    retention: Interval
    tasks: list[str]
    reps: np.ndarray | None = field(default=None, repr=False)


def paired_difference(a: TypeSummary, b: TypeSummary) -> tuple[Interval, float]:
    """``a - b`` of two per-type retentions with its bootstrap interval and two-sided p-value.

    Paired: both come from the same resamples of the same items (see :func:`bootstrap_draws`), so
    the difference of the replicates is the replicate of the difference."""
    diff = a.retention.value - b.retention.value  # type: ignore[operator]
    if a.reps is None or b.reps is None or a.reps.shape != b.reps.shape:
        return Interval(diff), float("nan")
    with np.errstate(invalid="ignore"):
        d = a.reps - b.reps
    d = d[np.isfinite(d)]
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))) if d.size else float("nan")
    return percentile_interval(d, diff), p


def excludes_zero(iv: Interval) -> bool:
    return iv.low is not None and iv.high is not None and (iv.low > 0 or iv.high < 0)


@dataclass
class Recovery:
    """What healing bought one run on one task type, against the same layers removed unhealed."""

    healed: str
    pruned: str
    recipe: str | None
    kind: str
    before: Interval  # retention of the unhealed run
    after: Interval  # retention of the healed run
    change: Interval
    p: float

    @property
    def share_recovered(self) -> float | None:
        """The share of the retention lost to pruning that healing won back (1 = all of it; above 1:
        the healed run beats the parent). None when pruning lost less than :data:`MIN_LOSS`, where
        the ratio would divide by next to nothing."""
        b, a = self.before.value, self.after.value
        if a is None or b is None or 1 - b < MIN_LOSS:
            return None
        return (a - b) / (1 - b)


@dataclass
class RecipeContrast:
    """Two healed runs of the same removed layers, by different recipes, on one task type."""

    first: str
    second: str
    kind: str
    first_retention: Interval
    second_retention: Interval
    difference: Interval  # first - second
    p: float


def _recovery(
    infos: list[RunInfo], types: dict[str, dict[str, TypeSummary]]
) -> tuple[list[Recovery], list[RecipeContrast]]:
    """Healed runs against their unhealed twin (same base, same removed layers), and against each other."""
    out: list[Recovery] = []
    pairs: list[RecipeContrast] = []

    def key(i: RunInfo) -> tuple[Any, ...]:
        return (i.base, tuple(sorted(i.drop)) if i.drop is not None else (i.method, i.layers_removed))

    def comparable(a: RunInfo, b: RunInfo, kind: str) -> tuple[TypeSummary, TypeSummary] | None:
        x, y = types.get(a.label, {}).get(kind), types.get(b.label, {}).get(kind)
        if x is None or y is None or x.tasks != y.tasks or x.retention.value is None or y.retention.value is None:
            return None
        return x, y

    healed = [i for i in infos if i.healed and i.layers_removed]
    for h in healed:
        twin = next((i for i in infos if not i.healed and i.layers_removed and key(i) == key(h)), None)
        if twin is None:
            continue
        for kind in (LIKELIHOOD, GENERATIVE):
            both = comparable(h, twin, kind)
            if both is not None:
                change, p = paired_difference(*both)
                out.append(
                    Recovery(h.label, twin.label, h.recipe, kind, both[1].retention, both[0].retention, change, p)
                )
    for n, a in enumerate(healed):
        for b in healed[n + 1 :]:
            if key(a) != key(b):
                continue
            for kind in (LIKELIHOOD, GENERATIVE):
                both = comparable(a, b, kind)
                if both is not None:
                    diff, p = paired_difference(*both)
                    pairs.append(RecipeContrast(a.label, b.label, kind, both[0].retention, both[1].retention, diff, p))
    return out, pairs


@dataclass
class Report:
    infos: list[RunInfo]
    references: dict[str, str]  # run label -> its reference's label
    comparisons: dict[str, dict[str, Comparison]]  # run label -> task -> comparison
    types: dict[str, dict[str, TypeSummary]]  # run label -> kind -> summary
    gaps: dict[str, dict[str, Any]]  # run label -> gap record
    tasks: list[str]
    every_metric: dict[str, dict[str, float]]
    iters: int
    seed: int
    notes: list[str] = field(default_factory=list)
    recovery: list[Recovery] = field(default_factory=list)
    contrasts: list[RecipeContrast] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """Per task type and method: the largest ratio with retention >= 90%; the gap's significance."""
        lines = []
        methods = sorted({i.method for i in self.infos if i.layers_removed and not i.healed})
        for kind in (LIKELIHOOD, GENERATIVE):
            if not any(kind in t for t in self.types.values()):
                continue
            for m in methods:
                cells = sorted(
                    (i for i in self.infos if i.method == m and not i.healed and i.ratio is not None),
                    key=lambda i: i.ratio,
                )
                best = None
                for info in cells:  # the largest ratio up to which retention *stays* at or above 90%
                    t = self.types.get(info.label, {}).get(kind)
                    if t is None or t.retention.value is None:
                        continue
                    if t.retention.value < THRESHOLD:
                        break
                    best = (info, t)
                if best is None:
                    tried = ", ".join(f"{i.ratio:.2f}" for i in cells)
                    lines.append(f"{kind} / {m}: retention falls below 90% already at the smallest ratio ({tried})")
                else:
                    info, t = best
                    sure = (
                        " (interval entirely above 90%)"
                        if t.retention.low is not None and t.retention.low >= THRESHOLD
                        else " (interval reaches below 90%)"
                    )
                    lines.append(
                        f"{kind} / {m}: largest ratio with retention >= 90%: {info.ratio:.2f} "
                        f"({info.layers_removed} of {info.num_layers} layers), retention {t.retention.fmt()}{sure}"
                    )
        for label, gap in self.gaps.items():
            if gap.get("gap") is None:
                continue
            verdict = "significant" if gap["significant"] else "not significant"
            lines.append(
                f"gap at {label}: classification {gap[LIKELIHOOD]:.3f} vs generative {gap[GENERATIVE]:.3f}, "
                f"difference {gap['gap'].fmt()} ({verdict} at 5%, bootstrap p{_fmt_p(gap['p'], self.iters)})"
            )
        for r in self.recovery:
            verdict = "significant" if excludes_zero(r.change) else "not significant"
            share = f", {r.share_recovered:.0%} of the lost retention won back" if r.share_recovered is not None else ""
            lines.append(
                f"recovery at {r.healed} ({r.recipe or 'recipe unknown'}): {r.kind} retention "
                f"{r.before.value:.3f} unhealed -> {r.after.fmt()}, change {r.change.fmt()} "
                f"({verdict} at 5%, bootstrap p{_fmt_p(r.p, self.iters)}){share}"
            )
        for c in self.contrasts:
            verdict = "significant" if excludes_zero(c.difference) else "not significant"
            lines.append(
                f"{c.first} vs {c.second}: {c.kind} retention {c.first_retention.value:.3f} vs "
                f"{c.second_retention.value:.3f}, difference {c.difference.fmt()} ({verdict} at 5%, "
                f"bootstrap p{_fmt_p(c.p, self.iters)})"
            )
        return lines

    def to_json(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Every number of the report; run paths relative to ``relative_to`` when given (the report's
        folder: a committed or shared report then names no local directory)."""

        def iv(x: Interval) -> dict[str, Any]:
            return asdict(x)

        def where(path: Path | None) -> str | None:
            if path is None:
                return None
            return os.path.relpath(path, relative_to) if relative_to is not None else str(path)

        runs = []
        for info in self.infos:
            runs.append(
                {
                    "label": info.label,
                    "path": where(info.run.path),
                    "base": info.base,
                    "method": info.method,
                    "layers_removed": info.layers_removed,
                    "num_layers": info.num_layers,
                    "ratio": info.ratio,
                    "healed": info.healed,
                    "recipe": info.recipe,
                    "drop": info.drop,
                    "reference": self.references.get(info.label),
                    "extras": info.extras,
                    "tasks": {
                        t: {
                            "metric": c.metric,
                            "kind": c.kind,
                            "score": c.score,
                            "stderr": c.stderr,
                            "base": c.base,
                            "n": c.n,
                            "delta": iv(c.delta),
                            "retention": iv(c.retention),
                            "interval": c.source,
                        }
                        for t, c in self.comparisons.get(info.label, {}).items()
                    },
                    "types": {
                        k: {"retention": iv(v.retention), "tasks": v.tasks}
                        for k, v in self.types.get(info.label, {}).items()
                    },
                    "gap": {
                        k: (iv(v) if isinstance(v, Interval) else v) for k, v in self.gaps.get(info.label, {}).items()
                    },
                }
            )
        return {
            "bootstrap": self.iters,
            "seed": self.seed,
            "runs": runs,
            "recovery": [
                {
                    "healed": r.healed,
                    "unhealed": r.pruned,
                    "recipe": r.recipe,
                    "kind": r.kind,
                    "before": iv(r.before),
                    "after": iv(r.after),
                    "change": iv(r.change),
                    "p": r.p,
                    "share_recovered": r.share_recovered,
                }
                for r in self.recovery
            ],
            "recipe_contrasts": [
                {
                    "first": c.first,
                    "second": c.second,
                    "kind": c.kind,
                    "first_retention": iv(c.first_retention),
                    "second_retention": iv(c.second_retention),
                    "difference": iv(c.difference),
                    "p": c.p,
                }
                for c in self.contrasts
            ],
            "summary": self.summary_lines(),
            "notes": self.notes,
        }


def _fmt_p(p: float, iters: int) -> str:
    if not math.isfinite(p):
        return "=?"
    return f"<{1 / iters:.2g}" if p == 0 else f"={p:.3g}"


def _pick_reference(info: RunInfo, refs: list[RunInfo]) -> RunInfo | None:
    if not refs:
        return None
    same = [r for r in refs if r.base == info.base]
    return (same or refs)[0]


def build_report(
    runs: Sequence[Any],
    *,
    iters: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    metric: str | None = None,
    tasks: Sequence[str] | None = None,
) -> Report:
    """Compare every run with its unpruned reference (see the module docstring); ``tasks``: only
    these leaf tasks (default: every task any run scored)."""
    if not runs:
        raise ReportError("no lm-eval runs to report")
    infos = [describe_run(r) for r in runs]
    infos.sort(
        key=lambda i: (i.base or "", i.healed, i.method != "none", i.method, i.ratio if i.ratio is not None else 9)
    )
    _unique_labels(infos)
    refs = [i for i in infos if i.unpruned]
    if not refs:
        raise ReportError(
            "none of the runs is unpruned, so there is nothing to measure retention against; "
            "include the parent's run (a sweep's 'base' cell, or lm_eval on the unpruned model)"
        )
    notes = []
    if len({r.base for r in refs}) < len(refs):
        notes.append(f"several unpruned runs of one model: the first is the reference ({refs[0].label})")
    found: list[str] = []
    for i in infos:
        for t in i.run.leaf_tasks:
            if t not in found:
                found.append(t)
    found.sort()
    if tasks is not None:
        unknown = [t for t in tasks if t not in found]
        if unknown or not tasks:
            raise ReportError(
                f"no run scored task(s) {', '.join(unknown) or '(none given)'}; the runs hold: {', '.join(found)}"
            )
        found = [t for t in found if t in tasks]
    tasks = found
    comparisons: dict[str, dict[str, Comparison]] = {}
    references: dict[str, str] = {}
    types: dict[str, dict[str, TypeSummary]] = {}
    gaps: dict[str, dict[str, Any]] = {}
    every: dict[str, dict[str, float]] = {}
    for info in infos:
        ref = _pick_reference(info, refs)
        assert ref is not None
        references[info.label] = ref.label
        every[info.label] = {f"{s.task}/{s.label}": s.value for s in info.run.scores}
        comps: dict[str, Comparison] = {}
        for task in tasks:
            m = metric or info.run.primary_metric(task) or ref.run.primary_metric(task)
            if m is None:
                continue
            s = info.run.score(task, m)
            c = compare(info.run, ref.run, task, m, s.filter if s else None, iters=iters, seed=seed)
            if c is not None:
                comps[task] = c
        comparisons[info.label] = comps
        by_kind: dict[str, TypeSummary] = {}
        for kind in (LIKELIHOOD, GENERATIVE):
            members = [c for c in comps.values() if c.kind == kind and c.retention.value is not None]
            if not members:
                continue
            value = float(np.mean([c.retention.value for c in members]))
            reps = None
            if all(c.reps is not None for c in members):
                with np.errstate(invalid="ignore"):
                    reps = np.mean(np.stack([c.reps for c in members]), axis=0)
            by_kind[kind] = TypeSummary(
                kind,
                percentile_interval(reps, value) if reps is not None else Interval(value),
                [c.task for c in members],
                reps,
            )
        types[info.label] = by_kind
        if info.layers_removed != 0 and LIKELIHOOD in by_kind and GENERATIVE in by_kind:
            a, g = by_kind[LIKELIHOOD], by_kind[GENERATIVE]
            iv, p = paired_difference(a, g)
            gaps[info.label] = {
                LIKELIHOOD: a.retention.value,
                GENERATIVE: g.retention.value,
                "gap": iv,
                "p": p,
                "significant": excludes_zero(iv),
            }
    no_ret = sorted({t for c in comparisons.values() for t, x in c.items() if x.retention.value is None})
    if no_ret:
        notes.append(
            "no retention (unpruned score 0, or a metric that can be negative), left out of the type means: "
            + ", ".join(no_ret)
        )
    recovery, contrasts = _recovery(infos, types)
    return Report(infos, references, comparisons, types, gaps, tasks, every, iters, seed, notes, recovery, contrasts)


# ------------------------------------------------------------------- output


def _md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or ("---|" + "---:|" * (len(header) - 1))
    return "\n".join(["| " + " | ".join(header) + " |", "|" + align, *("| " + " | ".join(r) + " |" for r in rows)])


def render_markdown(report: Report, plots: Sequence[str] = ()) -> str:
    out = ["# Layer-pruning report", ""]
    refs = sorted(set(report.references.values()))
    out.append(
        f"{len(report.infos)} runs; retention = score / unpruned score (reference: {', '.join(refs)}). "
        f"95% intervals: paired bootstrap over items ({report.iters} resamples, seed {report.seed}) where "
        "per-item samples exist, else lm-eval's standard errors."
    )
    out += ["", "## Summary", ""]
    out += [f"- {line}" for line in report.summary_lines()] or ["- (no pruned runs)"]
    for note in report.notes:
        out.append(f"- note: {note}")
    for p in plots:
        out += ["", f"![{p}]({p})"]
    # retention by task type
    out += ["", "## Retention by task type", ""]
    rows = []
    for info in report.infos:
        t = report.types.get(info.label, {})
        gap = report.gaps.get(info.label)
        ratio = f"{info.ratio:.2f}" if info.ratio is not None else "?"
        rows.append(
            [
                info.label,
                info.method + (" (healed)" if info.healed else ""),
                f"{info.layers_removed}/{info.num_layers}" if info.layers_removed is not None else "?",
                ratio,
                t[LIKELIHOOD].retention.fmt() if LIKELIHOOD in t else "-",
                t[GENERATIVE].retention.fmt() if GENERATIVE in t else "-",
                gap["gap"].fmt() + (" *" if gap["significant"] else "") if gap else "-",
                *(
                    [f"{info.extras['token_agreement']:.3f}"]
                    if any("token_agreement" in i.extras for i in report.infos) and "token_agreement" in info.extras
                    else (["-"] if any("token_agreement" in i.extras for i in report.infos) else [])
                ),
            ]
        )
    header = [
        "run",
        "method",
        "removed",
        "ratio",
        "classification retention",
        "generative retention",
        "gap (cls - gen)",
    ]
    if any("token_agreement" in i.extras for i in report.infos):
        header.append("token agreement")
    if any("speedup" in i.extras for i in report.infos):
        header.append("decode speed-up")
        for info, row in zip(report.infos, rows, strict=True):
            speed = info.extras.get("speedup")
            row.append(f"{speed:.2f}x" if speed else "-")
    out.append(_md_table(header, rows))
    out.append("")
    out.append("`*`: the gap's 95% interval excludes 0.")
    if report.recovery:
        out += ["", "## Recovery", ""]
        out.append(
            "Each healed run against the same layers removed without healing; change in retention with its "
            "paired 95% bootstrap interval; won back: (healed - unhealed) / (1 - unhealed), the share of the "
            f"retention pruning lost (shown when it lost at least {MIN_LOSS:.2f}; above 100%: better than the parent)."
        )
        out.append("")
        rows = [
            [
                r.healed,
                r.recipe or "?",
                r.kind,
                r.before.fmt(),
                r.after.fmt(),
                r.change.fmt() + (" *" if excludes_zero(r.change) else ""),
                _fmt_p(r.p, report.iters).lstrip("="),
                f"{r.share_recovered:.0%}" if r.share_recovered is not None else "-",
            ]
            for r in report.recovery
        ]
        out.append(_md_table(["healed run", "recipe", "type", "unhealed", "healed", "change", "p", "won back"], rows))
    if report.contrasts:
        out += ["", "### Recipes compared (same layers removed)", ""]
        rows = [
            [
                f"{c.first} - {c.second}",
                c.kind,
                c.first_retention.fmt(),
                c.second_retention.fmt(),
                c.difference.fmt() + (" *" if excludes_zero(c.difference) else ""),
                _fmt_p(c.p, report.iters).lstrip("="),
            ]
            for c in report.contrasts
        ]
        out.append(_md_table(["runs", "type", "first", "second", "difference", "p"], rows))
    if report.recovery or report.contrasts:
        out += ["", "`*`: the 95% interval excludes 0."]
    # per task
    out += ["", "## Per task", ""]
    for task in report.tasks:
        first = next((c[task] for c in report.comparisons.values() if task in c), None)
        if first is None:
            continue
        out += [f"### {task}", "", f"{first.metric}, {first.kind}; unpruned {first.base:.3f}", ""]
        rows = []
        for info in report.infos:
            c = report.comparisons.get(info.label, {}).get(task)
            if c is None:
                continue
            se = f" ± {c.stderr:.3f}" if c.stderr is not None else ""
            rows.append(
                [
                    info.label,
                    f"{c.score:.3f}{se}",
                    c.delta.fmt(),
                    c.retention.fmt(),
                    str(c.n) if c.n is not None else "?",
                    c.source or "-",
                ]
            )
        out.append(_md_table(["run", "score ± stderr", "change [95% CI]", "retention [95% CI]", "n", "interval"], rows))
        out.append("")
    # every metric
    keys = sorted({k for v in report.every_metric.values() for k in v})
    labels = [i.label for i in report.infos]
    out += ["## Every metric", ""]
    rows = [
        [k, *(f"{report.every_metric[lbl][k]:.3f}" if k in report.every_metric[lbl] else "-" for lbl in labels)]
        for k in keys
    ]
    out.append(_md_table(["task/metric", *labels], rows))
    out.append("")
    return "\n".join(out)


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'lmeval-layerprune[plot]'") from None
    return plt


_STYLES = ["o-", "s-", "^-", "D-", "v-", "P-", "X-"]
_HEALED_MARKERS = ["*", "P", "X", "h"]


def _series(report: Report, get: Any) -> dict[str, list[tuple[float, Interval]]]:
    """method -> [(ratio, interval)] for pruned (not healed) runs, the reference at ratio 0 included."""
    lines: dict[str, list[tuple[float, Interval]]] = {}
    methods = sorted({i.method for i in report.infos if i.layers_removed and not i.healed})
    refs = [i for i in report.infos if i.unpruned]
    for m in methods:
        pts = []
        for info in [*refs[:1], *(i for i in report.infos if i.method == m and not i.healed)]:
            iv = get(info)
            if info.ratio is not None and iv is not None and iv.value is not None:
                pts.append((info.ratio, iv))
        lines[m] = sorted(pts, key=lambda p: p[0])
    return lines


def _draw(ax: Any, report: Report, get: Any, title: str) -> bool:
    drawn = False
    colors = {}
    for k, (m, pts) in enumerate(_series(report, get).items()):
        if len(pts) < 1:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1].value for p in pts]
        (line,) = ax.plot(xs, ys, _STYLES[k % len(_STYLES)], label=m, ms=4)
        colors[m] = line.get_color()
        lo = [p[1].low if p[1].low is not None else p[1].value for p in pts]
        hi = [p[1].high if p[1].high is not None else p[1].value for p in pts]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        drawn = True
    # healed runs: one marker per recipe, side by side around their ratio so the intervals stay readable
    recipes = list(dict.fromkeys(i.recipe for i in report.infos if i.healed))
    for info in report.infos:
        if not info.healed or info.ratio is None:
            continue
        iv = get(info)
        if iv is None or iv.value is None:
            continue
        c = colors.get(info.method, "k")
        err = None
        if iv.low is not None:
            err = [[max(iv.value - iv.low, 0)], [max(iv.high - iv.value, 0)]]
        k = recipes.index(info.recipe)
        x = info.ratio + (k - (len(recipes) - 1) / 2) * 0.008
        fmt = _HEALED_MARKERS[k % len(_HEALED_MARKERS)]
        ax.errorbar([x], [iv.value], yerr=err, fmt=fmt, ms=10, color=c, mec="k", label=f"{info.label}")
        drawn = True
    ax.axhline(THRESHOLD, color="grey", ls=":", lw=1)
    ax.axhline(1.0, color="grey", ls="-", lw=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("fraction of layers removed")
    ax.set_ylabel("retention (score / unpruned)")
    if drawn:
        ax.legend(fontsize=7)
    return drawn


def plot_retention(report: Report, path: Path) -> Path:
    """Retention per task type vs fraction removed: one panel per type, one line per method."""
    plt = _plt()
    kinds = [k for k in (LIKELIHOOD, GENERATIVE) if any(k in t for t in report.types.values())] or [LIKELIHOOD]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        n = max((len(t[kind].tasks) for t in report.types.values() if kind in t), default=0)
        _draw(
            ax,
            report,
            lambda i, kind=kind: (
                (report.types.get(i.label, {}).get(kind) or TypeSummary(kind, Interval(None), [])).retention
            ),
            f"{TYPE_LABELS[kind]}\n(mean over {n} tasks; 95% bootstrap band)",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tasks(report: Report, path: Path) -> Path:
    """Retention vs fraction removed for every task, one small panel each."""
    plt = _plt()
    tasks = [
        t for t in report.tasks if any(t in c and c[t].retention.value is not None for c in report.comparisons.values())
    ]
    if not tasks:
        tasks = report.tasks[:1]
    cols = min(4, max(1, len(tasks)))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax, task in zip(axes.flat, tasks, strict=False):
        kind = next((c[task].kind for c in report.comparisons.values() if task in c), LIKELIHOOD)
        _draw(
            ax,
            report,
            lambda i, task=task: (
                report.comparisons.get(i.label, {}).get(task).retention
                if task in report.comparisons.get(i.label, {})
                else None
            ),
            f"{task} ({'gen' if kind == GENERATIVE else 'cls'})",
        )
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bench_beside(paths: Sequence[str | Path]) -> Path | None:
    from lmeval_layerprune.core.layout import BENCH_FILE

    for p in paths:
        f = Path(p) / BENCH_FILE
        if f.is_file():
            return f
    return None


def attach_speedups(report: Report, bench: str | Path | None) -> None:
    """Put each run's measured decode speed-up (``extras["speedup"]``, at the bench's smallest batch)
    from a bench result whose variants removed the same parent layers; healed runs share their
    pruned shape's speed. Nothing happens without a bench result."""
    if bench is None:
        return
    from lmeval_layerprune.speed.bench_result import load_bench

    result = load_bench(bench)
    for info in report.infos:
        if info.drop is None:
            continue
        variant = result.variant(info.drop) if info.drop else result.parent
        if variant is None:
            continue
        batch = min(variant.batches) if variant.batches else None
        info.extras["speedup"] = 1.0 if not info.drop else variant.gain("decode_tps", batch)
    measured = [i for i in report.infos if i.extras.get("speedup")]
    if measured:
        report.notes.append(f"speed-ups: decode tokens/s against the parent, {result.conditions()}")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_tradeoff(report: Report, path: Path) -> Path:
    """Retention (with its interval) against measured decode speed-up, one point per run, one panel
    per task type; the Pareto front is drawn as a line."""
    plt = _plt()
    kinds = [k for k in (LIKELIHOOD, GENERATIVE) if any(k in t for t in report.types.values())] or [LIKELIHOOD]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        pts, labels = [], []
        for info in report.infos:
            summary = report.types.get(info.label, {}).get(kind)
            speed = info.extras.get("speedup")
            if summary is None or speed is None or summary.retention.value is None:
                continue
            iv = summary.retention
            err = None
            if iv.low is not None and iv.high is not None:
                err = [[max(iv.value - iv.low, 0)], [max(iv.high - iv.value, 0)]]
            ax.errorbar([speed], [iv.value], yerr=err, fmt="*" if info.healed else "o", ms=8 if info.healed else 5,
                        capsize=2, label=info.label)  # fmt: skip
            pts.append((float(speed), float(iv.value)))
            labels.append(info.label)
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax.axhline(THRESHOLD, color="grey", ls=":", lw=1)
        ax.set_title(f"{TYPE_LABELS[kind]}: what each unit of speed costs", fontsize=9)
        ax.set_xlabel("measured decode speed-up (x parent)")
        ax.set_ylabel("retention (score / unpruned)")
        if pts:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _guard_report_files(out: Path) -> None:
    """Refuse (before writing anything) an ``--out`` that is a file, or to replace a ``report.md`` /
    ``report.json`` this tool did not write."""
    from lmeval_layerprune.core.guard import guard_output, owned_json

    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder; name the folder the report should go into")

    def ours_md(path: Path) -> bool:
        try:
            return path.read_text(encoding="utf-8").startswith("# Layer-pruning report")
        except (OSError, UnicodeDecodeError):
            return False

    for name, owned in ((REPORT_FILE, ours_md), (REPORT_JSON, owned_json("runs", "summary"))):
        target = out / name
        if target.exists():
            guard_output(target, overwrite=True, owned=owned, what="report file", hint="name another --out")


def write_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    iters: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    metric: str | None = None,
    plots: bool = True,
    bench: str | Path | None = None,
    tasks: Sequence[str] | None = None,
) -> tuple[Report, Path]:
    """Read the runs under ``paths``, write ``report.md``, ``report.json`` and the plots into ``out``
    (default: the first input folder, or the folder of the first input file).

    ``bench``: a ``lmeval-prune bench`` result (file or folder); default: a
    ``layer_pruning_bench.json`` directly inside one of the input folders. With one, every run
    whose removed layers were measured gets its decode speed-up, and ``tradeoff.png`` plots
    retention against it (the Pareto front marked)."""
    from lmeval_layerprune.lmeval.results import load_runs

    if not paths:
        raise ReportError("give at least one results file or folder")
    runs = load_runs([Path(p) for p in paths])
    report = build_report(runs, iters=iters, seed=seed, metric=metric, tasks=tasks)
    attach_speedups(report, bench if bench is not None else _bench_beside(paths))
    if out is None:
        first = Path(paths[0])
        out = first if first.is_dir() else first.parent
    out = Path(out)
    _guard_report_files(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        plot_retention(report, out / PLOT_FILE)
        plot_tasks(report, out / TASK_PLOT_FILE)
        written = [PLOT_FILE, TASK_PLOT_FILE]
        if any("speedup" in i.extras for i in report.infos):
            plot_tradeoff(report, out / TRADEOFF_PLOT_FILE)
            written.append(TRADEOFF_PLOT_FILE)
    (out / REPORT_FILE).write_text(render_markdown(report, written))
    (out / REPORT_JSON).write_text(json.dumps(report.to_json(relative_to=out), indent=2, default=str) + "\n")
    return report, out
