"""Where the files that ship with the package live.

In a wheel, ``tasks/``, ``recovery/`` and ``hub_cards/`` are installed under
``lmeval_layerprune/_bundled/``; in a source checkout (editable install, tests)
they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
BUNDLED = ("tasks", "recovery", "hub_cards")


def bundled_dir(name: str) -> Path:
    """The directory of a bundled resource folder (``tasks``, ``recovery``, ``hub_cards``)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled folder {name!r}; expected one of {BUNDLED}")
    for candidate in (_PKG / "_bundled" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the bundled folder {name!r} is missing from this installation of lmeval-layerprune")


def tasks_dir() -> Path:
    """The folder of lm-eval task YAMLs that ship with the package."""
    return bundled_dir("tasks")


def default_corpus_path() -> Path:
    """The bundled plain-text corpus of the continued-pretraining recipes (``data: corpus``)."""
    return _PKG / "data" / "corpus.txt"


def default_calibration_path() -> Path:
    """The bundled calibration text used by ``bi:`` / ``angular:`` specs."""
    return _PKG / "data" / "calibration.txt"
