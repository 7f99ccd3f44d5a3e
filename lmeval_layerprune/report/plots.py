"""The report's plots: retention against the fraction of layers removed (per task type and per task)
and retention against measured speed-up; :func:`pyplot` is the package's one matplotlib import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmeval_layerprune.report.build import THRESHOLD, Report
from lmeval_layerprune.report.runs import RunInfo
from lmeval_layerprune.report.stats import GENERATIVE, LIKELIHOOD, TYPE_LABELS, Interval, TypeSummary


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display); a clear error without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'lmeval-layerprune[plot]'") from None
    return plt


def _line(info: RunInfo) -> str:
    """The line a pruned run belongs to: its method (merged runs apart from dropped ones)."""
    return info.method + (f" ({info.transform}d)" if info.merged else "")


_STYLES = ["o-", "s-", "^-", "D-", "v-", "P-", "X-"]
_HEALED_MARKERS = ["*", "P", "X", "h"]


def _series(report: Report, get: Any) -> dict[str, list[tuple[float, Interval]]]:
    """method -> [(ratio, interval)] for pruned (not healed) runs, the reference at ratio 0 included."""
    lines: dict[str, list[tuple[float, Interval]]] = {}
    methods = sorted({_line(i) for i in report.infos if i.layers_removed and not i.healed})
    refs = [i for i in report.infos if i.unpruned]
    for m in methods:
        pts = []
        for info in [*refs[:1], *(i for i in report.infos if _line(i) == m and not i.healed)]:
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
        c = colors.get(_line(info), "k")
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
    plt = pyplot()
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
    plt = pyplot()
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
    plt = pyplot()
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
