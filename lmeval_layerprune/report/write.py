"""``lmeval-prune report``: read lm-eval runs, build the report, write its files.

Reads any lm-eval results through :mod:`lmeval_layerprune.lmeval.results` (a sweep folder, folders or
files of plain ``lm_eval`` runs) and writes into ``--out``:

* ``report.md``: a summary, the methods with their definitions, retention by task type, recovery
  with its cost, then a table per task (:mod:`.markdown`);
* ``retention.png`` / ``retention_tasks.png`` (and ``tradeoff.png`` with a bench result) (:mod:`.plots`);
* ``report.json``: every number of the report, the number of bootstrap resamples included.

What the numbers are is :mod:`.build` and :mod:`.stats`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lmeval_layerprune.core.guard import guard_output, owned_json
from lmeval_layerprune.core.layout import (
    BENCH_FILE,
    PLOT_FILE,
    REPORT_FILE,
    REPORT_JSON,
    TASK_PLOT_FILE,
    TRADEOFF_PLOT_FILE,
)
from lmeval_layerprune.errors import ReportError
from lmeval_layerprune.lmeval.results import load_runs
from lmeval_layerprune.report.build import Report, build_report
from lmeval_layerprune.report.markdown import TITLE, render_markdown
from lmeval_layerprune.report.plots import plot_retention, plot_tasks, plot_tradeoff
from lmeval_layerprune.report.stats import DEFAULT_BOOTSTRAP, DEFAULT_SEED
from lmeval_layerprune.speed.bench_result import load_bench


def _bench_beside(paths: Sequence[str | Path]) -> Path | None:
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
    result = load_bench(bench)
    for info in report.infos:
        if info.drop is None or info.merged:  # a bench measures dropped layers
            continue
        variant = result.variant(info.drop) if info.drop else result.parent
        if variant is None:
            continue
        batch = min(variant.batches) if variant.batches else None
        info.extras["speedup"] = 1.0 if not info.drop else variant.gain("decode_tps", batch)
    measured = [i for i in report.infos if i.extras.get("speedup")]
    if measured:
        report.notes.append(f"speed-ups: decode tokens/s against the parent, {result.conditions()}")


def _ours_md(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8").startswith(TITLE)
    except (OSError, UnicodeDecodeError):
        return False


def _guard_report_files(out: Path) -> None:
    """Refuse (before writing anything) an ``--out`` that is a file, or to replace a ``report.md`` /
    ``report.json`` this tool did not write."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder; name the folder the report should go into")
    for name, owned in ((REPORT_FILE, _ours_md), (REPORT_JSON, owned_json("runs", "summary"))):
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
