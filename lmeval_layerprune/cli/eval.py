"""``lmeval-prune eval``: lm-eval's own CLI with our models and tasks registered.

Takes exactly ``lm_eval``'s arguments. One thing is added: a ``pruned-hf`` / ``pruned-vllm`` run
with ``--output_path OUT`` writes under ``OUT/<model>__drop-<layers>/`` (lm-eval's own layout
beneath it), so the runs of one parent with different layers removed never share a folder. The
layers are resolved from the config alone; ``bi:`` / ``angular:`` specs (which need the weights)
are named by their spec text instead (``drop-bi-8``).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.embedded import base_model_name
from lmeval_layerprune.lmeval.plugin import register as register_with_lm_eval
from lmeval_layerprune.methods.resolve import needs_model, parse_spec, resolve_drop

logger = logging.getLogger(__name__)

#: lm-eval models whose output folder is named after the layers removed
PRUNED_MODELS = ("pruned-hf", "pruned-vllm")


def register(sub: Any) -> None:
    """Add ``eval`` to the subcommands (its arguments are lm_eval's; ``main`` hands them over unparsed)."""
    p = sub.add_parser(
        "eval",
        add_help=False,
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda args: run(list(args.lm_eval_args)))


def run(argv: list[str]) -> int:
    """Run lm-eval's CLI on ``argv`` with our models and tasks registered."""

    register_with_lm_eval()
    sys.argv = ["lm-eval", *argv]
    try:
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging
    except ImportError:  # another lm-eval layout: its own entry point, the output path as given
        from lm_eval.__main__ import cli_evaluate

        cli_evaluate()
        return 0
    setup_logging()
    parser = HarnessCLI()
    args = parser.parse_args()
    if getattr(args, "output_path", None) and getattr(args, "model", None) in PRUNED_MODELS:
        args.output_path = str(run_output_path(args.output_path, args.model_args or {}))
        print(f"lmeval-prune: results go under {args.output_path}", file=sys.stderr, flush=True)
    parser.execute(args)
    return 0


def run_output_path(output_path: str | Path, model_args: dict[str, Any] | str) -> Path:
    """``output_path`` with the run's subfolder ``<model>__drop-<layers>`` inserted (before the file
    name when ``output_path`` names a ``.json`` file, as lm-eval allows)."""
    out = Path(output_path)
    name = run_folder_name(model_args)
    if out.suffix == ".json":
        return out.parent / name / out.name
    return out / name


def run_folder_name(model_args: dict[str, Any] | str) -> str:
    """``<model>__drop-<layers>`` for a pruned run, e.g. ``SmolLM2-135M-Instruct__drop-20-25``.

    ``<layers>`` are the resolved layers of the unpruned parent (config only, no weights read;
    ``none`` when nothing is removed); a ``bi:`` / ``angular:`` spec, which needs the weights to
    resolve, is named by its text.
    """

    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        model_args = simple_parse_args_string(model_args)
    pretrained = model_args.get("pretrained")
    if not isinstance(pretrained, str) or not pretrained:
        raise ValueError("--model_args has no pretrained=... (the checkpoint to evaluate)")
    spec = parse_spec(model_args.get("drop"))
    if needs_model(spec):
        layers = re.sub(r"[^A-Za-z0-9.+-]+", "-", spec.text.replace("%", "pct")).strip("-")
    else:
        plan = resolve_drop(pretrained, spec, revision=model_args.get("revision"))
        layers = plan.drop_text  # a pruned checkpoint evaluated as is: the layers its plan removed
    label = str(base_model_name(pretrained) or pretrained)
    label = Path(label.rstrip("/")).name if Path(label).expanduser().exists() else label.replace("/", "__")
    return f"{_safe(label)}__drop-{layers}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "model"
