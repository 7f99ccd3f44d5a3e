"""The greedy searches of a sweep (``iterative``, ``ppl``): one search per method to the grid's
largest count, written as ``OUT/<method>_plan.json``; smaller ratios take prefixes of its order.

This module is the sweep's only caller of :func:`lmeval_layerprune.search.select.select_layers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmeval_layerprune.search.select import SelectionSettings, select_layers
from lmeval_layerprune.sweep.settings import SweepSettings


def plan_path(out: Path, method: str) -> Path:
    """Where the search of ``method`` writes its plan (and, beside it, its journal)."""
    return Path(out) / f"{method}_plan.json"


def searched(out: Path, method: str, k_max: int) -> bool:
    """Whether a finished search of ``method`` reaches ``k_max`` layers."""
    path = plan_path(out, method)
    if not path.is_file():
        return False
    try:
        return len(json.loads(path.read_text()).get("order") or []) >= k_max
    except (OSError, ValueError, AttributeError):
        return False


def greedy_plan(settings: SweepSettings, out: Path, method: str, k_max: int, progress: bool = True) -> Path:
    """Run (or resume, or reuse) the search of ``method`` for ``k_max`` layers; returns its plan file."""
    path = plan_path(out, method)
    if searched(out, method, k_max):
        return path
    s = settings
    kwargs: dict[str, Any] = dict(
        tasks=list(s.search_tasks or s.tasks),
        include_path=s.include_path,
        limit=s.search_limit,
        protect=list(s.protect),
        calib=s.calib,
        dtype=s.dtype,
        batch_size=int(s.batch_size) if str(s.batch_size).isdigit() else 8,
    )
    if s.selection_seed is not None:
        kwargs["selection_seed"] = s.selection_seed
    if s.calib_samples:
        kwargs["calib_samples"] = s.calib_samples
    print(f"sweep: {method} search for {k_max} layers (plan {path})", flush=True)
    search = SelectionSettings(model=s.model, method=method, n=k_max, **kwargs)
    select_layers(search, device=s.device, out=path, progress=progress)
    return path
