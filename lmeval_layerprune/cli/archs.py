"""``lmeval-prune archs``: the supported architectures."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archs", help="list the supported architectures (model_type values)")
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    from ..arch import ARCHITECTURES

    width = max(map(len, ARCHITECTURES))
    for name, info in sorted(ARCHITECTURES.items()):
        extras = ", ".join([*info.lists, *info.index_lists, *info.thresholds])
        print(f"{name:<{width}}  layers at {info.layers}" + (f"; per-layer config: {extras}" if extras else ""))
    return 0
