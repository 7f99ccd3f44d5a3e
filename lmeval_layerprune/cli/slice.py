"""``lmeval-prune slice``: a standalone checkpoint with layers removed (mergekit passthrough, verified)."""

from __future__ import annotations

import argparse
from typing import Any

from lmeval_layerprune.checkpoint.materialize import materialize
from lmeval_layerprune.cli._hub import add_push_to_hub_arguments, check_push_to_hub, push_after
from lmeval_layerprune.core.layout import MERGEKIT_FILE
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.speed.bench import bench_checkpoint
from lmeval_layerprune.speed.bench_result import load_bench


def register(sub: Any) -> None:
    p = sub.add_parser(
        "slice",
        description="Write MODEL without the layers named by --drop to --out through mergekit's passthrough "
        "merge, leave the mergekit YAML and the plan (layer_pruning.json) beside it, and verify the result "
        "against the in-memory slice.",
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--drop", required=True, help="drop spec, e.g. 20-25, last:25%%, bi:8, plan:PATH, plan:PATH@K")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="default: the model's")
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular:")
    p.add_argument("--revision", default=None, help="Hub revision of MODEL")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--bench",
        action="store_true",
        help="also measure speed and memory against the parent (a short `lmeval-prune bench`) into "
        "OUT/layer_pruning_bench.json, which the model card then shows",
    )
    add_push_to_hub_arguments(p)
    p.set_defaults(func=_cmd_slice)


def _cmd_slice(args: argparse.Namespace) -> int:

    check_push_to_hub(args)
    out = materialize(
        args.model,
        args.drop,
        args.out,
        dtype=args.dtype,
        calibration=Calibration.of(args.calib),
        revision=args.revision,
        overwrite=args.overwrite,
    )
    plan = PruningPlan.load(out)
    print(
        f"wrote {out} (layers {list(plan.drop)} of {plan.num_layers} removed; "
        f"written by {plan.extra.get('writer')}; verified)"
    )
    print(f"mergekit config: {out / MERGEKIT_FILE}")
    print(f"evaluate it: lm_eval --model hf --model_args pretrained={out} --tasks arith_probe")
    if args.bench:
        print(load_bench(bench_checkpoint(out, parent=args.model)).summary())
    push_after(args, out)
    return 0
