"""``lmeval-prune heal`` and ``lmeval-prune recipes``: recovery finetuning of a pruned model."""

from __future__ import annotations

import argparse

from lmeval_layerprune.cli._hub import add_push_to_hub_arguments, check_push_to_hub, push_after
from lmeval_layerprune.heal.run import DEFAULT_MIN_EXAMPLES

#: TRL ``SFTConfig`` fields with a flag of their own (``--max-steps 20`` is ``sft.max_steps=20``),
#: spelled as TRL's CLI spells them; every other field is a ``sft.KEY=VALUE`` override.
SFT_FLAGS: dict[str, type] = {
    "learning_rate": float,
    "max_steps": int,
    "num_train_epochs": float,
    "per_device_train_batch_size": int,
    "gradient_accumulation_steps": int,
    "warmup_steps": int,
    "lr_scheduler_type": str,
    "max_length": int,
    "logging_steps": int,
    "save_steps": int,
    "seed": int,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heal",
        description="Build MODEL without the layers named by --drop, train it with RECIPE (a bundled name or a "
        "YAML file), merge the LoRA adapter (or keep it), and save a checkpoint whose config records the plan and "
        "the recipe. Rerunning the same command after an interruption resumes from the last checkpoint. "
        "Overrides: SECTION.KEY=VALUE, e.g. sft.max_steps=20 lora.r=8 data=bundled.",
        epilog="recipes: lmeval-prune recipes; multi-GPU: accelerate launch --config_file CONFIG "
        "-m lmeval_layerprune.cli heal ... (see recovery/README.md)",
    )
    p.add_argument("--recipe", required=True, help="bundled recipe name (see 'lmeval-prune recipes') or a .yaml path")
    p.add_argument("--base", required=True, help="the unpruned parent: checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--drop", default=None, help="drop spec (default: the recipe's), e.g. last:25%%, 20-25, plan:PATH")
    p.add_argument("--out", required=True, help="output folder (the healed checkpoint; also holds checkpoints)")
    p.add_argument(
        "--data", default=None, help="prompt source ('bundled', 'mixed', a file, a Hub id) or a selfgen JSONL"
    )
    p.add_argument("--keep-adapter", action="store_true", help="save the LoRA adapter instead of merging it")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep OUT/checkpoints after success")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier heal run in OUT (only a heal run) instead of resuming",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reloading the result and comparing logits")
    p.add_argument(
        "--min-examples",
        type=int,
        default=DEFAULT_MIN_EXAMPLES,
        help=f"refuse to train on fewer examples than this after filtering (default: {DEFAULT_MIN_EXAMPLES}; 0: none)",
    )
    p.add_argument(
        "--bench",
        action="store_true",
        help="also measure speed and memory against the parent (a short `lmeval-prune bench`) into "
        "OUT/layer_pruning_bench.json, which the model card then shows",
    )
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="recipe overrides")
    g = p.add_argument_group("training (TRL SFTConfig fields; the same as the override sft.KEY=VALUE)")
    for name, kind in SFT_FLAGS.items():
        g.add_argument(f"--{name}", dest=f"sft_{name}", type=kind, default=None, metavar=kind.__name__.upper())
    add_push_to_hub_arguments(p)
    p.set_defaults(func=run_heal)

    p = sub.add_parser(
        "recipes",
    )
    p.add_argument("--path", action="store_true", help="print the folder of bundled recipes and accelerate configs")
    p.set_defaults(func=run_recipes)


def overrides(args: argparse.Namespace) -> list[str]:
    """The positional overrides plus one ``sft.KEY=VALUE`` per SFT flag given."""
    extra = [
        f"sft.{name}={getattr(args, f'sft_{name}')}" for name in SFT_FLAGS if getattr(args, f"sft_{name}") is not None
    ]
    return [*args.overrides, *extra]


def run_heal(args: argparse.Namespace) -> int:
    from lmeval_layerprune.core.plan import PruningPlan
    from lmeval_layerprune.heal.run import eval_command, heal

    check_push_to_hub(args)  # a bad repo id or a missing token fails before any training
    out = heal(
        args.recipe,
        args.base,
        args.out,
        drop=args.drop,
        data=args.data,
        overrides=overrides(args),
        keep_adapter=args.keep_adapter,
        keep_checkpoints=args.keep_checkpoints,
        overwrite=args.overwrite,
        verify=not args.no_verify,
        min_examples=args.min_examples,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    plan = PruningPlan.load(out)
    r = plan.recovery or {}
    print(
        f"healed checkpoint: {out} (recipe {r['recipe']}, {r['finetune']}, {r['steps']} steps; "
        f"layers {list(plan.drop)} of {plan.num_layers} removed)"
    )
    print(f"evaluate it: {eval_command(out, args.base, args.drop or plan.spec or '', args.keep_adapter)}")
    if args.bench:
        from lmeval_layerprune.speed.bench import bench_checkpoint
        from lmeval_layerprune.speed.bench_result import load_bench

        print(load_bench(bench_checkpoint(out, parent=args.base)).summary())
    push_after(args, out)
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    from lmeval_layerprune.heal.recipe import list_recipes, recipes_dir

    if args.path:
        print(recipes_dir())
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes), default=10)
    for name, desc in recipes.items():
        print(f"{name:<{width}}  {desc}")
    print(f"\n(folder: {recipes_dir()}; accelerate configs in {recipes_dir() / 'accelerate'})")
    return 0
