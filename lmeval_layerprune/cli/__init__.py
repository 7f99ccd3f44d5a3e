"""``lmeval-prune``: thin command line over the modules of this package."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap

from .. import __version__, publish
from ..demo import DEMO_DROPS, DEMO_LIMIT, DEMO_MODEL, DEMO_RECIPE, DEMO_TASKS

#: One module per command under ``lmeval_layerprune/cli/``; each defines ``register(sub)``, which adds
#: its subparser (with ``set_defaults(func=...)``) to the ``lmeval-prune`` subcommands.
COMMAND_MODULES: tuple[str, ...] = ()


def _cmd_eval(argv: list[str]) -> int:
    """Run lm-eval's own CLI with our models and tasks registered."""
    from lm_eval.__main__ import cli_evaluate

    from ..plugin import register

    register()
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
    return 0


def _cmd_embedded_model(_args: argparse.Namespace) -> int:
    from ..embedded import embedded_model_dir

    print(embedded_model_dir())
    return 0


def _cmd_archs(_args: argparse.Namespace) -> int:
    from ..arch import ARCHITECTURES

    width = max(map(len, ARCHITECTURES))
    for name, info in sorted(ARCHITECTURES.items()):
        extras = ", ".join([*info.lists, *info.index_lists, *info.thresholds])
        print(f"{name:<{width}}  layers at {info.layers}" + (f"; per-layer config: {extras}" if extras else ""))
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from ..arch import num_layers
    from ..embedded import resolve_pretrained
    from ..spec import DropSpec, format_indices

    path = str(resolve_pretrained(args.model))
    spec = DropSpec.parse(args.drop)
    config = AutoConfig.from_pretrained(path)
    n = num_layers(config)
    if spec.needs_scores:
        from ..slicing import load_pruned_model

        model = load_pruned_model(path, spec, calib=args.calib)
        drop = model.config.layer_pruning["drop"]
    else:
        drop = spec.resolve(n)
    print(json.dumps({"model": args.model, "num_layers": n, "drop": list(drop), "spec": format_indices(drop)}))
    return 0


