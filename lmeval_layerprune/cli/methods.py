"""``lmeval-prune methods``: the registered layer methods, their kind, definition and source."""

from __future__ import annotations

import argparse
import json
import textwrap

from lmeval_layerprune.methods.registry import registered_methods


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods",
        description="Every registered way to choose layers: its name (drop=NAME:K, select --method NAME, "
        "sweep --methods NAME), its kind (position, per-layer score, block score, greedy search), what it "
        "computes and where it comes from. Third-party methods registered through the "
        "'lmeval_layerprune.methods' entry-point group are listed too.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per method instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name, m in registered_methods().items():
        if args.json:
            fields = ("kind", "description", "definition", "citation", "url", "objective", "transform")
            print(json.dumps({"name": name, **{k: getattr(m, k) for k in fields}}))
            continue
        print(f"{name} ({m.kind}): {m.description}")
        for label, text in (("definition", m.definition), ("source", " ".join(filter(None, (m.citation, m.url))))):
            if text:
                print(textwrap.fill(f"{label}: {text}", 100, initial_indent="    ", subsequent_indent="      "))
    return 0
