"""``lmeval-prune analyze``: layer-level views (skip profile, layer profiles, logit lens). The flags
are generated from :class:`lmeval_layerprune.report.analyze.AnalyzeSettings`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.errors import AnalyzeError
from lmeval_layerprune.report.analyze import LENS_TASK, AnalyzeSettings, analyze

HELP = {
    "model": "the unpruned model: checkpoint directory, Hub id, or 'embedded'",
    "out": "output folder",
    "tasks": "tasks of the skip profile, comma-separated",
    "limit": "items per task (and logit-lens prompts)",
    "drop": "drop spec of the pruned model shown beside the base",
    "healed": "a healed checkpoint shown beside the base",
    "views": "comma-separated views",
    "calib": "calibration file for the layer profiles",
    "dtype": "dtype to run the models in",
    "batch_size": "lm-eval batch size",
    "device": "device (default: lm-eval's choice)",
    "progress": "progress bars",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        description="Write CSV + PNG views into --out: skip_profile (every layer, layer 0 included, skipped alone: "
        "every metric of --tasks and the change in log-probability of the right answer), layer_profiles (block "
        "influence and angular distance per layer on calibration text, base / --drop / --healed side by side) "
        f"and logit_lens (on {LENS_TASK}'s prompts: at which depth the right first digit becomes the top token).",
    )
    add_dataclass_flags(p, AnalyzeSettings, help=HELP, exclude=("metadata",), positional=("model",))
    p.add_argument("--metadata", default=None, help="task metadata as JSON (as lm_eval --metadata)")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as e:
            raise AnalyzeError(f"--metadata {args.metadata!r} is not JSON: {e}") from None
    written = analyze(dataclass_from_args(AnalyzeSettings, args, metadata=metadata))
    for view, path in written.items():
        print(f"{view}: {path} (+ {path.with_suffix('.png').name})")
    return 0
