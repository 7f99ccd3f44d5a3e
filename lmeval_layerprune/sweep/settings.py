"""What a sweep evaluates (:class:`SweepSettings`) and where it runs (:class:`ExecutorSettings`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from lmeval_layerprune.core.cluster import EXECUTORS, ClusterSettings
from lmeval_layerprune.sweep.grid import DEFAULT_METHODS, DEFAULT_RATIOS, DEFAULT_TASKS, parse_recipes

__all__ = ["EXECUTORS", "ExecutorSettings", "SweepSettings", "settings_diff"]  # EXECUTORS: core.cluster's, for the CLI


@dataclass
class SweepSettings:
    """What a sweep evaluates. The fields in :meth:`fixed` must match to resume a sweep folder;
    the grid (methods, ratios, healed cells) may grow or shrink between runs."""

    model: str
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    num_fewshot: int | None = None
    include_path: str | None = None
    dtype: str = "float32"
    batch_size: str = "8"
    device: str | None = None
    calib: str | None = None
    calib_samples: int | None = None
    # greedy methods
    search_tasks: tuple[str, ...] | None = None
    search_limit: int | None = 100
    selection_seed: int | None = None
    protect: tuple[int, ...] = (0,)
    # healing: one recipe, or several comma-separated (one healed cell each)
    recipe: str | None = None
    heal_cells: tuple[tuple[str, float], ...] = ()
    heal_overrides: tuple[str, ...] = ()
    # fidelity: token agreement with the parent's greedy text on this many bundled prompts (0: off)
    token_agreement: int = 0
    token_agreement_tokens: int = 32

    @property
    def recipes(self) -> tuple[str, ...]:
        return parse_recipes(self.recipe)

    def fixed(self) -> dict[str, Any]:
        """The settings every cell of a folder shares (not the grid, not where it runs)."""
        d = asdict(self)
        # the grid, where it runs, and extra measurements that do not change any task score
        grid = ("methods", "ratios", "heal_cells", "batch_size", "device", "token_agreement", "token_agreement_tokens")
        for k in grid:
            d.pop(k)
        return json.loads(json.dumps(d))


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One ``key: old vs new`` line per setting that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} (in the folder) vs {new.get(k)!r} (now)" for k in keys if old.get(k) != new.get(k)]


@dataclass
class ExecutorSettings(ClusterSettings):
    """Where the cells run (:class:`~lmeval_layerprune.core.cluster.ClusterSettings`, shared with ``select``),
    and how long one cell may take. Nothing here changes a cell's scores."""

    cell_timeout: float | None = field(
        default=None, metadata={"help": "ray: seconds a cell may run before its worker is killed and the cell re-run"}
    )
