"""The sweep folder's manifest, ``OUT/sweep.json``: its settings, and its cells rebuilt from the folders.

No process owns the manifest. The settings are written once, when the folder is created, and
checked by every later run; the cells are rebuilt from the complete cell folders on disk
(:func:`rebuild_manifest`), so any writer, after publishing a cell, can rewrite it (to a temporary
name, renamed into place) and the last rewrite lists every published cell.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.layout import CHECKPOINTS, RESULTS_GLOB, RESULTS_KEY, SWEEP_MANIFEST
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.sweep.settings import SweepSettings, settings_diff
from lmeval_layerprune.sweep.store import PARTIAL, check_run, write_json

FORMAT = 1
#: what to do when sweep.json was edited: the sweep rebuilds it from the cell folders
MANIFEST_HINT = "it is rebuilt from the cell folders: move it away and rerun the same command"


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = Path(out) / SWEEP_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise SweepError(f"{path} is damaged (not JSON); remove it and rerun the same command to rebuild it") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{path} is not a sweep manifest")
    return manifest


def open_out(out: Path, settings: SweepSettings) -> dict[str, Any]:
    """Check (or create) the sweep folder ``out`` for ``settings``; returns its manifest."""
    out = Path(out)
    fixed = settings.fixed()
    manifest = read_manifest(out)
    if manifest is not None:
        diff = settings_diff(manifest.get("settings", {}), fixed)
        if diff:
            raise SweepError(
                f"{out} holds a sweep with other settings ({'; '.join(diff)}); rerun with the same settings to "
                "complete it, or give another --out for a new sweep"
            )
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SweepError(f"--out {out} exists and is not a sweep folder (no {SWEEP_MANIFEST}); choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "settings": fixed, "cells": {}}
    write_json(out / SWEEP_MANIFEST, manifest, what="sweep manifest", hint=MANIFEST_HINT)
    return manifest


def _cell_folders(out: Path) -> Iterable[Path]:
    for p in sorted(out.iterdir()):
        if p.is_dir() and not p.name.startswith((".", PARTIAL)) and p.name != CHECKPOINTS:
            yield p


class ManifestWriter:
    """Rebuilds ``OUT/sweep.json`` from the cell folders; remembers the folders it already read
    (a published cell never changes), so a rebuild after each cell reads only the new ones."""

    def __init__(self, out: Path, settings: SweepSettings) -> None:
        self.out = Path(out)
        self.settings = settings
        self._seen: dict[str, tuple[Path, dict[str, Any]]] = {}

    def _entry(self, folder: Path) -> dict[str, Any] | None:
        found = sorted(folder.glob(f"*/{RESULTS_GLOB}"))
        if len(found) != 1:
            return None
        cached = self._seen.get(folder.name)
        if cached is not None and cached[0] == found[0]:
            return cached[1]
        if not check_run(folder, self.settings.tasks).complete:
            return None  # a damaged cell: not listed (a run evaluates it again)
        config = json.loads(found[0].read_text())["config"]
        entry: dict[str, Any] = {"plan": config.get(RESULTS_KEY) or {}}
        if (config.get("sweep") or {}).get("healed"):
            entry["checkpoint"] = str(self.out / CHECKPOINTS / folder.name)
        entry["results"] = str(found[0])
        self._seen[folder.name] = (found[0], entry)
        return entry

    def rebuild(self) -> dict[str, Any]:
        """Write the manifest listing every cell folder on disk; returns it."""
        cells = {}
        for folder in _cell_folders(self.out):
            entry = self._entry(folder)
            if entry is not None:
                cells[folder.name] = entry
        manifest = {"format": FORMAT, "settings": self.settings.fixed(), "cells": cells}
        write_json(self.out / SWEEP_MANIFEST, manifest, what="sweep manifest", hint=MANIFEST_HINT)
        return manifest


def rebuild_manifest(out: str | Path, settings: SweepSettings) -> dict[str, Any]:
    """Rebuild ``OUT/sweep.json`` from the complete cell folders in ``out``."""
    return ManifestWriter(Path(out), settings).rebuild()
