"""The report of pruned runs against their parent: :func:`build_report` reads runs into a
:class:`Report` (every number; :mod:`.markdown`, :mod:`.plots` and :mod:`.write` turn it into
files; ``lmeval-prune report`` is :func:`lmeval_layerprune.report.write.write_report`).

Per task: score, change and retention (score / unpruned score) with a 95% interval per run
(:func:`.stats.compare`: a paired bootstrap over the items both runs scored, else lm-eval's
standard errors). Per task type: the mean of that type's task retentions (each task weighs the
same; not a ratio of pooled items), its interval from the same replicates; the
classification/generation gap is the difference of the two means, with its bootstrap interval and
two-sided bootstrap p-value (:class:`.stats.PValue`). Recovery is read the same way: each healed
run against the run that removed the same layers without healing (change in per-type retention,
paired over the same items, the share of the lost retention it won back, and what the recovery
cost: trainable parameters, training tokens, training time), and healed runs of the same layers by
different recipes against each other. A task whose unpruned score is 0 (or whose metric can be
negative) has no retention and is left out of the means (its change is still reported).

How runs are described (method, layers, healing, merged instead of dropped) is :mod:`.runs`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmeval_layerprune.errors import ReportError
from lmeval_layerprune.report.runs import RunInfo, cost_cells, describe_run, methods_used, order_runs, unique_labels
from lmeval_layerprune.report.stats import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_SEED,
    GENERATIVE,
    KINDS,
    LIKELIHOOD,
    Comparison,
    Difference,
    Interval,
    PValue,
    TypeSummary,
    compare,
    paired_difference,
    type_summary,
)

THRESHOLD = 0.9
#: the least retention lost (1 - unhealed) for which the share won back by healing is reported
MIN_LOSS = 0.05


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
    p: PValue
    change_bca: Interval | None = None
    cost: dict[str, float | None] = field(default_factory=dict)

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
    p: PValue
    difference_bca: Interval | None = None


def _comparable(types: dict[str, dict[str, TypeSummary]], a: RunInfo, b: RunInfo, kind: str) -> tuple | None:
    x, y = types.get(a.label, {}).get(kind), types.get(b.label, {}).get(kind)
    if x is None or y is None or x.tasks != y.tasks or x.retention.value is None or y.retention.value is None:
        return None
    return x, y


def _recovery(
    infos: list[RunInfo], types: dict[str, dict[str, TypeSummary]]
) -> tuple[list[Recovery], list[RecipeContrast]]:
    """Healed runs against their unhealed twin (same base, same layers, same transform), and against each other."""
    out: list[Recovery] = []
    pairs: list[RecipeContrast] = []
    healed = [i for i in infos if i.healed and i.layers_removed]
    for h in healed:
        twin = next((i for i in infos if not i.healed and i.layers_removed and i.layers_key() == h.layers_key()), None)
        if twin is None:
            continue
        for kind in KINDS:
            both = _comparable(types, h, twin, kind)
            if both is not None:
                d = paired_difference(*both)
                after, before = both[0].retention, both[1].retention
                out.append(Recovery(h.label, twin.label, h.recipe, kind, before, after, d.interval, d.p, d.bca, h.cost))
    for n, a in enumerate(healed):
        for b in healed[n + 1 :]:
            if a.layers_key() != b.layers_key():
                continue
            for kind in KINDS:
                both = _comparable(types, a, b, kind)
                if both is not None:
                    d = paired_difference(*both)
                    r1, r2 = both[0].retention, both[1].retention
                    pairs.append(RecipeContrast(a.label, b.label, kind, r1, r2, d.interval, d.p, d.bca))
    return out, pairs


@dataclass
class Gap:
    """Classification minus generative retention of one pruned run."""

    likelihood: float
    generative: float
    difference: Difference

    @property
    def significant(self) -> bool:
        return self.difference.interval.excludes_zero()


@dataclass
class Report:
    infos: list[RunInfo]
    references: dict[str, str]  # run label -> its reference's label
    comparisons: dict[str, dict[str, Comparison]]  # run label -> task -> comparison
    types: dict[str, dict[str, TypeSummary]]  # run label -> kind -> summary
    gaps: dict[str, Gap]  # run label -> gap
    tasks: list[str]
    every_metric: dict[str, dict[str, float]]
    iters: int
    seed: int
    notes: list[str] = field(default_factory=list)
    recovery: list[Recovery] = field(default_factory=list)
    contrasts: list[RecipeContrast] = field(default_factory=list)
    #: registered methods among the runs: name -> description, definition, citation, url
    methods: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """Per task type and method: the largest ratio with retention >= 90%; the gap's significance;
        recovery with its cost; recipes against each other."""
        lines = []
        for kind in KINDS:
            if any(kind in t for t in self.types.values()):
                lines += [self._threshold_line(kind, m) for m in self._pruning_methods()]
        for label, gap in self.gaps.items():
            d = gap.difference
            lines.append(
                f"gap at {label}: classification {gap.likelihood:.3f} vs generative {gap.generative:.3f}, "
                f"difference {d.interval.fmt()} ({_verdict(d.interval)} at 5%, bootstrap p {d.p.text})"
            )
        for r in self.recovery:
            share = f", {r.share_recovered:.0%} of the lost retention won back" if r.share_recovered is not None else ""
            lines.append(
                f"recovery at {r.healed} ({r.recipe or 'recipe unknown'}): {r.kind} retention "
                f"{r.before.value:.3f} unhealed -> {r.after.fmt()}, change {r.change.fmt()} "
                f"({_verdict(r.change)} at 5%, bootstrap p {r.p.text}){share}; cost: {cost_text(r.cost)}"
            )
        for c in self.contrasts:
            lines.append(
                f"{c.first} vs {c.second}: {c.kind} retention {c.first_retention.value:.3f} vs "
                f"{c.second_retention.value:.3f}, difference {c.difference.fmt()} ({_verdict(c.difference)} at 5%, "
                f"bootstrap p {c.p.text})"
            )
        return lines

    def _pruning_methods(self) -> list[str]:
        return sorted({i.method for i in self.infos if i.layers_removed and not i.healed})

    def _threshold_line(self, kind: str, method: str) -> str:
        """The largest ratio up to which ``method``'s retention of ``kind`` *stays* at or above 90%."""
        cells = sorted(
            (i for i in self.infos if i.method == method and not i.healed and i.ratio is not None),
            key=lambda i: i.ratio,  # type: ignore[arg-type, return-value]
        )
        best = None
        for info in cells:
            t = self.types.get(info.label, {}).get(kind)
            if t is None or t.retention.value is None:
                continue
            if t.retention.value < THRESHOLD:
                break
            best = (info, t)
        if best is None:
            tried = ", ".join(f"{i.ratio:.2f}" for i in cells)
            return f"{kind} / {method}: retention falls below 90% already at the smallest ratio ({tried})"
        info, t = best
        low = t.retention.low
        sure = (
            " (interval entirely above 90%)"
            if low is not None and low >= THRESHOLD
            else " (interval reaches below 90%)"
        )
        return (
            f"{kind} / {method}: largest ratio with retention >= 90%: {info.ratio:.2f} "
            f"({info.layers_removed} of {info.num_layers} layers), retention {t.retention.fmt()}{sure}"
        )

    def to_json(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Every number of the report; run paths relative to ``relative_to`` when given (the report's
        folder: a committed or shared report then names no local directory)."""

        def where(path: Path | None) -> str | None:
            if path is None:
                return None
            return os.path.relpath(path, relative_to) if relative_to is not None else str(path)

        return {
            "bootstrap": self.iters,
            "seed": self.seed,
            "p_value": "two-sided: twice the share of the resamples on the far side of 0; p_below: none crossed, "
            "p is then the resolution 2/resamples, an upper bound",
            "methods": self.methods,
            "runs": [self._run_json(info, where(info.run.path)) for info in self.infos],
            "recovery": [
                {
                    "healed": r.healed,
                    "unhealed": r.pruned,
                    "recipe": r.recipe,
                    "kind": r.kind,
                    "before": _iv(r.before),
                    "after": _iv(r.after),
                    "change": _iv(r.change),
                    "change_bca": _iv(r.change_bca),
                    **r.p.to_json(),
                    "share_recovered": r.share_recovered,
                    "cost": r.cost,
                }
                for r in self.recovery
            ],
            "recipe_contrasts": [
                {
                    "first": c.first,
                    "second": c.second,
                    "kind": c.kind,
                    "first_retention": _iv(c.first_retention),
                    "second_retention": _iv(c.second_retention),
                    "difference": _iv(c.difference),
                    "difference_bca": _iv(c.difference_bca),
                    **c.p.to_json(),
                }
                for c in self.contrasts
            ],
            "summary": self.summary_lines(),
            "notes": self.notes,
        }

    def _run_json(self, info: RunInfo, path: str | None) -> dict[str, Any]:
        gap = self.gaps.get(info.label)
        return {
            "label": info.label,
            "path": path,
            "base": info.base,
            "method": info.method,
            "transform": info.transform,
            "layers_removed": info.layers_removed,
            "num_layers": info.num_layers,
            "ratio": info.ratio,
            "healed": info.healed,
            "recipe": info.recipe,
            "cost": info.cost or None,
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
                    "delta": _iv(c.delta),
                    "retention": _iv(c.retention),
                    "retention_bca": _iv(c.retention_bca),
                    "interval": c.source,
                }
                for t, c in self.comparisons.get(info.label, {}).items()
            },
            "types": {
                k: {"retention": _iv(v.retention), "retention_bca": _iv(v.bca), "tasks": v.tasks}
                for k, v in self.types.get(info.label, {}).items()
            },
            "gap": {}
            if gap is None
            else {
                LIKELIHOOD: gap.likelihood,
                GENERATIVE: gap.generative,
                "gap": _iv(gap.difference.interval),
                "gap_bca": _iv(gap.difference.bca),
                **gap.difference.p.to_json(),
                "significant": gap.significant,
            },
        }


def _iv(x: Interval | None) -> dict[str, Any] | None:
    return asdict(x) if x is not None else None


def _verdict(iv: Interval) -> str:
    return "significant" if iv.excludes_zero() else "not significant"


def cost_text(cost: dict[str, float | None]) -> str:
    """``trainable parameters 1.2M (0.89%), training tokens 66k, training time 6.9 min``; n/a for what
    the recovery record does not hold (runs healed before it recorded its cost)."""
    params, tokens, seconds = cost_cells(cost)
    return f"trainable parameters {params}, training tokens {tokens}, training time {seconds}"


def _pick_reference(info: RunInfo, refs: list[RunInfo]) -> RunInfo | None:
    if not refs:
        return None
    same = [r for r in refs if r.base == info.base]
    return (same or refs)[0]


def _tasks(infos: list[RunInfo], tasks: Sequence[str] | None) -> list[str]:
    found: list[str] = sorted({t for i in infos for t in i.run.leaf_tasks})
    if tasks is None:
        return found
    unknown = [t for t in tasks if t not in found]
    if unknown or not tasks:
        raise ReportError(
            f"no run scored task(s) {', '.join(unknown) or '(none given)'}; the runs hold: {', '.join(found)}"
        )
    return [t for t in found if t in tasks]


def _compare_run(info: RunInfo, ref: RunInfo, tasks: list[str], metric: str | None, iters: int, seed: int) -> dict:
    comps: dict[str, Comparison] = {}
    for task in tasks:
        m = metric or info.run.primary_metric(task) or ref.run.primary_metric(task)
        if m is None:
            continue
        s = info.run.score(task, m)
        c = compare(info.run, ref.run, task, m, s.filter if s else None, iters=iters, seed=seed)
        if c is not None:
            comps[task] = c
    return comps


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
    infos = order_runs([describe_run(r) for r in runs])
    unique_labels(infos)
    refs = [i for i in infos if i.unpruned]
    if not refs:
        raise ReportError(
            "none of the runs is unpruned, so there is nothing to measure retention against; "
            "include the parent's run (a sweep's 'base' cell, or lm_eval on the unpruned model)"
        )
    notes = []
    if len({r.base for r in refs}) < len(refs):
        notes.append(f"several unpruned runs of one model: the first is the reference ({refs[0].label})")
    task_list = _tasks(infos, tasks)
    report = Report(infos, {}, {}, {}, {}, task_list, {}, iters, seed, notes, methods=methods_used(infos))
    for info in infos:
        ref = _pick_reference(info, refs)
        assert ref is not None
        report.references[info.label] = ref.label
        report.every_metric[info.label] = {f"{s.task}/{s.label}": s.value for s in info.run.scores}
        comps = _compare_run(info, ref, task_list, metric, iters, seed)
        report.comparisons[info.label] = comps
        by_kind: dict[str, TypeSummary] = {}
        for kind in KINDS:
            members = [c for c in comps.values() if c.kind == kind and c.retention.value is not None]
            if members:
                by_kind[kind] = type_summary(kind, members)
        report.types[info.label] = by_kind
        if info.layers_removed != 0 and LIKELIHOOD in by_kind and GENERATIVE in by_kind:
            a, g = by_kind[LIKELIHOOD], by_kind[GENERATIVE]
            report.gaps[info.label] = Gap(a.retention.value, g.retention.value, paired_difference(a, g))  # type: ignore[arg-type]
    no_ret = sorted({t for c in report.comparisons.values() for t, x in c.items() if x.retention.value is None})
    if no_ret:
        notes.append(
            "no retention (unpruned score 0, or a metric that can be negative), left out of the type means: "
            + ", ".join(no_ret)
        )
    report.recovery, report.contrasts = _recovery(infos, report.types)
    return report
