"""``lmeval-prune archs``: per model type, whether layers can be pruned (table / inferred / unsupported)."""

from __future__ import annotations

import argparse

from lmeval_layerprune.core.arch import archs_listing, format_archs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "archs",
        description="For every causal-LM model type transformers knows (or the given model types / checkpoints), "
        "say whether layer pruning uses a table entry, infers the layer stack, or refuses, and why. Discovery "
        "builds each model on the meta device (no weights are read or allocated).",
    )
    p.add_argument("models", nargs="*", help="model types or checkpoint folders / Hub ids (default: all types)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    print(format_archs(archs_listing(args.models or None)))
    return 0
