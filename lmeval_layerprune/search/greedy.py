"""The greedy layer search with exact early elimination, over the protocols of :mod:`.protocols`.

Starting from the full model, every remaining layer that is not protected is removed in turn
(together with the ones already chosen), the pruned model is scored by the :class:`Objective`,
each score is normalised by the **full model's** (0 when that is 0), the normalised scores are
averaged, and the best candidate is removed; repeat until ``n`` layers are gone.

* Exact early elimination (the default; ``exhaustive`` turns it off): an :class:`ItemObjective`
  is scored chunk by chunk on the same items in the same order, strong candidates first (by the
  previous round's scores), and a candidate stops as soon as the best score it can still reach
  (:func:`retention_bounds`) is below the score another candidate is already certain of
  (:func:`certainly_beaten`): the chosen layer is the exhaustive search's, by construction
  (``docs/selection-search.md``).
* Ties on the primary score are reported and broken by the continuous secondary score the
  objective returns with its items, then by the higher index (:func:`pick_best`).
* ``race``: successive halving within each round (:data:`RACE_RUNGS`), approximate.
* Every result is appended to the journal as soon as it is known, so a killed search restarted
  with the same journal continues where it stopped and ends with the same plan.
* The measurements run on an :class:`~.protocols.Evaluator`: in process (:class:`LocalEvaluator`,
  one at a time in the loop's own order) or on Ray workers (:mod:`.parallel`), several at a time.
  The loop alone keeps the tallies, the bounds, the journal and the choice: a candidate's next
  chunk is handed out only if no candidate is certain to rank above it, and the elimination rule
  is exact in any order of results, so every evaluator chooses the same layers.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from tqdm.auto import tqdm

from lmeval_layerprune.search.protocols import (
    Evaluator,
    ItemTask,
    Measurement,
    Objective,
    ObjectiveFacts,
    SearchJournal,
    measure,
)

logger = logging.getLogger(__name__)

#: successive-halving rungs of ``race``: budget fractions of the full objective; after each
#: rung only the best third of the candidates (at least two) go on to the next
RACE_RUNGS = (1 / 9, 1 / 3, 1.0)
RACE_KEEP = 3


@dataclass(frozen=True)
class GreedySettings:
    """What the greedy loop is asked (``n`` layers, never one of ``protect``) and how it runs.

    ``exhaustive`` scores every item of every candidate (the same plan as the default exact
    elimination, more work); ``race`` is successive halving per round (approximate; journal records
    at the full budget are shared with exact runs); ``progress`` shows a progress bar.
    """

    n: int
    protect: tuple[int, ...] = ()
    race: bool = False
    exhaustive: bool = False
    progress: bool = True


# ------------------------------------------------------------------ scoring rules


def normalized(
    raw: dict[str, float],
    base: dict[str, float],
    higher_is_better: bool,
    lower_is_better: AbstractSet[str] = frozenset(),
) -> float:
    """Mean over tasks of score / baseline (baseline / score where lower is better); 0 when undefined."""
    vals = []
    for k, b in base.items():
        v = raw.get(k, 0.0)
        if higher_is_better and k not in lower_is_better:
            vals.append(v / b if b else 0.0)
        else:
            vals.append(b / v if v else 0.0)
    return sum(vals) / len(vals) if vals else 0.0


def retention_bounds(
    sums: dict[str, Fraction], counts: dict[str, int], tasks: Sequence[ItemTask], base: dict[str, Fraction]
) -> tuple[Fraction, Fraction]:
    """The lowest and highest normalised score a partly scored candidate can still end with.

    ``sums[t]`` is the exact sum of the per-item values seen on task ``t``, ``counts[t]`` how
    many items they are, ``base[t]`` the full model's mean; every unseen item lies in
    ``[t.lo, t.hi]``. The score is the search's: mean over tasks of mean / baseline (0 where
    the baseline is 0). Exact rational arithmetic: a complete tally gives ``lo == hi`` == the score.
    """
    lows, highs = [], []
    for t in tasks:
        b = base[t.name]
        if b == 0 or t.n == 0:
            lows.append(Fraction(0))
            highs.append(Fraction(0))
            continue
        seen, rest = sums.get(t.name, Fraction(0)), t.n - counts.get(t.name, 0)
        lows.append((seen + rest * Fraction(t.lo)) / (t.n * b))
        highs.append((seen + rest * Fraction(t.hi)) / (t.n * b))
    m = max(len(tasks), 1)
    return sum(lows, Fraction(0)) / m, sum(highs, Fraction(0)) / m


def certainly_beaten(c: int, upper: Fraction, lower: dict[int, Fraction], index_ties: bool) -> int | None:
    """Another candidate that will certainly rank above ``c``, or None.

    ``upper`` is the best score ``c`` can still reach, ``lower[o]`` what candidate ``o`` is
    already certain of. ``o`` beats ``c`` when ``upper < lower[o]``. On equality it beats ``c``
    only when ties are broken by index alone (``index_ties``) and ``o`` has the higher index;
    with a secondary tie-break score the tie is still open, so ``c`` goes on.
    """
    best = None
    for o, low in lower.items():
        if o == c:
            continue
        if upper < low or (index_ties and upper == low and o > c):
            if best is None or (low, o) > (lower[best], best):
                best = o
    return best


def pick_best(
    scores: dict[int, Fraction], secondary: Callable[[int], float | None] | None = None
) -> tuple[int, list[int], dict[int, float]]:
    """The round's choice under the search's total order: the primary score, then (among the
    candidates tied on it) the secondary score, then the higher index.

    Returns the choice, the candidates tied at the top on the primary score (sorted) and the
    secondary scores used (empty when there was no tie or no secondary score)."""
    top = max(scores.values())
    ties = sorted(c for c, v in scores.items() if v == top)
    used: dict[int, float] = {}
    if len(ties) > 1 and secondary is not None:
        values = {c: secondary(c) for c in ties}
        if all(v is not None for v in values.values()):
            used = {c: float(v) for c, v in values.items() if v is not None}
    best = max(ties, key=lambda c: (used.get(c, 0.0), c))
    return best, ties, used


@dataclass
class _Tally:
    """Per-item results of one candidate so far (exact sums; secondary values as floats)."""

    sums: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    second: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, raw: dict[str, float]) -> int:
        items = 0
        for key, value in raw.items():
            if key.endswith("|s"):
                self.second[key[:-2].rsplit("|", 1)[0]].append(float(value))
            else:
                task = key.rsplit("|", 1)[0]
                self.sums[task] += Fraction(value)
                self.counts[task] += 1
                items += 1
        return items

    def secondary(self, tasks: Sequence[ItemTask]) -> float | None:
        if any(len(self.second.get(t.name, ())) != t.n or t.n == 0 for t in tasks):
            return None
        return sum(sum(self.second[t.name]) / t.n for t in tasks) / len(tasks)

    def estimate(self, tasks: Sequence[ItemTask], base: dict[str, Fraction]) -> float:
        """Normalised mean over the items seen (to order the next round's candidates)."""
        vals = [
            float(self.sums[t.name] / self.counts[t.name] / base[t.name])
            for t in tasks
            if self.counts.get(t.name) and base[t.name]
        ]
        return sum(vals) / len(tasks) if vals else 0.0


# ------------------------------------------------------------------ the loop


def _candidate_id(dropped: Sequence[int]) -> str:
    return "drop:" + ",".join(map(str, sorted(dropped)))


class LocalEvaluator:
    """Measures in this process, one at a time, when collected: the loop's own order."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self._queued: Measurement | None = None

    def start_round(self, dropped: Sequence[int]) -> None:
        self.objective.start_round(dropped)

    def capacity(self) -> int:
        return 0 if self._queued is not None else 1

    def submit(self, m: Measurement) -> None:
        self._queued = m

    def collect(self) -> tuple[Measurement, dict[str, float]]:
        m, self._queued = self._queued, None
        assert m is not None, "nothing was submitted"
        return m, measure(self.objective, m)


@dataclass
class _Round:
    """What one round has measured so far."""

    index: int
    alive: list[int]
    scores: dict[int, Fraction] = field(default_factory=dict)
    budget: dict[int, float] = field(default_factory=dict)
    stopped: dict[int, dict[str, Any]] = field(default_factory=dict)
    tallies: dict[int, _Tally] = field(default_factory=dict)
    items: int = 0


def greedy_search(
    objective: Objective, num_layers: int, journal: SearchJournal, settings: GreedySettings
) -> dict[str, Any]:
    """Choose ``settings.n`` of ``num_layers`` layers greedily; returns ``drop``, ``order``, ``baseline``,
    per-round records (``rounds``), ``evaluations``, ``warnings``, ``round_seconds`` and ``search`` (the
    mode and, for item-level objectives, the items evaluated against the exhaustive count).

    An :class:`ItemObjective` whose ``item_tasks`` is set is scored chunk by chunk and a candidate stops
    as soon as :func:`certainly_beaten` says another one will rank above it (``exhaustive`` scores every
    item instead); both choose the same layer in every round by construction (the same chunks, the same
    total order: :func:`pick_best`). Other objectives are called once per candidate (``objective(drop)``).

    With ``race``, each round is a successive-halving race: every candidate is scored on the first
    ninth of the items (``objective(drop, fraction=1/9)``), the best third goes on to a third of the
    items, and the best third of those to the full budget, where the winner is picked as in the exact
    search. Full-budget results are shared with exact runs through the journal.
    """
    return GreedySearch(objective, num_layers, journal, settings).run()


class GreedySearch:
    """One greedy search (:func:`greedy_search`), split into its steps: the baselines, the rounds, the
    candidates of a round (scored whole, or item chunk by item chunk with early elimination), the
    choice, and the result.

    ``evaluator`` runs the measurements (default: :class:`LocalEvaluator` of ``objective``, in this
    process); with another evaluator ``objective`` may be just its :class:`ObjectiveFacts`."""

    def __init__(
        self,
        objective: Objective | ObjectiveFacts,
        num_layers: int,
        journal: SearchJournal,
        settings: GreedySettings,
        evaluator: Evaluator | None = None,
    ) -> None:
        if evaluator is None:
            assert not isinstance(objective, ObjectiveFacts), "an objective's facts need an evaluator to measure"
            evaluator = LocalEvaluator(objective)
        self.evaluator = evaluator
        self.facts = objective if isinstance(objective, ObjectiveFacts) else ObjectiveFacts.of(objective)
        self.journal, self.settings = journal, settings
        self.num_layers = num_layers
        self.protect = set(settings.protect)
        self.candidates_total = num_layers - len(self.protect)
        n = settings.n
        if n >= self.candidates_total or n < 1:
            raise ValueError(
                f"n={n} must be between 1 and {self.candidates_total - 1} (the layers that are not protected, minus 1)"
            )
        self.rungs = RACE_RUNGS if settings.race else (1.0,)
        # scored item by item when the objective can bound its items
        self.items = self.facts.item_tasks is not None
        self.tasks: list[ItemTask] = list(self.facts.item_tasks or [])
        self.index_ties = not (self.items and self.facts.has_secondary)
        self.eliminate = self.items and not settings.exhaustive and not settings.race
        self.warnings: list[str] = []
        self.dropped: list[int] = []
        self.rounds: list[dict[str, Any]] = []
        self.seconds: list[float] = []
        self.previous: dict[int, float] = {}
        self.evaluations = self.items_evaluated = self.items_exhaustive = 0
        self.bases: dict[float, dict[str, float]] = {}
        self.exact_base: dict[str, Fraction] = {}
        self.num_chunks = self.facts.num_chunks
        self.total_items = sum(t.n for t in self.tasks)

    # ------------------------------------------------------------ measuring

    @staticmethod
    def _measurement(
        rec_id: str, drop: Sequence[int], fraction: float = 1.0, chunk: int | None = None, **extra: Any
    ) -> Measurement:
        """The model without ``drop``, whole at ``fraction`` or item chunk ``chunk``; ``extra`` goes to the journal."""
        if chunk is not None:
            rec_id, extra = f"{rec_id}#{chunk}", {"chunk": chunk, **extra}
        elif fraction != 1.0:
            rec_id = f"{rec_id}@{fraction:.4f}"
        return Measurement(rec_id, tuple(drop), chunk, fraction, extra.get("candidate"), extra)

    def _pump(self, source: Callable[[], Measurement | None]) -> Iterator[tuple[Measurement, dict[str, float]]]:
        """Measure what ``source`` hands out, as many at a time as the evaluator takes, and yield each
        result as soon as it is known: read back from the journal, or measured and then journaled.

        ``source`` is asked again after every result, so it decides with everything known so far; None
        means nothing to hand out now (the pump ends when nothing is in flight either)."""
        pending = 0
        while True:
            while self.evaluator.capacity() > 0:
                m = source()
                if m is None:
                    break
                raw = self.journal.get(m.rec_id)
                if raw is not None:
                    yield m, raw
                else:
                    self.evaluator.submit(m)
                    pending += 1
            if not pending:
                return
            m, raw = self.evaluator.collect()
            pending -= 1
            self.journal.add(m.rec_id, raw, **m.extra)
            yield m, raw

    def _baselines(self) -> None:
        """The full model's scores at every budget (item by item at the full budget when chunked)."""
        wanted = [self._measurement("baseline", [], f) for f in self.rungs if f != 1.0 or not self.items]
        wanted += [self._measurement("baseline", [], chunk=k) for k in range(self.num_chunks if self.items else 0)]
        queue = deque(wanted)
        got = {m.rec_id: raw for m, raw in self._pump(lambda: queue.popleft() if queue else None)}
        self.bases = {m.fraction: got[m.rec_id] for m in wanted if m.chunk is None}
        if self.items:
            tally = _Tally()
            for m in wanted:
                if m.chunk is not None:
                    tally.add(got[m.rec_id])
            self.exact_base = {t.name: tally.sums[t.name] / t.n if t.n else Fraction(0) for t in self.tasks}
            self.bases[1.0] = {name: float(v) for name, v in self.exact_base.items()}
        for task, value in self.bases[1.0].items():
            if value == 0:
                self._warn(
                    f"the full model scores 0 on {task}: its retention is 0 for every candidate, so it cannot "
                    "tell candidates apart (use a task the model can do, or more items)"
                )

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        logger.warning(msg)

    # ------------------------------------------------------------ the rounds

    def run(self) -> dict[str, Any]:
        self._baselines()
        n, race = self.settings.n, self.settings.race
        total = sum(self.candidates_total - r for r in range(n)) if not race else None
        with tqdm(total=total, desc="layer search", disable=not self.settings.progress, unit="cand") as bar:
            for r in range(n):
                started = time.perf_counter()
                rnd = self._play_round(r, bar)
                best = self._choose(rnd)
                self.seconds.append(time.perf_counter() - started)
                logger.info(
                    "round %d: removing layer %d (normalised score %.4f; %d candidates stopped early, %s items, "
                    "%.1f s)",
                    r + 1,
                    best,
                    float(rnd.scores[best]),
                    len(rnd.stopped),
                    rnd.items if self.items else "-",
                    self.seconds[-1],
                )
        return self._result()

    def _play_round(self, r: int, bar: Any) -> _Round:
        """Score the round's candidates, rung by rung when racing."""
        alive = [i for i in range(self.num_layers) if i not in self.dropped and i not in self.protect]
        rnd = _Round(r, alive)
        self.evaluator.start_round(self.dropped)
        # strong candidates first (the previous round's scores) so the bar rises early;
        # the first round, and objectives without elimination, go deepest first (hidden-state reuse)
        order = sorted(
            alive, key=lambda c: (self.previous.get(c, 0.0), c) if self.eliminate else (0.0, c), reverse=True
        )
        for fraction in self.rungs:
            final = fraction == 1.0
            todo = [c for c in (order if final else sorted(rnd.alive, reverse=True)) if c in rnd.alive]
            if final and self.items:
                self._score_items(rnd, todo, bar)
            else:
                self._score_whole(rnd, todo, fraction, bar)
            if not final:
                ranked = sorted(rnd.alive, key=lambda c: (rnd.scores[c], c), reverse=True)
                rnd.alive = ranked[: max(2, -(-len(ranked) // RACE_KEEP))]
        return rnd

    def _show(self, bar: Any, rnd: _Round, c: int, fraction: float) -> None:
        bar.set_postfix(round=f"{rnd.index + 1}/{self.settings.n}", layer=c, budget=fraction, stopped=len(rnd.stopped))

    def _score_whole(self, rnd: _Round, todo: list[int], fraction: float, bar: Any) -> None:
        """Every candidate of ``todo`` measured whole at ``fraction`` of the budget."""
        queue = deque(todo)

        def source() -> Measurement | None:
            if not queue:
                return None
            c = queue.popleft()
            self.evaluations += 1
            self._show(bar, rnd, c, fraction)
            drop = sorted([*self.dropped, c])
            return self._measurement(_candidate_id(drop), drop, fraction, round=rnd.index, candidate=c)

        facts = self.facts
        for m, raw in self._pump(source):
            assert m.candidate is not None
            normal = normalized(raw, self.bases[fraction], facts.higher_is_better, facts.lower_is_better)
            rnd.scores[m.candidate] = Fraction(normal)
            rnd.budget[m.candidate] = fraction
            bar.update(1)

    def _score_items(self, rnd: _Round, todo: list[int], bar: Any) -> None:
        """The candidates of ``todo`` chunk by chunk, each chunk after the one before (one in flight per
        candidate), strongest candidates first; before its next chunk a candidate is stopped as soon as
        another one is certain to rank above it (:func:`certainly_beaten`, exact whatever the order)."""
        low_bounds: dict[int, Fraction] = {}
        next_k = dict.fromkeys(todo, 0)
        done = dict.fromkeys(todo, 0)
        busy: set[int] = set()
        for c in todo:
            rnd.tallies[c] = _Tally()
            self.items_exhaustive += self.total_items
            self.evaluations += 1

        def source() -> Measurement | None:
            for c in todo:
                if c in busy or c in rnd.stopped or next_k[c] >= self.num_chunks:
                    continue
                tally = rnd.tallies[c]
                high = retention_bounds(tally.sums, tally.counts, self.tasks, self.exact_base)[1]
                by = certainly_beaten(c, high, low_bounds, self.index_ties) if self.eliminate else None
                if by is not None:
                    self._stop(rnd, c, done[c], high, by, bar)
                    continue
                if next_k[c] == 0:
                    self._show(bar, rnd, c, 1.0)
                busy.add(c)
                drop = sorted([*self.dropped, c])
                return self._measurement(_candidate_id(drop), drop, chunk=next_k[c], round=rnd.index, candidate=c)
            return None

        for m, raw in self._pump(source):
            c = m.candidate
            assert c is not None
            busy.discard(c)
            tally = rnd.tallies[c]
            got = tally.add(raw)
            done[c] += got
            next_k[c] += 1
            low_bounds[c] = retention_bounds(tally.sums, tally.counts, self.tasks, self.exact_base)[0]
            bar.update(got / max(self.total_items, 1))
        for c in todo:
            rnd.items += done[c]
            if c not in rnd.stopped:  # every chunk measured: the bounds meet at the score
                tally = rnd.tallies[c]
                rnd.scores[c] = retention_bounds(tally.sums, tally.counts, self.tasks, self.exact_base)[0]

    def _stop(self, rnd: _Round, c: int, done: int, high: Fraction, by: int, bar: Any) -> None:
        """Candidate ``c`` can no longer win: record why (in the round and, once, in the journal)."""
        rnd.stopped[c] = {"items": done, "of": self.total_items, "bound": float(high), "by": by}
        cid = _candidate_id(sorted([*self.dropped, c]))
        if self.journal.get(f"{cid}#stop") is None:
            self.journal.add(f"{cid}#stop", {"items": float(done), "bound": float(high)}, by=by)
        bar.update((self.total_items - done) / max(self.total_items, 1))

    def _choose(self, rnd: _Round) -> int:
        """Pick the round's layer, remember it, and record the round."""
        finalists = {c: rnd.scores[c] for c in rnd.alive if c not in rnd.stopped}
        second = None
        if self.items and not self.index_ties and self.tasks:
            second = {c: rnd.tallies[c].secondary(self.tasks) for c in finalists}.get
        best, ties, used = pick_best(finalists, second)
        self.dropped.append(best)
        self.items_evaluated += rnd.items
        if self.items and self.tasks:
            self.previous = {
                c: (float(rnd.scores[c]) if c in finalists else t.estimate(self.tasks, self.exact_base))
                for c, t in rnd.tallies.items()
            }
        self.rounds.append(self._record(rnd, best, ties, used))
        return best

    def _record(self, rnd: _Round, best: int, ties: list[int], used: dict[int, float]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "round": rnd.index,
            "chosen": best,
            "scores": {str(c): float(rnd.scores[c]) for c in sorted(rnd.scores) if c not in rnd.stopped},
        }
        if self.items:
            record["items"] = rnd.items
        if rnd.stopped:
            record["stopped"] = {str(c): rnd.stopped[c] for c in sorted(rnd.stopped)}
        if len(ties) > 1:
            record["ties"] = ties
            record["tie_break"] = "secondary" if used else "index"
            if used:
                record["secondary"] = {str(c): used[c] for c in sorted(used)}
            how = (
                "the mean log-probability of the reference answer decided"
                if used
                else "the higher index decided (no secondary score)"
            )
            self._warn(
                f"round {rnd.index + 1}: {len(ties)} candidates tie at retention {float(rnd.scores[best]):.4f} "
                f"(layers {', '.join(map(str, ties))}): the budget cannot tell them apart on the primary "
                f"metric; {how}; more items (--limit) would let the metric decide"
            )
        if self.settings.race:
            record["budget"] = {str(c): rnd.budget[c] for c in sorted(rnd.budget)}
        return record

    def _result(self) -> dict[str, Any]:
        race, exhaustive = self.settings.race, self.settings.exhaustive
        chunked = self.items
        reason = None if chunked else self.facts.no_bounds_reason or "objective not scored item by item"
        result: dict[str, Any] = {
            "drop": sorted(self.dropped),
            "order": self.dropped,
            "baseline": self.bases[1.0],
            "rounds": self.rounds,
            "evaluations": self.evaluations,
            "warnings": self.warnings,
            "round_seconds": self.seconds,  # wall time per round (not part of the rounds: a resumed run differs)
        }
        result["search"] = {
            "mode": "race" if race else "exhaustive" if (exhaustive or not chunked) else "exact-elimination",
            "elimination": bool(self.eliminate),
            "reason": reason,
            "tie_break": "index" if self.index_ties else "secondary, then index",
        }
        if self.items and self.tasks:
            result["search"].update(
                chunk_size=self.facts.chunk_size,
                items_per_candidate=self.total_items,
                items_evaluated=self.items_evaluated,
                items_exhaustive=self.items_exhaustive,
                stopped=sum(len(r.get("stopped", {})) for r in self.rounds),
                score={
                    "what": "retention: mean over tasks of the candidate's score / the full model's score",
                    "metrics": {t.name: t.metric for t in self.tasks},
                    "items": {t.name: t.n for t in self.tasks},
                },
            )
        return result
