"""The executors a sweep can run its cells with (the seam is :mod:`lmeval_layerprune.sweep.protocol`):
the in-process :class:`LocalExecutor` (one loaded model for every in-memory cell) and
:class:`lmeval_layerprune.sweep.distributed.RayExecutor` (workers that each hold the model).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from lmeval_layerprune.core.plan import PruningPlan
from lmeval_layerprune.errors import SweepError
from lmeval_layerprune.sweep.cell import CellResult, CellRunner
from lmeval_layerprune.sweep.distributed import RayExecutor
from lmeval_layerprune.sweep.greedy import greedy_plan
from lmeval_layerprune.sweep.grid import Cell
from lmeval_layerprune.sweep.progress import GridProgress
from lmeval_layerprune.sweep.protocol import Executor, SweepJob
from lmeval_layerprune.sweep.settings import EXECUTORS, ExecutorSettings


class LocalExecutor:
    """Today's loop, in this process: the greedy searches first; then one loaded model serves every
    in-memory cell (layers swapped in place, calibration states read once); then the base model is
    freed and each healed cell is healed and evaluated."""

    name = "local"

    def run(self, job: SweepJob, cells: Sequence[Cell], progress: GridProgress) -> Iterator[CellResult]:
        for method, k in job.searches.items():  # before this process loads its own copy of the model
            greedy_plan(job.settings, job.out, method, k, progress=job.inner_progress)
        runner = CellRunner(job.settings, job.out, progress=job.inner_progress, task_manager=job.task_manager)
        memory = [c for c in cells if not c.healed]
        healed = [c for c in cells if c.healed]
        for cell in memory:
            progress.start(self.name, cell)
            result = runner.run(cell)
            progress.finish(self.name, cell, result.seconds)
            yield result
        if not healed:
            return
        # every in-memory cell is done: the parents' plans, then free the base model before training
        parents: dict[str, PruningPlan] = {c.name: runner.parent_plan(c) for c in healed}
        runner.release()
        for cell in healed:
            progress.start(self.name, cell)
            result = runner.run(cell, parent=parents[cell.name])
            progress.finish(self.name, cell, result.seconds)
            yield result


def make_executor(settings: ExecutorSettings | None) -> Executor:
    """The executor ``settings.executor`` names (``local`` when ``settings`` is ``None``)."""
    settings = settings or ExecutorSettings()
    if settings.executor == "local":
        return LocalExecutor()
    if settings.executor == "ray":
        return RayExecutor(settings)
    raise SweepError(f"unknown executor {settings.executor!r}; valid: {', '.join(EXECUTORS)}")
