"""``lmeval-prune push``: upload a checkpoint (only the files it needs) to the Hugging Face Hub."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from lmeval_layerprune.cli.card import add_card_source_args
    from lmeval_layerprune.hub import DRY_RUN_SUFFIX

    p = sub.add_parser(
        "push",
        description="Upload the checkpoint in DIR to the Hub repository --repo in one commit: weights, config, "
        "tokenizer, card, mergekit YAML, plan, recipe and plots, nothing else, with every path of this machine "
        "rewritten (the parent by its Hub id, plan files by the layer list). Creates the repository when "
        "missing and refuses to replace a model already there unless --revision, --create-pr or --overwrite "
        "says so. The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.",
    )
    p.add_argument("dir", help="checkpoint folder (README.md is written first when missing)")
    p.add_argument("--repo", required=True, help="target repository, NAMESPACE/NAME")
    p.add_argument("--private", action="store_true", help="create the repository private (when it is created)")
    p.add_argument("--revision", default=None, help="push to this branch (created when missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in the repository")
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="",
        default=None,
        metavar="FOLDER",
        help=f"write exactly what would be uploaded to FOLDER (default: DIR{DRY_RUN_SUFFIX}) and list it; "
        "contacts nothing",
    )
    p.add_argument("--message", default=None, help="commit message")
    add_card_source_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmeval_layerprune.hub import DRY_RUN_SUFFIX, push

    dry = None
    if args.dry_run is not None:
        dry = args.dry_run or str(Path(args.dir).expanduser().resolve()) + DRY_RUN_SUFFIX
    push(
        args.dir,
        args.repo,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        overwrite=args.overwrite,
        dry_run=dry,
        commit_message=args.message,
        base_model=args.base_model,
        license=args.license,
    )
    return 0
