"""What a sweep evaluates (:class:`SweepSettings`) and where it runs (:class:`ExecutorSettings`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from lmeval_layerprune.sweep.grid import DEFAULT_METHODS, DEFAULT_RATIOS, DEFAULT_TASKS, parse_recipes

#: the executors ``sweep --executor`` knows
EXECUTORS = ("local", "ray")


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
class ExecutorSettings:
    """Where the cells run: ``local`` (one process, one loaded model; the default) or ``ray`` (workers
    that each hold the model, on this machine or a cluster). Nothing here changes a cell's scores."""

    executor: str = field(
        default="local",
        metadata={"help": "local: one process, one loaded model (default); ray: Ray workers (pip install "
        "'lmeval-layerprune[ray]')"},
    )  # fmt: skip
    workers: int | None = field(
        default=None,
        metadata={"help": "ray: workers, each holding the model (default: as many as the resources allow)"},
    )
    gpus_per_worker: float | None = field(
        default=None, metadata={"help": "ray: GPUs per worker, fractions allowed (default: 1 with GPUs, else 0)"}
    )
    threads_per_worker: int = field(
        default=1, metadata={"help": "ray: CPU threads (Ray num_cpus, OMP_NUM_THREADS) per worker"}
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "ray: join this cluster (e.g. auto, or HEAD:6379); default: start a local one, stop it after"
        },
    )
    cell_timeout: float | None = field(
        default=None, metadata={"help": "ray: seconds a cell may run before its worker is killed and the cell re-run"}
    )
    max_retries: int = field(
        default=2, metadata={"help": "ray: re-runs of a cell whose worker died or timed out, before the sweep stops"}
    )
