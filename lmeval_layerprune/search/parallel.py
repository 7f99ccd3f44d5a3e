"""``select --executor ray``: a greedy round's candidates measured on Ray workers that each hold the model.

* Each worker is a Ray actor (:class:`SearchWorker`) that builds the search's objective once (the
  model, the selection split's requests) from a picklable ``factory`` and measures what it is handed:
  a candidate's item chunk, or a whole candidate. It is told the round's removed layers with each
  measurement, so its hidden-state reuse follows the rounds as in process.
* The driver runs the one greedy loop (:class:`~lmeval_layerprune.search.greedy.GreedySearch`) with
  :class:`RayEvaluator` as its evaluator: the loop keeps the tallies, the bounds, the journal (only
  the driver writes it), the progress bar and the choice, and hands out a candidate's next chunk
  only while no candidate is certain to rank above it. Early elimination is exact in any order of
  results, so the plan is the in-process one (and the exhaustive search's).
* A worker that dies (``kill -9``, out of memory, a lost node) costs the measurement it was running:
  the worker is replaced and the measurement handed out again, at most ``max_retries`` times each.
  A worker that cannot build the objective (the model does not load) is one clear error.

Ray (an optional extra) is imported only when :func:`ray_greedy_search` opens a session
(:mod:`lmeval_layerprune.core.cluster`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

from lmeval_layerprune.core.cluster import (
    ClusterSettings,
    lost_errors,
    prepare_worker,
    ray_session,
    remote_value,
    require_ray,
    worker_label,
    worker_resources,
)
from lmeval_layerprune.errors import ClusterError
from lmeval_layerprune.search.greedy import GreedySearch, GreedySettings
from lmeval_layerprune.search.protocols import Measurement, Objective, ObjectiveFacts, SearchJournal, measure

logger = logging.getLogger(__name__)

#: builds the search's objective on a worker, given the torch device (``cpu``/``cuda``); picklable
ObjectiveFactory = Callable[[str], Objective]


class SearchWorker:
    """A Ray actor: the search's objective on one loaded model, measuring what the driver hands it."""

    def __init__(self, factory: ObjectiveFactory, name: str, what: str, gpus: float, threads: int) -> None:
        self.device = prepare_worker(gpus, threads)
        self.factory, self.name, self.what = factory, name, what
        self.objective: Objective | None = None
        self.round: tuple[int, ...] | None = None

    def ready(self) -> tuple[str, ObjectiveFacts]:
        """Build the objective now (load the model); returns ``host:pid`` and what the loop needs of it."""
        return worker_label(), ObjectiveFacts.of(self._objective())

    def _objective(self) -> Objective:
        if self.objective is None:
            try:
                self.objective = self.factory(self.device)
            except Exception as e:  # any reason a model does not load: one line, not a remote traceback
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ClusterError(f"Ray worker {self.name} could not load {self.what}: {first}") from None
        return self.objective

    def measure(self, round_: tuple[int, ...] | None, m: Measurement) -> dict[str, float]:
        """Measure ``m`` in round ``round_`` (the layers the round has removed; None before the rounds)."""
        objective = self._objective()
        if round_ is not None and round_ != self.round:
            objective.start_round(list(round_))
        self.round = round_
        return measure(objective, m)


