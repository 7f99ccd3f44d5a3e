"""``lmeval-prune report``: tables, intervals and plots of pruned runs against their parent."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from lmeval_layerprune.core.layout import PLOT_FILE, REPORT_FILE
from lmeval_layerprune.errors import ReportError
from lmeval_layerprune.report.stats import DEFAULT_BOOTSTRAP, DEFAULT_SEED, MIN_BOOTSTRAP
from lmeval_layerprune.report.write import write_report


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        description="Read lm-eval results (a sweep folder, or folders and results_*.json files of plain lm_eval "
        "runs, searched recursively) and write report.md, report.json, retention.png and retention_tasks.png "
        "into --out: per task, each run's score, change and retention against the unpruned run, with a paired "
        "bootstrap 95% interval over the items both scored (lm-eval's stderr when samples are absent); "
        "retention per task type (loglikelihood / multiple choice vs generate_until) against the fraction of "
        "layers removed, one line per method; and a summary: the largest ratio that keeps 90% retention, and "
        "whether the classification/generation gap is significant (two-sided bootstrap p-value from the same "
        "resamples, never shown finer than they resolve: 'p < 2/B' when none crosses 0).",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune report runs/smollm2                    # a sweep folder; writes into it
              lmeval-prune report base/ pruned/ healed/ --out report/   # plain lm_eval --output_path folders
              lmeval-prune report runs/recovery --tasks arith_probe_add_1d,arith_probe_mc_add_1d --out rep-add
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="results files or folders (searched recursively)")
    p.add_argument("--out", default=None, help="output folder (default: the first input folder)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help=f"bootstrap resamples (default: {DEFAULT_BOOTSTRAP}; p-values resolve 2/B)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default: {DEFAULT_SEED})")
    p.add_argument("--metric", default=None, help="metric to report for every task (default: each task's primary)")
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated leaf tasks to report, e.g. to leave out tasks scored near their floor "
        "(default: every task the runs scored)",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    p.add_argument(
        "--bench",
        default=None,
        help="a `lmeval-prune bench` result (file or folder) of the same parent: adds each run's measured "
        "decode speed-up and tradeoff.png, retention against speed-up (default: layer_pruning_bench.json "
        "inside an input folder)",
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    if args.bootstrap < MIN_BOOTSTRAP:
        raise ReportError(
            f"--bootstrap {args.bootstrap} is too few resamples for a 95% interval (use >= {MIN_BOOTSTRAP})"
        )
    report, out = write_report(
        args.runs,
        args.out,
        iters=args.bootstrap,
        seed=args.seed,
        metric=args.metric,
        plots=not args.no_plots,
        bench=args.bench,
        tasks=[t for t in args.tasks.split(",") if t.strip()] if args.tasks is not None else None,
    )
    print(f"report: {out / REPORT_FILE} ({len(report.infos)} runs, {len(report.tasks)} tasks)")
    if not args.no_plots:
        print(f"plot: {out / PLOT_FILE}")
    print("summary:")
    for line in report.summary_lines():
        print(f"  {line}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0
