"""The Ray executor (``sweep --executor ray``): cells fanned over workers that each hold the model.

* Each worker is a Ray actor (:class:`CellWorker`) that loads the base model once and runs the
  in-memory cells it is handed, one at a time, exactly as the in-process loop does. Greedy
  searches and healed cells are Ray tasks with a worker's resources; a healed cell starts once
  its parent cell is published and, once no in-memory cell is left, the workers are stopped so
  their resources go to the heals.
* The driver loop (:class:`_Driver`, ``ray.wait``) owns retries. A worker that dies during a cell
  (``kill -9``, out of memory, a lost node) costs that cell only: the worker is replaced and the
  cell handed to a live one, at most ``max_retries`` times. A cell past ``cell_timeout`` has its
  worker killed and is re-run the same way. A worker that cannot load the model, or a cell that
  fails in lm-eval, stops the sweep with that one error (running it again would fail again).
* Publishing is idempotent (:func:`lmeval_layerprune.sweep.store.publish_dir`): a cell that runs
  twice ends as one folder. The output folder must be on a filesystem every node sees.

Ray (an optional extra) is imported only when :meth:`RayExecutor.run` opens a session
(:mod:`lmeval_layerprune.core.cluster`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmeval_layerprune.core.cluster import (
    lost_errors,
    prepare_worker,
    ray_session,
    remote_value,
    require_ray,
    worker_label,
    worker_resources,
)
from lmeval_layerprune.errors import ClusterError, LayerPruneError, SweepError
from lmeval_layerprune.sweep.cell import CellResult, CellRunner, published
from lmeval_layerprune.sweep.greedy import greedy_plan
from lmeval_layerprune.sweep.grid import Cell
from lmeval_layerprune.sweep.progress import GridProgress
from lmeval_layerprune.sweep.protocol import SweepJob
from lmeval_layerprune.sweep.settings import ExecutorSettings, SweepSettings
from lmeval_layerprune.sweep.store import check_cell


def _worker_settings(settings: SweepSettings, device: str) -> SweepSettings:
    """A worker's settings: its own device (``cuda`` is the GPU Ray gave it); nothing a score depends on."""
    return replace(settings, device=device)


class CellWorker:
    """A Ray actor: one loaded base model serving the in-memory cells the driver hands it."""

    def __init__(
        self, settings: SweepSettings, out: str, name: str, gpus: float, threads: int, task_manager: Any = None
    ) -> None:
        device = prepare_worker(gpus, threads)
        self.runner = CellRunner(_worker_settings(settings, device), out, name=name, task_manager=task_manager)

    def ready(self) -> str:
        """Load the model (and lm-eval's task index) now; returns ``host:pid``."""
        self.runner.load()
        _ = self.runner.task_manager
        return worker_label()

    def run(self, cell: Cell) -> CellResult:
        return self.runner.run(cell)


def heal_task(
    settings: SweepSettings, out: str, cell: Cell, name: str, gpus: float, threads: int, task_manager: Any = None
) -> CellResult:
    """A Ray task: heal one cell and evaluate the healed checkpoint."""
    device = prepare_worker(gpus, threads)
    return CellRunner(_worker_settings(settings, device), out, name=name, task_manager=task_manager).run(cell)


def search_task(settings: SweepSettings, out: str, method: str, k: int, gpus: float, threads: int) -> str:
    """A Ray task: the greedy search of one method (resumable through its journal)."""
    device = prepare_worker(gpus, threads)
    return str(greedy_plan(_worker_settings(settings, device), Path(out), method, k, progress=False))


@dataclass
class _Job:
    """One unit of work in flight: an in-memory cell on an actor, a heal task, or a search task."""

    kind: str  # "cell", "heal", "search", "ready"
    worker: str
    cell: Cell | None = None
    started: float = 0.0


