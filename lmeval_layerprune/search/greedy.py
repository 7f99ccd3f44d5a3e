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
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from tqdm.auto import tqdm

from lmeval_layerprune.search.protocols import ItemObjective, ItemTask, Objective, SearchJournal

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
    choice, and the result."""

    def __init__(self, objective: Objective, num_layers: int, journal: SearchJournal, settings: GreedySettings) -> None:
        self.objective, self.journal, self.settings = objective, journal, settings
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
        self.items: ItemObjective | None = None
        if isinstance(objective, ItemObjective) and objective.item_tasks is not None:
            self.items = objective
        self.tasks: list[ItemTask] = list(self.items.item_tasks or []) if self.items is not None else []
        self.index_ties = not (self.items is not None and self.items.has_secondary)
        self.eliminate = self.items is not None and not settings.exhaustive and not settings.race
        self.warnings: list[str] = []
        self.dropped: list[int] = []
        self.rounds: list[dict[str, Any]] = []
        self.seconds: list[float] = []
        self.previous: dict[int, float] = {}
        self.evaluations = self.items_evaluated = self.items_exhaustive = 0
        self.bases: dict[float, dict[str, float]] = {}
        self.exact_base: dict[str, Fraction] = {}
        self.num_chunks = 0
        self.total_items = sum(t.n for t in self.tasks)

    # ------------------------------------------------------------ measuring

    def _measure(self, rec_id: str, drop: list[int], fraction: float, **extra: Any) -> dict[str, float]:
        rec_id = rec_id if fraction == 1.0 else f"{rec_id}@{fraction:.4f}"
        raw = self.journal.get(rec_id)
        if raw is None:
            raw = self.objective(drop) if fraction == 1.0 else self.objective(drop, fraction=fraction)
            self.journal.add(rec_id, raw, **extra)
        return raw

    def _measure_chunk(self, rec_id: str, drop: list[int], k: int, **extra: Any) -> dict[str, float]:
        assert self.items is not None
        rec_id = f"{rec_id}#{k}"
        raw = self.journal.get(rec_id)
        if raw is None:
            raw = self.items.chunk(drop, k)
            self.journal.add(rec_id, raw, chunk=k, **extra)
        return raw

    def _baselines(self) -> None:
        """The full model's scores at every budget (item by item at the full budget when chunked)."""
        chunked = self.items is not None
        self.bases = {f: self._measure("baseline", [], f) for f in self.rungs if f != 1.0 or not chunked}
        if self.items is not None:
            self.num_chunks = self.items.num_chunks
            tally = _Tally()
            for k in range(self.num_chunks):
                tally.add(self._measure_chunk("baseline", [], k))
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
                    rnd.items if self.items is not None else "-",
                    self.seconds[-1],
                )
        return self._result()

    def _play_round(self, r: int, bar: Any) -> _Round:
        """Score the round's candidates, rung by rung when racing."""
        alive = [i for i in range(self.num_layers) if i not in self.dropped and i not in self.protect]
        rnd = _Round(r, alive)
        self.objective.start_round(self.dropped)
        # strong candidates first (the previous round's scores) so the bar rises early;
        # the first round, and objectives without elimination, go deepest first (hidden-state reuse)
        order = sorted(
            alive, key=lambda c: (self.previous.get(c, 0.0), c) if self.eliminate else (0.0, c), reverse=True
        )
        for fraction in self.rungs:
            final = fraction == 1.0
            low_bounds: dict[int, Fraction] = {}
            for c in order if final else sorted(rnd.alive, reverse=True):
                if c not in rnd.alive:
                    continue
                self.evaluations += 1
                bar.set_postfix(round=f"{r + 1}/{self.settings.n}", layer=c, budget=fraction, stopped=len(rnd.stopped))
                if final and self.items is not None:
                    self._score_items(rnd, c, low_bounds, bar)
                else:
                    self._score_whole(rnd, c, fraction)
                    bar.update(1)
                rnd.budget[c] = fraction
            if not final:
                ranked = sorted(rnd.alive, key=lambda c: (rnd.scores[c], c), reverse=True)
                rnd.alive = ranked[: max(2, -(-len(ranked) // RACE_KEEP))]
        return rnd

    def _score_whole(self, rnd: _Round, c: int, fraction: float) -> None:
        drop = sorted([*self.dropped, c])
        raw = self._measure(_candidate_id(drop), drop, fraction, round=rnd.index, candidate=c)
        normal = normalized(raw, self.bases[fraction], self.objective.higher_is_better, self.objective.lower_is_better)
        rnd.scores[c] = Fraction(normal)

    def _score_items(self, rnd: _Round, c: int, low_bounds: dict[int, Fraction], bar: Any) -> None:
        """Candidate ``c`` chunk by chunk, stopped as soon as another candidate certainly ranks above it."""
        drop = sorted([*self.dropped, c])
        cid = _candidate_id(drop)
        tally = rnd.tallies[c] = _Tally()
        self.items_exhaustive += self.total_items
        done = 0
        low, high = retention_bounds(tally.sums, tally.counts, self.tasks, self.exact_base)
        for k in range(self.num_chunks):
            by = certainly_beaten(c, high, low_bounds, self.index_ties) if self.eliminate else None
            if by is not None:
                rnd.stopped[c] = {"items": done, "of": self.total_items, "bound": float(high), "by": by}
                if self.journal.get(f"{cid}#stop") is None:
                    self.journal.add(f"{cid}#stop", {"items": float(done), "bound": float(high)}, by=by)
                break
            got = tally.add(self._measure_chunk(cid, drop, k, round=rnd.index, candidate=c))
            done += got
            low, high = retention_bounds(tally.sums, tally.counts, self.tasks, self.exact_base)
            low_bounds[c] = low
            bar.update(got / max(self.total_items, 1))
        else:
            rnd.scores[c] = low
        rnd.items += done
        if c in rnd.stopped:
            bar.update((self.total_items - done) / max(self.total_items, 1))

    def _choose(self, rnd: _Round) -> int:
        """Pick the round's layer, remember it, and record the round."""
        finalists = {c: rnd.scores[c] for c in rnd.alive if c not in rnd.stopped}
        second = None
        if self.items is not None and not self.index_ties and self.tasks:
            second = {c: rnd.tallies[c].secondary(self.tasks) for c in finalists}.get
        best, ties, used = pick_best(finalists, second)
        self.dropped.append(best)
        self.items_evaluated += rnd.items
        if self.items is not None and self.tasks:
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
        if self.items is not None:
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
        chunked = self.items is not None
        reason = None
        if not chunked:
            own = self.objective.no_bounds_reason if isinstance(self.objective, ItemObjective) else None
            reason = own or "objective not scored item by item"
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
        if self.items is not None and self.tasks:
            result["search"].update(
                chunk_size=self.items.chunk_size,
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