class RayEvaluator:
    """The loop's :class:`~lmeval_layerprune.search.protocols.Evaluator` on Ray actors: one measurement in
    flight per worker; a dead worker is replaced and its measurement handed out again (``reruns``)."""

    def __init__(self, ray: Any, factory: ObjectiveFactory, what: str, settings: ClusterSettings, res: dict) -> None:
        self.ray, self.factory, self.what, self.settings = ray, factory, what, settings
        self.gpus, self.threads = res["num_gpus"], res["num_cpus"]
        self.actor_cls = ray.remote(SearchWorker).options(**res, max_restarts=0)
        self.lost = lost_errors(ray)
        self.actors: dict[str, Any] = {}  # worker name -> actor handle
        self.labels: dict[str, str] = {}  # worker name -> host:pid
        self.idle: list[str] = []
        self.inflight: dict[Any, tuple[str, Measurement]] = {}
        self.round: tuple[int, ...] | None = None
        self.attempts: collections.Counter[str] = collections.Counter()
        self.reruns: list[str] = []  # record ids measured again after their worker died
        self._serial = 0

    def _spawn(self) -> str:
        self._serial += 1
        name = f"w{self._serial}"
        self.actors[name] = self.actor_cls.remote(self.factory, name, self.what, self.gpus, self.threads)
        return name

    def open(self, workers: int) -> ObjectiveFacts:
        """Start ``workers`` workers and wait until each has built the objective; returns its facts."""
        pending = {self.actors[name].ready.remote(): name for name in [self._spawn() for _ in range(workers)]}
        facts: set[ObjectiveFacts] = set()
        failures = 0
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                label, found = remote_value(self.ray, ready[0], f"Ray worker {name} could not load {self.what}")
            except self.lost as e:
                self.actors.pop(name, None)
                failures += 1
                if failures > self.settings.max_retries:
                    raise ClusterError(f"Ray worker {name} died while loading {self.what}: {e}") from None
                fresh = self._spawn()
                pending[self.actors[fresh].ready.remote()] = fresh
                continue
            self.labels[name] = label
            self.idle.append(name)
            facts.add(found)
        if len(facts) != 1:  # e.g. nodes with other task versions: their items would not be the same
            raise ClusterError(f"the Ray workers built different objectives for {self.what}: {sorted(map(str, facts))}")
        return facts.pop()

    def close(self) -> None:
        for name in list(self.actors):
            self.ray.kill(self.actors.pop(name), no_restart=True)

    # ------------------------------------------------------------ Evaluator
    def start_round(self, dropped: Sequence[int]) -> None:
        self.round = tuple(dropped)

    def capacity(self) -> int:
        return len(self.idle)

    def submit(self, m: Measurement) -> None:
        self._send(self.idle.pop(0), m)

    def _send(self, name: str, m: Measurement) -> None:
        self.inflight[self.actors[name].measure.remote(self.round, m)] = (name, m)

    def collect(self) -> tuple[Measurement, dict[str, float]]:
        while True:
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
            name, m = self.inflight.pop(ready[0])
            try:
                raw = remote_value(self.ray, ready[0], f"measuring {m.rec_id} failed on Ray worker {name}")
            except self.lost as e:
                self._rerun(name, m, e)
                continue
            self.idle.append(name)
            return m, raw

    def _rerun(self, name: str, m: Measurement, e: BaseException) -> None:
        """``name`` died measuring ``m``: a new worker takes its place, and ``m`` (within the cap)."""
        self.attempts[m.rec_id] += 1
        self.actors.pop(name, None)
        if self.attempts[m.rec_id] > self.settings.max_retries:
            raise ClusterError(
                f"measuring {m.rec_id} failed {self.attempts[m.rec_id]} times (last: Ray worker {name} died: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); the journal keeps "
                "every finished measurement, rerun the same command to resume"
            )
        self.reruns.append(m.rec_id)
        logger.warning("Ray worker %s died measuring %s; a new worker measures it again", name, m.rec_id)
        self._send(self._spawn(), m)  # the new worker builds the objective first (a failure is one error)


def ray_greedy_search(
    factory: ObjectiveFactory,
    what: str,
    num_layers: int,
    journal: SearchJournal,
    settings: GreedySettings,
    cluster: ClusterSettings,
) -> dict[str, Any]:
    """:func:`~lmeval_layerprune.search.greedy.greedy_search` with the measurements on Ray workers that each
    build the objective with ``factory`` (``what``: the model, for errors). The same plan as in process;
    ``search.executor`` of the result says how many workers ran and which measurements were repeated."""
    require_ray()
    with ray_session(cluster.ray_address) as session:
        gpus, threads = cluster.worker_gpus(session), cluster.threads_per_worker
        workers = session.fit_workers(cluster.workers, gpus, threads)
        logger.info(
            "select: ray: %d worker(s) x %d thread(s), %g GPU(s) each, on %d node(s)", workers, threads, gpus,
            session.nodes,
        )  # fmt: skip
        evaluator = RayEvaluator(session.ray, factory, what, cluster, worker_resources(gpus, threads))
        try:
            facts = evaluator.open(workers)
            result = GreedySearch(facts, num_layers, journal, settings, evaluator).run()
        finally:
            evaluator.close()
    result["search"]["executor"] = {"name": "ray", "workers": workers, "repeated": list(evaluator.reruns)}
    return result
