"""``lmeval-prune analyze``: layer-level views (skip profile, layer profiles, logit lens)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    from lmeval_layerprune.report.analyze import LENS_TASK, VIEWS

    p = sub.add_parser(
        "analyze",
        description="Write CSV + PNG views into --out: skip_profile (every layer, layer 0 included, skipped alone: "
        "every metric of --tasks and the change in log-probability of the right answer), layer_profiles (block "
        "influence and angular distance per layer on calibration text, base / --drop / --healed side by side) "
        f"and logit_lens (on {LENS_TASK}'s prompts: at which depth the right first digit becomes the top token).",
    )
    p.add_argument("model", help="the unpruned model: checkpoint directory, Hub id, or 'embedded'")
    p.add_argument("--tasks", default=LENS_TASK, help=f"tasks of the skip profile (default: {LENS_TASK})")
    p.add_argument("--limit", type=float, default=None, help="items per task (and logit-lens prompts)")
    p.add_argument("--drop", default=None, help="drop spec of the pruned model shown beside the base")
    p.add_argument("--healed", default=None, help="a healed checkpoint shown beside the base")
    p.add_argument("--views", default=",".join(VIEWS), help=f"comma-separated views (default: {','.join(VIEWS)})")
    p.add_argument("--metadata", default=None, help="task metadata as JSON (as lm_eval --metadata)")
    p.add_argument("--calib", default=None, help="calibration file for the layer profiles")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", default="8")
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from lmeval_layerprune.errors import AnalyzeError
    from lmeval_layerprune.report.analyze import analyze

    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise AnalyzeError(f"--metadata {args.metadata!r} is not JSON: {e}") from None
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    written = analyze(
        args.model,
        args.out,
        tasks=[t for t in args.tasks.split(",") if t],
        limit=limit,
        drop=args.drop,
        healed=args.healed,
        views=[v for v in args.views.split(",") if v],
        metadata=metadata,
        calib=args.calib,
        dtype=args.dtype,
        batch_size=args.batch_size,
        device=args.device,
    )
    for view, path in written.items():
        print(f"{view}: {path} (+ {path.with_suffix('.png').name})")
    return 0
