"""``lmeval-prune demo``: the main job (``./run.sh``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..demo import DEMO_DROPS, DEMO_LIMIT, DEMO_MODEL, DEMO_RECIPE, DEMO_TASKS

    p = sub.add_parser(
        "demo",
        help="main job: probe the embedded model unpruned, pruned two ways, and healed; write its model card",
        description="The whole pipeline, small: evaluate MODEL on the probe tasks unpruned and with each --drop spec, "
        "heal the first pruned model with a recovery recipe (self-generated responses + LoRA), evaluate it, write "
        "its model card, and print one table. Results go under --output-dir.",
    )
    p.add_argument("--model", default=DEMO_MODEL, help=f"model to evaluate (default: {DEMO_MODEL})")
    p.add_argument(
        "--drop",
        action="append",
        default=None,
        help="drop spec of a pruned run; repeat for several (default: "
        + " and ".join(DEMO_DROPS).replace("%", "%%")
        + ")",
    )
    p.add_argument("--tasks", default=DEMO_TASKS, help=f"comma-separated lm-eval tasks (default: {DEMO_TASKS})")
    p.add_argument("--limit", type=float, default=DEMO_LIMIT, help=f"items per task (default: {DEMO_LIMIT})")
    p.add_argument("--recipe", default=DEMO_RECIPE, help=f"recovery recipe for the heal step (default: {DEMO_RECIPE})")
    p.add_argument("--no-heal", action="store_true", help="skip the heal step (evaluation only)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--batch-size", default="8", help="lm-eval batch size (default: 8)")
    p.add_argument("--output-dir", default="lmeval_layerprune_demo", help="where results, checkpoint and card go")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DEMO_DROPS, run_demo

    run_demo(
        args.model,
        tasks=[t for t in args.tasks.split(",") if t],
        drops=args.drop or list(DEMO_DROPS),
        limit=args.limit,
        heal_recipe=None if args.no_heal else args.recipe,
        output_dir=args.output_dir,
        device=args.device,
        batch_size=args.batch_size,
    )
    return 0
