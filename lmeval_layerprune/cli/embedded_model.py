"""``lmeval-prune embedded-model``: the embedded model's checkpoint folder."""

from __future__ import annotations

import argparse

from lmeval_layerprune.core.embedded import embedded_model_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embedded-model",
    )
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:

    print(embedded_model_dir())
    return 0