class RayExecutor:
    """Runs cells on Ray workers (see the module docstring). ``reruns`` lists each cell run again
    after its worker died or timed out, once per re-run."""

    name = "ray"

    def __init__(self, settings: ExecutorSettings) -> None:
        require_ray()  # before any work
        self.settings = settings
        self.reruns: list[str] = []
        self.workers = 0

    def run(self, job: SweepJob, cells: Sequence[Cell], progress: GridProgress) -> Iterator[CellResult]:
        es = self.settings
        with ray_session(es.ray_address) as cluster:
            gpus = es.worker_gpus(cluster)
            threads = es.threads_per_worker
            self.workers = cluster.fit_workers(es.workers, gpus, threads)
            progress.note(
                f"sweep: ray: {self.workers} worker(s) x {threads} thread(s), {gpus:g} GPU(s) each, "
                f"on {cluster.nodes} node(s) ({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs)"
            )
            driver = _Driver(cluster.ray, job, es, self, progress, worker_resources(gpus, threads))
            yield from driver.loop(cells)


class _Driver:
    """The ``ray.wait`` loop of one run: hands cells to idle workers, retries, replaces dead workers."""

    def __init__(
        self, ray: Any, job: SweepJob, es: ExecutorSettings, owner: RayExecutor, progress: GridProgress, res: dict
    ) -> None:
        self.ray, self.job, self.es, self.owner, self.progress, self.res = ray, job, es, owner, progress, res
        self.gpus, self.threads = res["num_gpus"], res["num_cpus"]
        self.actor_cls = ray.remote(CellWorker).options(**res, max_restarts=0)
        self.heal_fn = ray.remote(heal_task).options(**res, max_retries=0)
        self.search_fn = ray.remote(search_task).options(**res, max_retries=0)
        self.lost = lost_errors(ray)
        self.inflight: dict[Any, _Job] = {}
        self.actors: dict[str, Any] = {}  # worker name -> actor handle
        self.idle: list[str] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.load_failures = 0
        self._serial = 0
        # lm-eval's task index, built once by the driver (indexing every task YAML takes seconds per process)
        self.tm_ref = ray.put(job.task_manager) if job.task_manager is not None else None
        self.complete: set[str] = set()  # cells known to be published
        self.found: list[CellResult] = []  # cells found published when they were to be run

    # ------------------------------------------------------------- workers
    def _spawn(self) -> None:
        self._serial += 1
        name = f"w{self._serial}"
        s, out = self.job.settings, str(self.job.out)
        actor = self.actor_cls.remote(s, out, name, self.gpus, self.threads, self.tm_ref)
        self.actors[name] = actor
        self.inflight[actor.ready.remote()] = _Job("ready", name, started=time.monotonic())

    def _stop(self, name: str) -> None:
        actor = self.actors.pop(name, None)
        if name in self.idle:
            self.idle.remove(name)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)

    # ---------------------------------------------------------------- loop
    def loop(self, cells: Sequence[Cell]) -> Iterator[CellResult]:
        ray, job = self.ray, self.job
        searches = [
            self.search_fn.remote(job.settings, str(job.out), m, k, self.gpus, self.threads)
            for m, k in job.searches.items()
        ]
        for ref, method in zip(searches, job.searches, strict=True):  # before any cell that takes its prefixes
            try:
                self._get(ref, _Job("search", f"search-{method}"))
            except self.lost as e:
                raise ClusterError(f"the Ray worker of the {method} search died: {e}") from None
        queue = collections.deque(c for c in cells if not c.healed)
        waiting = [c for c in cells if c.healed]
        for _ in range(min(self.owner.workers, len(queue))):
            self._spawn()
        while queue or waiting or self.inflight:
            self._dispatch(queue, waiting)
            while self.found:
                yield self.found.pop()
            if not (queue or waiting or self.inflight):
                break
            if not self.inflight:
                raise ClusterError("the Ray sweep has cells left but nothing running (no worker could start)")
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=self._wait_timeout())
            if not ready:
                self._expire(queue, waiting)
                continue
            ref = ready[0]
            work = self.inflight.pop(ref)
            result = self._collect(ref, work, queue, waiting)
            if result is not None:
                self.complete.add(result.cell.name)
                yield result
            while self.found:
                yield self.found.pop()
        for name in list(self.actors):
            self._stop(name)

    def _dispatch(self, queue: collections.deque[Cell], waiting: list[Cell]) -> None:
        while queue and self.idle:
            cell = queue.popleft()
            if self._is_complete(cell):  # published meanwhile (by a worker that died right after, or another writer)
                self.found.append(published(self.job.out, cell, self.job.settings))
                continue
            name = self.idle.pop(0)
            self.inflight[self.actors[name].run.remote(cell)] = _Job("cell", name, cell, time.monotonic())
            self.progress.start(name, cell)
        memory_left = queue or any(w.kind == "cell" for w in self.inflight.values())
        if not memory_left:  # the workers' resources go to the heals
            for name in list(self.idle):
                self._stop(name)
        s, out = self.job.settings, self.job.out
        for cell in [c for c in waiting if self._is_complete(c.parent)]:
            waiting.remove(cell)
            if self._is_complete(cell):
                self.found.append(published(out, cell, s))
                continue
            name = f"heal-{cell.name}"
            ref = self.heal_fn.remote(s, str(out), cell, name, self.gpus, self.threads, self.tm_ref)
            self.inflight[ref] = _Job("heal", name, cell, time.monotonic())
            self.progress.start(name, cell)
        if waiting and not memory_left and not any(w.kind == "heal" for w in self.inflight.values()):
            missing = ", ".join(sorted({c.parent.name for c in waiting}))
            raise SweepError(f"healed cells wait for cells that are not in the sweep folder: {missing}")

    def _is_complete(self, cell: Cell) -> bool:
        if cell.name not in self.complete:
            s = self.job.settings
            if check_cell(self.job.out, cell, s.tasks, bool(s.token_agreement)).complete:
                self.complete.add(cell.name)
        return cell.name in self.complete

    def _wait_timeout(self) -> float | None:
        if self.es.cell_timeout is None:
            return None
        starts = [w.started for w in self.inflight.values() if w.kind in ("cell", "heal")]
        if not starts:
            return None
        return max(0.05, min(starts) + self.es.cell_timeout - time.monotonic())

    def _expire(self, queue: collections.deque[Cell], waiting: list[Cell]) -> None:
        """Kill the workers of cells past the timeout; their cells go back to the queue."""
        assert self.es.cell_timeout is not None
        now = time.monotonic()
        for ref, work in list(self.inflight.items()):
            if work.kind not in ("cell", "heal") or now - work.started < self.es.cell_timeout:
                continue
            del self.inflight[ref]
            why = f"ran past --cell-timeout {self.es.cell_timeout:g} s"
            if work.kind == "cell":
                self._stop(work.worker)
            else:
                self.ray.cancel(ref, force=True)
            self._retry(work, why, queue, waiting)

    def _retry(self, work: _Job, why: str, queue: collections.deque[Cell], waiting: list[Cell]) -> None:
        assert work.cell is not None
        cell = work.cell
        self.attempts[cell.name] += 1
        self.progress.idle(work.worker)
        if self.attempts[cell.name] > self.es.max_retries:
            raise ClusterError(
                f"cell {cell.name} failed {self.attempts[cell.name]} times (last: its worker {why}); "
                "the finished cells are kept, rerun the same command to resume"
            )
        self.owner.reruns.append(cell.name)
        self.progress.note(f"sweep: cell {cell.name}: worker {work.worker} {why}; running it again")
        if work.kind == "cell":
            self.actors.pop(work.worker, None)
            queue.appendleft(cell)
            self._spawn()
        else:
            waiting.append(cell)

    def _get(self, ref: Any, work: _Job) -> Any:
        """``ray.get`` with a worker's own error (a :class:`LayerPruneError`) raised as itself."""
        what = f"cell {work.cell.name}" if work.cell else f"the {work.kind} step"
        return remote_value(self.ray, ref, f"{what} failed on Ray worker {work.worker}", SweepError)

    def _collect(self, ref: Any, work: _Job, queue: collections.deque[Cell], waiting: list[Cell]) -> CellResult | None:
        try:
            value = self._get(ref, work)
        except self.lost as e:
            if work.kind == "ready":
                self.actors.pop(work.worker, None)
                self.load_failures += 1
                if self.load_failures > self.es.max_retries:
                    raise ClusterError(f"Ray worker {work.worker} died while loading the model: {e}") from None
                self._spawn()
                return None
            self._retry(work, "died", queue, waiting)
            return None
        except LayerPruneError as e:
            if work.kind == "ready":
                raise ClusterError(f"Ray worker {work.worker} could not load {self.job.settings.model}: {e}") from None
            raise
        if work.kind in ("ready", "cell"):
            self.idle.append(work.worker)
        if work.kind == "ready":
            return None
        assert work.cell is not None
        self.progress.finish(work.worker, work.cell, value.seconds)
        return value
