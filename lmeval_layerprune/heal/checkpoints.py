"""Trainer checkpoints of a heal run (``OUT/checkpoints/checkpoint-N``): which one a rerun resumes from.

A checkpoint counts once its ``trainer_state.json`` exists (Trainer writes it last); a complete one
whose weights or optimizer files are damaged (a full disk, a kill during a copy) is set aside with a
warning and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

from lmeval_layerprune.core.guard import check_weights
from lmeval_layerprune.errors import CorruptFileError

logger = logging.getLogger(__name__)


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` with a ``trainer_state.json`` (written last, so the checkpoint is whole)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file() and p.name[11:].isdigit()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a trainer checkpoint cannot be resumed from (unreadable state, weights or optimizer files), or None."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            return "trainer_state.json has no global_step"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"trainer_state.json is unreadable ({type(e).__name__})"
    try:
        check_weights(ckpt)
    except CorruptFileError as e:
        return str(e).split(";")[0]
    for path in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth"), *ckpt.glob("*.bin")]):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one lacks its directory
            return f"{path.name} is truncated or damaged"
    return None


def usable_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint that can be read; damaged newer ones are set aside with a warning."""
    while (ckpt := last_complete_checkpoint(folder)) is not None:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        aside = ckpt.with_name(f"damaged-{ckpt.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(ckpt, aside)
        msg = f"warning: {ckpt} is damaged ({problem}); set aside as {aside.name}, resuming from the one before"
        logger.warning(msg)
        print(f"heal: {msg}", flush=True)
    return None
