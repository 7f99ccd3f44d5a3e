"""``lmeval-prune``: thin command line over the modules of this package."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap

from .. import __version__
from ._shared import FlagParser, add_push_to_hub_arguments

#: One module per command under ``lmeval_layerprune/cli/``; each defines ``register(sub)``, which adds
#: its subparser (with ``set_defaults(func=...)``) to the ``lmeval-prune`` subcommands.
COMMAND_MODULES: tuple[str, ...] = (
    "embedded_model",
    "archs",
    "select",
    "card",
    "push",
    "cache",
    "demo",
    "selfgen",
    "heal",
    "sweep",
    "report",
)


def _cmd_eval(argv: list[str]) -> int:
    """Run lm-eval's own CLI with our models and tasks registered."""
    from lm_eval.__main__ import cli_evaluate

    from ..plugin import register

    register()
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
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
    from ._shared import check_push_to_hub, push_after

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


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(
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
    add_push_to_hub_arguments(p)
    p.set_defaults(func=_cmd_slice)

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