def _cmd_slice(args: argparse.Namespace) -> int:
    from ..materialize import MERGEKIT_FILE, PLAN_FILE, materialize
    from ..publish import check_push_to_hub, push_after

    check_push_to_hub(args)
    out = materialize(
        args.model,
        args.drop,
        args.out,
        dtype=args.dtype,
        calib=args.calib,
        revision=args.revision,
        overwrite=args.overwrite,
    )
    plan = json.loads((out / PLAN_FILE).read_text())
    print(f"wrote {out} (layers {plan['drop']} of {plan['num_layers']} removed; written by {plan['writer']}; verified)")
    print(f"mergekit config: {out / MERGEKIT_FILE}")
    print(f"evaluate it: lm_eval --model hf --model_args pretrained={out} --tasks arith_probe")
    push_after(args, out)
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from ..select import select_layers
    from ..spec import format_indices

    plan = select_layers(
        args.model,
        args.method,
        args.n,
        tasks=[t for t in args.tasks.split(",") if t],
        include_path=args.include_path,
        limit=args.limit,
        protect=[int(p) for p in args.protect.split(",") if p.strip()] if args.protect else [],
        selection_seed=args.selection_seed,
        calib=args.calib,
        dtype=args.dtype,
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
        journal=args.journal,
        plot=args.plot,
        race=args.race,
        exhaustive=args.exhaustive,
        chunk_size=args.chunk_size,
    )
    from ..select import describe_round

    print(f"{args.method}: remove layers {plan['drop']} of {plan['num_layers']} ({format_indices(plan['drop'])})")
    for r in plan.get("rounds", []):
        print(f"  {describe_round(plan, r)}")
    search = plan.get("search", {})
    if search.get("items_exhaustive"):
        print(
            f"  {search['mode']}: {search['items_evaluated']} of {search['items_exhaustive']} candidate items "
            f"evaluated, {search['stopped']} candidates stopped early"
        )
    for w in plan.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if args.out:
        print(f"plan: {args.out}   (use it as drop=plan:{args.out})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..materialize import cache_dir, cache_entries, clear_cache

    if args.action == "clear":
        print(f"removed {_human(clear_cache())} from {cache_dir()}")
        return 0
    entries = cache_entries()
    print(f"cache: {cache_dir()} ({len(entries)} checkpoints, {_human(sum(e['bytes'] for e in entries))})")
    for e in entries:
        plan = e["plan"]
        print(
            f"  {e['key']}  {_human(e['bytes']):>10}  {plan.get('base_model')}  drop={plan.get('drop')}  "
            f"dtype={plan.get('dtype')}  writer={plan.get('writer')}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmeval-prune",
        description="Evaluate, choose, heal and ship depth-pruned LLMs with lm-evaluation-harness.",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune demo                                   # the main job on the embedded model
              lmeval-prune eval --model pruned-hf --model_args pretrained=embedded,drop=20-25 \\
                  --tasks arith_probe --limit 20 --device cpu     # exactly lm_eval's arguments
              lmeval-prune resolve embedded --drop last:25%       # which layers a spec removes
              lmeval-prune slice embedded --drop 20-25 --out smollm2-pruned   # checkpoint via mergekit
              lmeval-prune cache list                             # materialized checkpoints
              lmeval-prune card smollm2-pruned --results out/ --base-results base/   # the Hub model card
              lmeval-prune push smollm2-pruned --repo me/smollm2-pruned        # upload (HF_TOKEN)
              lmeval-prune embedded-model                         # path of the embedded checkpoint
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser(
        "eval",
        help="run lm_eval with pruned-hf and the bundled tasks registered (takes exactly lm_eval's arguments)",
        add_help=False,
    )

    p = sub.add_parser("embedded-model", help="print the embedded model's checkpoint directory (converts on first use)")
    p.set_defaults(func=_cmd_embedded_model)

    p = sub.add_parser("archs", help="list the supported architectures (model_type values)")
    p.set_defaults(func=_cmd_archs)

    p = sub.add_parser("resolve", help="print the original layer indices a drop spec removes from a model")
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--drop", required=True, help="drop spec, e.g. 20-25, 3+7, last:25%%, bi:8, angular:8, plan:PATH")
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular: (default: bundled text)")
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser(
        "slice",
        help="write a standalone checkpoint with layers removed (mergekit passthrough, verified)",
        description="Write MODEL without the layers named by --drop to --out through mergekit's passthrough "
        "merge, leave the mergekit YAML beside it, and verify the result against the in-memory slice.",
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--drop", required=True, help="drop spec, e.g. 20-25, last:25%%, bi:8, plan:PATH")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="default: the model's")
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular:")
    p.add_argument("--revision", default=None, help="Hub revision of MODEL")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    publish.add_push_to_hub_argument(p)
    p.set_defaults(func=_cmd_slice)

    p = sub.add_parser(
        "select",
        help="choose layers to remove: greedy task-driven search, perplexity search, or one-pass metrics",
        description="Choose N layers to remove from MODEL and write a plan JSON usable as drop=plan:PATH. "
        "iterative: greedy search scored by lm-eval tasks on a selection split (a different generator seed); "
        "ppl: greedy search on calibration perplexity; bi / angular / last: one-pass metrics. "
        "Greedy searches are resumable: rerun the same command after an interruption.",
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--method", choices=["iterative", "ppl", "bi", "angular", "last"], default="iterative")
    p.add_argument("--n", type=int, default=8, help="how many layers to remove (default: 8)")
    p.add_argument("--tasks", default="arith_probe", help="lm-eval tasks/groups for iterative (default: arith_probe)")
    p.add_argument("--include-path", default=None, help="folder of extra lm-eval task YAMLs for --tasks")
    p.add_argument("--limit", type=int, default=100, help="items per task for iterative (default: 100)")
    p.add_argument(
        "--protect", default="0", help="greedy methods: comma-separated layers never removed (default: 0; '' for none)"
    )
    p.add_argument("--selection-seed", type=int, default=777, help="generator seed of the selection split")
    p.add_argument("--calib", default=None, help="calibration file for ppl/bi/angular")
    p.add_argument("--dtype", default="float32", help="dtype to run the model in (default: float32)")
    p.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size (default: 8)")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--out", default="plan.json", help="plan JSON to write (default: plan.json)")
    p.add_argument("--journal", default=None, help="resumable journal (default: <out>.journal.jsonl)")
    p.add_argument("--plot", default=None, help="PNG of the scores to write")
    p.add_argument(
        "--race",
        action="store_true",
        help="greedy methods: successive halving per round (all candidates on 1/9 of the items, "
        "the best third on 1/3, the best third of those on all); approximate: may differ from the exact plan",
    )
    p.add_argument(
        "--exhaustive",
        action="store_true",
        help="iterative: score every item of every candidate; by default a candidate stops as soon as it "
        "can no longer win (exact: the same plan, fewer items)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=8,
        help="iterative: items per task scored at a time, the early stop's granularity (default: 8)",
    )
    p.set_defaults(func=_cmd_select)

    publish.add_parsers(sub)

    p = sub.add_parser("cache", help="list or clear the cache of materialized checkpoints")
    p.add_argument("action", choices=["list", "clear"], help="list entries with sizes, or remove them all")
    p.set_defaults(func=_cmd_cache)

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
        help=f"drop spec of a pruned run; repeat for several (default: {' and '.join(DEMO_DROPS)})",
    )
    p.add_argument("--tasks", default=DEMO_TASKS, help=f"comma-separated lm-eval tasks (default: {DEMO_TASKS})")
    p.add_argument("--limit", type=float, default=DEMO_LIMIT, help=f"items per task (default: {DEMO_LIMIT})")
    p.add_argument("--recipe", default=DEMO_RECIPE, help=f"recovery recipe for the heal step (default: {DEMO_RECIPE})")
    p.add_argument("--no-heal", action="store_true", help="skip the heal step (evaluation only)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--batch-size", default="8", help="lm-eval batch size (default: 8)")
    p.add_argument("--output-dir", default="lmeval_layerprune_demo", help="where results, checkpoint and card go")
    p.set_defaults(func=_cmd_demo)

    from ..heal import add_parser as add_heal_parsers
    from ..selfgen import add_parser as add_selfgen_parser

    add_selfgen_parser(sub)
    add_heal_parsers(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return _cmd_eval(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    from ..spec import LayerPruneError

    try:
        return args.func(args)
    except (LayerPruneError, OSError, ValueError, ImportError) as e:
        print(f"lmeval-prune: error: {e}", file=sys.stderr)
        return 2
