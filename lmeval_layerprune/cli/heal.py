"""``lmeval-prune heal``: recovery finetuning of a pruned model.

The flags are generated from :class:`~lmeval_layerprune.heal.check.HealSettings` (``--recipe``,
``--base``, ``--out``, ``--drop``, ``--data``, ``--keep-adapter``, ``--keep-checkpoints``,
``--overwrite``, ``--no-verify``, ``--min-examples``), plus the most used ``SFTConfig`` fields, each
the override ``sft.KEY=VALUE``.
"""

from __future__ import annotations

import argparse

from accelerate import PartialState

from lmeval_layerprune.cli._hub import add_push_to_hub_arguments, check_push_to_hub, push_after
from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.heal.run import HealSettings, eval_command, heal
from lmeval_layerprune.speed.bench import bench_checkpoint
from lmeval_layerprune.speed.bench_result import load_bench

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
        "Overrides: SECTION.KEY=VALUE, e.g. sft.max_steps=20 lora.r=8 data=bundled budget.tokens=8192.",
        epilog="recipes: lmeval-prune recipes; multi-GPU: accelerate launch --config_file CONFIG "
        "-m lmeval_layerprune.cli heal ... (see recovery/README.md)",
    )
    add_dataclass_flags(p, HealSettings, exclude=("overrides", "progress", "callbacks"))
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


def overrides(args: argparse.Namespace) -> list[str]:
    """The positional overrides plus one ``sft.KEY=VALUE`` per SFT flag given."""
    extra = [
        f"sft.{name}={getattr(args, f'sft_{name}')}" for name in SFT_FLAGS if getattr(args, f"sft_{name}") is not None
    ]
    return [*args.overrides, *extra]


def run_heal(args: argparse.Namespace) -> int:
    check_push_to_hub(args)  # a bad repo id or a missing token fails before any training
    settings = dataclass_from_args(HealSettings, args, overrides=overrides(args))
    out = heal(settings)
    if not PartialState().is_main_process:
        return 0
    plan = PruningPlan.load(out)
    r = plan.recovery or {}
    cost = ""
    if r.get("trainable_parameters") is not None:
        cost = f", {r['trainable_parameters']:,} trainable parameters, {r['training_tokens']:,} tokens"
    print(
        f"healed checkpoint: {out} (recipe {r['recipe']}, {r['finetune']}, {r['steps']} steps{cost}; "
        f"layers {list(plan.drop)} of {plan.num_layers} removed)"
    )
    print(f"evaluate it: {eval_command(out, args.base, args.drop or plan.spec or '', args.keep_adapter)}")
    if args.bench:
        print(load_bench(bench_checkpoint(out, parent=args.base)).summary())
    push_after(args, out)
    return 0
