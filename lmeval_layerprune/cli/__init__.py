"""``lmeval-prune``: thin command line over the modules of this package."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from lmeval_layerprune import __version__
from lmeval_layerprune.cli._shared import FlagParser

#: One module per command under ``lmeval_layerprune/cli/``; each defines ``register(sub)``, which adds
#: its subparser (with ``set_defaults(func=...)``) to the ``lmeval-prune`` subcommands.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "eval",
    "sweep",
    "report",
    "analyze",
    "select",
    "resolve",
    "slice",
    "selfgen",
    "heal",
    "bench",
    "speculate",
    "card",
    "push",
    "cache",
    "archs",
    "embedded_model",
)


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(
        prog="lmeval-prune",
        description="Evaluate, choose, heal and ship depth-pruned LLMs with lm-evaluation-harness. "
        "Every long option is accepted with dashes or underscores (--max-steps / --max_steps).",
        epilog=textwrap.dedent(
            """\
            examples:
              lmeval-prune demo                                   # the main job on the embedded model
              lmeval-prune eval --model pruned-hf --model_args pretrained=embedded,drop=20-25 \\
                  --tasks arith_probe --limit 20 --device cpu     # exactly lm_eval's arguments
              lmeval-prune resolve embedded --drop last:25%       # which layers a spec removes
              lmeval-prune select embedded --method ppl --n 6 --out plan.json   # choose layers
              lmeval-prune slice embedded --drop 20-25 --out smollm2-pruned   # checkpoint via mergekit
              lmeval-prune heal --recipe demo-selfgen-lora --base embedded --out healed   # recovery
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
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":  # lm_eval's arguments, handed over unparsed
        from lmeval_layerprune.cli.eval import run

        return run(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    from lmeval_layerprune.errors import LayerPruneError

    try:
        return args.func(args)
    except (LayerPruneError, OSError, ValueError, ImportError) as e:
        print(f"lmeval-prune: error: {e}", file=sys.stderr)
        return 2
