"""``lmeval-prune card``: write a checkpoint's Hub model card (README.md). Most flags are generated
from :class:`lmeval_layerprune.hub.card.CardSettings`."""

from __future__ import annotations

import argparse
import sys

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.hub.card import RELATIONS, CardSettings, check_card, render
from lmeval_layerprune.hub.push import validate_repo

HELP = {
    "base_model": "Hub id of the unpruned parent (when the checkpoint records a path)",
    "license": "license id when the parent's card does not say (e.g. apache-2.0)",
    "base_model_relation": "default: finetune if healed, else merge",
    "bench": "a `lmeval-prune bench` result (file or folder) whose measured speed and memory the card shows "
    "(default: DIR/layer_pruning_bench.json when present)",
    "speedup": "override: a speed-up over the parent (e.g. 1.22)",
    "speedup_note": "how the speed-up was measured",
    "plot": "PNG of the layer selection (copied into DIR)",
}
#: the fields every command that writes a card names the parent's facts with (card, push)
SOURCE_FIELDS = ("base_model", "license")
#: fields with hand-made flags (nargs lists, --repo) or none (Python-only settings)
_MANUAL = ("results", "base_results", "pruned_results", "repo_id", "size_rows", "strict")


def add_card_source_args(p: argparse.ArgumentParser) -> None:
    """``--base-model`` and ``--license`` (card, push)."""
    exclude = [f for f in CardSettings.__dataclass_fields__ if f not in SOURCE_FIELDS]
    add_dataclass_flags(p, CardSettings, help=HELP, exclude=exclude)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        description="Render the model card of the pruned (or healed) checkpoint in DIR into DIR/README.md: "
        "metadata (base_model, license, tags, datasets, eval results) and a body with the removed layers, "
        "sizes, recovery recipe, base/pruned/healed scores, limitations and reproduction commands. A parent "
        "known only by a local path, or an unknown license, leaves those fields out with a warning; "
        "`lmeval-prune push` refuses such a card until --base-model / --license fill them.",
    )
    p.add_argument("dir", help="checkpoint folder written by `lmeval-prune slice` or `heal`")
    p.add_argument("--results", nargs="+", default=[], help="lm-eval results of this checkpoint (files or folders)")
    p.add_argument("--base-results", nargs="+", default=[], help="lm-eval results of the unpruned parent")
    p.add_argument(
        "--pruned-results", nargs="+", default=[], help="healed checkpoints: results of the pruned model before healing"
    )
    p.add_argument(
        "--repo",
        dest="repo_id",
        metavar="REPO",
        default=None,
        help="the Hub repository the card is for (NAMESPACE/NAME)",
    )
    add_dataclass_flags(p, CardSettings, help=HELP, exclude=_MANUAL, choices={"base_model_relation": RELATIONS})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.repo_id:
        validate_repo(args.repo_id)
    settings = dataclass_from_args(
        CardSettings, args, results=args.results, base_results=args.base_results, pruned_results=args.pruned_results
    )
    check_card(args.dir, settings.plot)  # a README.md or plot in the way: refused before anything is written
    result = render(args.dir, settings)
    path = result.save(args.dir)
    for w in result.warnings:
        print(f"lmeval-prune: warning: {w}", file=sys.stderr)
    print(f"wrote {path}")
    return 0
