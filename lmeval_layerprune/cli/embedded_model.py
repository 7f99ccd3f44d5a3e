"""``lmeval-prune embedded-model``: the embedded model's checkpoint folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embedded-model", help="print the embedded model's checkpoint directory (converts on first use)")
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from lmeval_layerprune.core.embedded import embedded_model_dir

    print(embedded_model_dir())
    return 0
