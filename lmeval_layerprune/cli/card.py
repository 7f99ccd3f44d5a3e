"""``lmeval-prune card``: write a checkpoint's Hub model card (README.md)."""

from __future__ import annotations

import argparse
import sys


def add_card_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-model", default=None, help="Hub id of the unpruned parent (when the checkpoint records a path)"
    )
    p.add_argument("--license", default=None, help="license id when the parent's card does not say (e.g. apache-2.0)")


def register(sub: argparse._SubParsersAction) -> None:
    from lmeval_layerprune.hub import RELATIONS

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
    p.add_argument("--repo", default=None, help="the Hub repository the card is for (NAMESPACE/NAME)")
    add_card_source_args(p)
    p.add_argument(
        "--base-model-relation", choices=RELATIONS, default=None, help="default: finetune if healed, else merge"
    )
    p.add_argument(
        "--bench",
        default=None,
        help="a `lmeval-prune bench` result (file or folder) whose measured speed and memory the card shows "
        "(default: DIR/layer_pruning_bench.json when present)",
    )
    p.add_argument("--speedup", type=float, default=None, help="override: a speed-up over the parent (e.g. 1.22)")
    p.add_argument("--speedup-note", default=None, help="how the speed-up was measured")
    p.add_argument("--plot", default=None, help="PNG of the layer selection (copied into DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmeval_layerprune.hub import render, validate_repo

    if args.repo:
        validate_repo(args.repo)
    result = render(
        args.dir,
        results=args.results,
        base_results=args.base_results,
        pruned_results=args.pruned_results,
        repo_id=args.repo,
        base_model=args.base_model,
        license=args.license,
        base_model_relation=args.base_model_relation,
        speedup=args.speedup,
        speedup_note=args.speedup_note,
        bench=args.bench,
        plot=args.plot,
    )
    path = result.save(args.dir)
    for w in result.warnings:
        print(f"lmeval-prune: warning: {w}", file=sys.stderr)
    print(f"wrote {path}")
    return 0
