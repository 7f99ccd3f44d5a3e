"""``lmeval-prune demo``: the main job (``./run.sh``)."""

from __future__ import annotations

import argparse

from lmeval_layerprune.demo import (
    DEMO_LIMIT,
    DEMO_METHODS,
    DEMO_MODEL,
    DEMO_RATIOS,
    DEMO_RECIPE,
    DEMO_TASKS,
    DemoSettings,
    run_demo,
)
from lmeval_layerprune.sweep.grid import parse_methods, parse_ratios


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        description="The study, small: sweep MODEL over --methods at --ratios on generative probes and their "
        "multiple-choice twins (one lm-eval run per cell on one loaded model), heal the first method's cell at "
        "the largest ratio with --recipe and evaluate it, write the report (retention with paired-bootstrap 95% "
        "intervals, the retention plot, the classification/generation gap) and the healed checkpoint's model "
        "card. Everything goes under --output-dir; rerunning reuses finished cells.",
    )
    p.add_argument("--model", default=DEMO_MODEL, help=f"model to evaluate (default: {DEMO_MODEL})")
    p.add_argument(
        "--methods", default=",".join(DEMO_METHODS), help=f"pruning methods (default: {','.join(DEMO_METHODS)})"
    )
    p.add_argument(
        "--ratios",
        default=",".join(f"{r:g}" for r in DEMO_RATIOS),
        help="fractions of the layers to remove; 0 (the unpruned baseline) is always added (default: 0,0.2)",
    )
    p.add_argument("--tasks", default=DEMO_TASKS, help=f"comma-separated lm-eval tasks (default: {DEMO_TASKS})")
    p.add_argument("--limit", type=float, default=DEMO_LIMIT, help=f"items per task (default: {DEMO_LIMIT})")
    p.add_argument("--recipe", default=DEMO_RECIPE, help=f"recovery recipe for the heal step (default: {DEMO_RECIPE})")
    p.add_argument("--no-heal", action="store_true", help="skip the heal step (evaluation and report only)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--batch-size", default="16", help="lm-eval batch size (default: 16)")
    p.add_argument("--output-dir", default="lmeval_layerprune_demo", help="where results, report and checkpoint go")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    settings = DemoSettings(
        model=args.model,
        tasks=tuple(t for t in args.tasks.split(",") if t),
        methods=parse_methods(args.methods),
        ratios=parse_ratios(args.ratios),
        limit=limit,
        heal_recipe=None if args.no_heal else args.recipe,
        output_dir=args.output_dir,
        device=args.device,
        batch_size=args.batch_size,
    )
    run_demo(settings)
    return 0
