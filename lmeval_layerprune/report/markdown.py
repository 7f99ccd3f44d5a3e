"""``report.md``: a :class:`~lmeval_layerprune.report.build.Report` as Markdown, one function per section."""

from __future__ import annotations

from collections.abc import Sequence

from lmeval_layerprune.report.build import MIN_LOSS, Report
from lmeval_layerprune.report.runs import RunInfo, cost_cells, dropped_twin
from lmeval_layerprune.report.stats import GENERATIVE, LIKELIHOOD, Interval, PValue

TITLE = "# Layer-pruning report"


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or ("---|" + "---:|" * (len(header) - 1))
    return "\n".join(["| " + " | ".join(header) + " |", "|" + align, *("| " + " | ".join(r) + " |" for r in rows)])


def _star(iv: Interval) -> str:
    return iv.fmt() + (" *" if iv.excludes_zero() else "")


def _intro(report: Report, plots: Sequence[str]) -> list[str]:
    refs = sorted(set(report.references.values()))
    out = [TITLE, ""]
    out.append(
        f"{len(report.infos)} runs; retention = score / unpruned score (reference: {', '.join(refs)}); a task "
        "type's retention is the mean of its tasks' retentions. 95% intervals: paired percentile bootstrap over "
        f"items ({report.iters} resamples, seed {report.seed}) where per-item samples exist, else lm-eval's "
        f"standard errors (BCa intervals beside them in report.json). p: two-sided bootstrap p-value from the same "
        f"{report.iters} resamples, shown to two significant digits; `p {PValue(0, report.iters).text}` when no "
        "resample crossed 0 (2/resamples: the smallest p they resolve)."
    )
    out += ["", "## Summary", ""]
    out += [f"- {line}" for line in report.summary_lines()] or ["- (no pruned runs)"]
    out += [f"- note: {note}" for note in report.notes]
    for p in plots:
        out += ["", f"![{p}]({p})"]
    return out


def _methods(report: Report) -> list[str]:
    if not report.methods:
        return []
    out = ["", "## Methods", ""]
    for name, m in report.methods.items():
        source = " ".join(filter(None, (m.get("citation"), f"<{m['url']}>" if m.get("url") else "")))
        line = f"- `{name}`: {m['description']}"
        line += f". Definition: {m['definition']}" if m.get("definition") else ""
        line += f". Source: {source}" if source else ""
        out.append(line)
    return out


def method_label(info: RunInfo, infos: list[RunInfo]) -> str:
    """``last``, ``last (healed)``, ``collapse (merged, not dropped; beside angular-0.1)``."""
    text = info.method
    if info.merged:
        twin = dropped_twin(info, infos)
        text += f" ({info.transform}d, not dropped" + (f"; beside {twin.label}" if twin else "") + ")"
    return text + (" (healed)" if info.healed else "")


def _types(report: Report) -> list[str]:
    agreement = any("token_agreement" in i.extras for i in report.infos)
    speed = any("speedup" in i.extras for i in report.infos)
    rows = []
    for info in report.infos:
        t = report.types.get(info.label, {})
        gap = report.gaps.get(info.label)
        row = [
            info.label,
            method_label(info, report.infos),
            f"{info.layers_removed}/{info.num_layers}" if info.layers_removed is not None else "?",
            f"{info.ratio:.2f}" if info.ratio is not None else "?",
            t[LIKELIHOOD].retention.fmt() if LIKELIHOOD in t else "-",
            t[GENERATIVE].retention.fmt() if GENERATIVE in t else "-",
            _star(gap.difference.interval) if gap else "-",
        ]
        if agreement:
            row.append(f"{info.extras['token_agreement']:.3f}" if "token_agreement" in info.extras else "-")
        if speed:
            row.append(f"{info.extras['speedup']:.2f}x" if info.extras.get("speedup") else "-")
        rows.append(row)
    header = ["run", "method", "removed", "ratio", "classification retention", "generative retention"]
    header += ["gap (cls - gen)", *(["token agreement"] if agreement else []), *(["decode speed-up"] if speed else [])]
    out = ["", "## Retention by task type", "", md_table(header, rows), "", "`*`: the gap's 95% interval excludes 0."]
    if any(i.merged for i in report.infos):
        out.append(
            "A merged run folds its removed layers into the kept layer before them (layer collapse; the same depth as "
            "dropping them)."
        )
    return out


def _recovery(report: Report) -> list[str]:
    out: list[str] = []
    if report.recovery:
        out += ["", "## Recovery", ""]
        out.append(
            "Each healed run against the same layers removed without healing; change in retention with its "
            "paired 95% bootstrap interval; won back: (healed - unhealed) / (1 - unhealed), the share of the "
            f"retention pruning lost (shown when it lost at least {MIN_LOSS:.2f}; above 100%: better than the parent). "
            "Cost, from the heal's record: trainable parameters (share of the model's), training tokens, "
            "training wall time (n/a: not recorded by the heal that made the run)."
        )
        out.append("")
        rows = [
            [
                r.healed,
                r.recipe or "?",
                r.kind,
                r.before.fmt(),
                r.after.fmt(),
                _star(r.change),
                r.p.text.lstrip("= "),
                f"{r.share_recovered:.0%}" if r.share_recovered is not None else "-",
                *cost_cells(r.cost),
            ]
            for r in report.recovery
        ]
        header = ["healed run", "recipe", "type", "unhealed", "healed", "change", "p", "won back"]
        out.append(md_table([*header, "trainable parameters", "training tokens", "training time"], rows))
    if report.contrasts:
        out += ["", "### Recipes compared (same layers removed)", ""]
        rows = [
            [
                f"{c.first} - {c.second}",
                c.kind,
                c.first_retention.fmt(),
                c.second_retention.fmt(),
                _star(c.difference),
                c.p.text.lstrip("= "),
            ]
            for c in report.contrasts
        ]
        out.append(md_table(["runs", "type", "first", "second", "difference", "p"], rows))
    if report.recovery or report.contrasts:
        out += ["", "`*`: the 95% interval excludes 0."]
    return out


def _per_task(report: Report) -> list[str]:
    out = ["", "## Per task", ""]
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
            n = str(c.n) if c.n is not None else "?"
            rows.append([info.label, f"{c.score:.3f}{se}", c.delta.fmt(), c.retention.fmt(), n, c.source or "-"])
        out.append(md_table(["run", "score ± stderr", "change [95% CI]", "retention [95% CI]", "n", "interval"], rows))
        out.append("")
    return out


def _every_metric(report: Report) -> list[str]:
    keys = sorted({k for v in report.every_metric.values() for k in v})
    labels = [i.label for i in report.infos]
    rows = [
        [k, *(f"{report.every_metric[lbl][k]:.3f}" if k in report.every_metric[lbl] else "-" for lbl in labels)]
        for k in keys
    ]
    return ["## Every metric", "", md_table(["task/metric", *labels], rows), ""]


def render_markdown(report: Report, plots: Sequence[str] = ()) -> str:
    """The whole ``report.md``: summary, plots, methods, retention by type, recovery, per task, every metric."""
    sections = (_intro(report, plots), _methods(report), _types(report), _recovery(report), _per_task(report))
    return "\n".join([line for section in sections for line in section] + _every_metric(report))
