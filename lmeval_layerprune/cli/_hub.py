"""``--push-to-hub REPO`` for the commands that write a checkpoint (``slice``, ``heal``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmeval_layerprune.errors import PublishError
from lmeval_layerprune.hub import get_token, push, validate_repo


def add_push_to_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """``--push-to-hub REPO``, ``--hub-private``, ``--license`` and ``--base-model`` for a command
    that writes a checkpoint (it must not declare ``--license`` / ``--base-model`` itself)."""
    g = parser.add_argument_group("upload after writing (like `lmeval-prune push`)")
    g.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the checkpoint with a generated card")
    g.add_argument("--hub-private", action="store_true", help="create the repository private")
    g.add_argument("--license", default=None, help="the license, if the parent's card has none")
    g.add_argument("--base-model", default=None, help="the parent's Hub id (when the model is a local path)")


def check_push_to_hub(args: argparse.Namespace) -> None:
    """Fail before the long work when ``--push-to-hub`` cannot succeed (bad repo id, no token)."""
    if getattr(args, "push_to_hub", None):
        validate_repo(args.push_to_hub)
        get_token()


def push_after(args: argparse.Namespace, out_dir: str | Path) -> Any:
    """Run the ``--push-to-hub`` upload for a command that just wrote ``out_dir``."""
    repo = getattr(args, "push_to_hub", None)
    if not repo:
        return None

    folder = Path(out_dir)
    try:
        return push(folder, repo, private=args.hub_private, base_model=args.base_model, license=args.license)
    except PublishError as e:
        raise PublishError(
            f"{e}\n(the checkpoint is in {folder}; push it later with `lmeval-prune push {folder} --repo {repo}`)"
        ) from None
