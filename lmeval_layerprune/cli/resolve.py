"""``lmeval-prune resolve``: which layers a drop spec removes from a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmeval_layerprune.core.embedded import resolve_pretrained
from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.core.spec import format_indices
from lmeval_layerprune.methods.capture import Calibration
from lmeval_layerprune.methods.resolve import resolve_drop


def register(sub: Any) -> None:
    p = sub.add_parser(
        "resolve",
        description="Resolve --drop against MODEL and print one JSON line: the model's layer count, the indices "
        "removed (of MODEL's own layers) as a list and as spec text, and the full plan (indices of the unpruned "
        "parent when MODEL is itself pruned). Specs other than bi:/angular: read only the config.",
    )
    p.add_argument("model", help="checkpoint directory, Hub id, or 'embedded'")
    p.add_argument(
        "--drop",
        required=True,
        help="drop spec, e.g. 20-25, 3+7, last:25%%, bi:8, angular:8, plan:PATH, plan:PATH@K",
    )
    p.add_argument("--calib", default=None, help="calibration file for bi:/angular: (default: bundled text)")
    p.set_defaults(func=_cmd_resolve)


def _cmd_resolve(args: argparse.Namespace) -> int:

    plan = resolve_drop(args.model, args.drop, calibration=Calibration.of(args.calib))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(resolve_pretrained(args.model)))
    parent = PruningPlan.from_config(config)
    local = plan.on_parent(parent)
    out = {
        "model": args.model,
        "num_layers": local.num_layers,
        "drop": list(local.drop),
        "spec": format_indices(local.drop),
        "plan": plan.to_dict(),
    }
    print(json.dumps(out))
    return 0
