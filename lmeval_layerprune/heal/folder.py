"""The folder of a heal run (``OUT``): what this tool keeps there, and how the finished checkpoint replaces it.

While a run trains, ``OUT`` holds its state: ``heal_state.json`` (the settings a resume must match),
``selfgen_responses.jsonl`` with its ``.meta.json`` and ``.lock``, ``checkpoints/`` and ``.trainer-final/``.
The finished checkpoint is built beside ``OUT``, verified, marked complete (``HEAL_COMPLETE``) and
recorded in the manifest of written files, then swapped in whole
(:func:`~lmeval_layerprune.core.guard.replace_atomically`): a kill leaves the run in progress or the
finished checkpoint, never a mix. The run's own state is carried into the new folder as hard links
(copies where the file system has none), so nothing is moved out of ``OUT`` before the swap.

Because the swap replaces the folder as a whole, a file or folder the user put into ``OUT`` would be
lost: :func:`refuse_foreign_in_run` refuses, naming them, before any work (``--overwrite``, a
resume) and again before the swap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmeval_layerprune.core.guard import is_generated_card
from lmeval_layerprune.core.layout import (
    ADAPTER_FILES,
    CHECKPOINT_FILES,
    CHECKPOINTS,
    HEAL_COMPLETE,
    HEAL_STATE_FILE,
    LOCK_SUFFIX,
    META_SUFFIX,
    OTHER_COMMANDS_FILES,
    RECIPE_FILE,
    RESPONSES_FILE,
    TRAINER_FINAL,
)
from lmeval_layerprune.core.written import read_written, refuse_foreign
from lmeval_layerprune.heal.checkpoints import last_complete_checkpoint

#: the files of a run in progress (written without the manifest: appended to, or by the trainer)
RUN_FILES = (HEAL_STATE_FILE, RESPONSES_FILE, RESPONSES_FILE + META_SUFFIX, RESPONSES_FILE + LOCK_SUFFIX)
#: the folders of a run in progress (``.final-tmp``: the staging folder of versions before the swap)
RUN_FOLDERS = (CHECKPOINTS, TRAINER_FINAL, ".final-tmp")
#: what a finished heal run held before the manifest of written files existed
LEGACY_FILES = (*CHECKPOINT_FILES, *ADAPTER_FILES, "training_args.bin", RECIPE_FILE, HEAL_COMPLETE)
#: what the state of a run is carried into the finished checkpoint (``checkpoints/`` too when kept)
CARRIED = (HEAL_STATE_FILE, RESPONSES_FILE, RESPONSES_FILE + META_SUFFIX)


def _run_folder(path: Path) -> bool:
    return path.name in RUN_FOLDERS and path.is_dir() and not path.is_symlink()


def _owned(path: Path) -> bool:
    return _run_folder(path) or is_generated_card(path)


def refuse_foreign_in_run(out: Path, *, why: str) -> None:
    """Refuse (changing nothing) when the heal folder ``out`` holds what this tool did not write, naming it."""
    if not out.is_dir():
        return
    known = (*RUN_FILES, *OTHER_COMMANDS_FILES)
    if not read_written(out):
        known += LEGACY_FILES
    refuse_foreign(out, known=known, owned=_owned, why=why)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: a copy
        shutil.copy2(src, dst)
    return dst


def carry_state(out: Path, tmp: Path, *, checkpoints: bool) -> None:
    """Link the run's own state (and ``checkpoints/`` when kept) from ``out`` into the new folder ``tmp``."""
    for name in CARRIED:
        src = out / name
        if src.is_file() and not src.is_symlink():
            _link_or_copy(str(src), str(tmp / name))
    if checkpoints and _run_folder(out / CHECKPOINTS):
        shutil.copytree(out / CHECKPOINTS, tmp / CHECKPOINTS, symlinks=True, copy_function=_link_or_copy)


def previous(out: Path) -> Path:
    """Where ``--overwrite`` sets the earlier run aside until the new one is complete."""
    return out.with_name(f".{out.name}.heal-previous")


def kept_in(out: Path) -> str:
    """What an interrupted heal run has kept (read from disk when the interrupt comes)."""
    if (out / HEAL_COMPLETE).is_file():
        kept = f"the healed checkpoint in {out} is complete"
    elif (ckpt := last_complete_checkpoint(out / CHECKPOINTS)) is not None:
        kept = f"training checkpoint {ckpt.name} kept in {out / CHECKPOINTS}"
    elif (out / RESPONSES_FILE).is_file():
        kept = f"no training checkpoint yet; the generated responses are kept in {out / RESPONSES_FILE}"
    elif (out / HEAL_STATE_FILE).is_file():
        kept = f"no training checkpoint saved yet; the run's settings are kept in {out}"
    else:
        kept = f"nothing was written ({out} is as it was)"
    if previous(out).exists():
        kept += f"; the earlier run stays set aside as {previous(out)} until this one completes"
    return kept


def resume_hint(out: Path, overwrite: bool) -> str:
    """How an interrupted heal run resumes: with ``--overwrite`` under way, a rerun with it would start over."""
    if overwrite and previous(out).exists():
        return "rerun the same command without --overwrite to resume (with --overwrite it starts over)"
    return "rerun the same command to resume"
