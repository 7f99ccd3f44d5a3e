"""``lmeval-prune cache``: list or clear the cache of materialized checkpoints."""

from __future__ import annotations

import argparse

from lmeval_layerprune.checkpoint.cache import cache_dir, cache_entries, clear_cache
from lmeval_layerprune.hub.push import human_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
    )
    p.add_argument("action", choices=["list", "clear"], help="list entries with sizes, or remove them all")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.action == "clear":
        print(f"removed {human_size(clear_cache())} from {cache_dir()}")
        return 0
    entries = cache_entries()
    print(f"cache: {cache_dir()} ({len(entries)} checkpoints, {human_size(sum(e['bytes'] for e in entries))})")
    for e in entries:
        plan = e["plan"]
        print(
            f"  {e['key']}  {human_size(e['bytes']):>10}  {plan.get('base_model')}  drop={plan.get('drop')}  "
            f"dtype={plan.get('dtype')}  writer={plan.get('writer')}"
        )
    return 0
