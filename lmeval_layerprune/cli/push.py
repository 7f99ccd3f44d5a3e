"""``lmeval-prune push``: upload a checkpoint (only the files it needs) to the Hugging Face Hub. The
switches are generated from :class:`lmeval_layerprune.hub.push.PushSettings`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmeval_layerprune.cli._shared import add_dataclass_flags, dataclass_from_args
from lmeval_layerprune.cli.card import add_card_source_args
from lmeval_layerprune.hub import DRY_RUN_SUFFIX, PushSettings, push

HELP = {
    "private": "create the repository private (when it is created)",
    "revision": "push to this branch (created when missing)",
    "create_pr": "open a pull request instead of committing directly",
    "overwrite": "replace a model already in the repository",
}
#: fields with hand-made flags: --dry-run takes an optional folder, --message, the card's source
#: flags; the endpoint comes from HF_ENDPOINT
_MANUAL = ("dry_run", "endpoint", "commit_message", "base_model", "license")


def register(sub: argparse._SubParsersAction) -> None:
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
    add_dataclass_flags(p, PushSettings, help=HELP, exclude=_MANUAL)
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="",
        default=None,
        metavar="FOLDER",
        help=f"write exactly what would be uploaded to FOLDER (default: DIR{DRY_RUN_SUFFIX}) and list it; "
        "contacts nothing",
    )
    p.add_argument("--message", dest="commit_message", default=None, help="commit message")
    add_card_source_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dry = None
    if args.dry_run is not None:
        dry = args.dry_run or str(Path(args.dir).expanduser().resolve()) + DRY_RUN_SUFFIX
    push(args.dir, args.repo, dataclass_from_args(PushSettings, args, dry_run=dry))
    return 0
