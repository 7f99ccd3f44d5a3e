"""The executor seam of a sweep: what an executor is given (:class:`SweepJob`) and what it does
(:class:`Executor`). Implementations: :class:`lmeval_layerprune.sweep.executors.LocalExecutor` (in
process) and :class:`lmeval_layerprune.sweep.distributed.RayExecutor` (Ray workers).

An executor publishes each cell it is given into the sweep folder with
:class:`~lmeval_layerprune.sweep.cell.CellRunner` (atomically, in lm-eval's layout) and yields a
:class:`~lmeval_layerprune.sweep.cell.CellResult` per published cell, in any order, reporting each
cell's start and end to the :class:`~lmeval_layerprune.sweep.progress.GridProgress`. The sweep
driver (:mod:`lmeval_layerprune.sweep.run`) rebuilds the manifest from the folders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lmeval_layerprune.sweep.cell import CellResult
from lmeval_layerprune.sweep.grid import Cell
from lmeval_layerprune.sweep.progress import GridProgress
from lmeval_layerprune.sweep.settings import SweepSettings


@dataclass
class SweepJob:
    """What every executor needs to know about the sweep it runs cells of."""

    settings: SweepSettings
    out: Path
    num_layers: int
    #: greedy method -> layers its one search must reach (run before the cells that take its prefixes)
    searches: dict[str, int] = field(default_factory=dict)
    #: per-cell progress bars inside the runner (lm-eval's own); the grid bar is :class:`GridProgress`
    inner_progress: bool = False
    task_manager: Any = None


class Executor(Protocol):
    """Runs cells of a sweep and yields each one once it is published."""

    name: str

    def run(self, job: SweepJob, cells: Sequence[Cell], progress: GridProgress) -> Iterator[CellResult]: ...
