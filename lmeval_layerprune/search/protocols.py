"""What the greedy loop (:mod:`lmeval_layerprune.search.greedy`) needs of an objective and of a journal.

The loop knows nothing of models, tasks or files. It talks to:

* an :class:`Objective`: called with the layers to remove (``drop``, original indices) and, when
  racing, the share of its budget to spend (``fraction``); it returns raw scores by name (e.g. one
  per task) that the loop normalises by the full model's. ``higher_is_better`` says which way the
  scores point, ``lower_is_better`` names the scores that point the other way, and ``start_round``
  is told the layers already removed before every round (objectives that reuse hidden states
  within a round use it; the default does nothing);
* optionally an :class:`ItemObjective`, an objective that can also score items one chunk at a
  time (``chunk(drop, k)``), each item's primary value in a known range (:class:`ItemTask`). Then
  the loop bounds what a partly scored candidate can still reach and stops it once another one is
  certain to rank above it (exact early elimination);
* a :class:`SearchJournal`: ``get``/``add`` of raw results by record id, so a killed search resumes
  (:class:`lmeval_layerprune.core.journal.Journal` on disk; ``Journal(None, key)`` in memory);
* an :class:`Evaluator`: where the objective runs. The loop hands it :class:`Measurement` s (as many
  at a time as it takes) and collects the results as they finish; in process
  (:class:`lmeval_layerprune.search.greedy.LocalEvaluator`, one at a time, in the loop's order) or
  on Ray workers that each hold the model (:mod:`lmeval_layerprune.search.parallel`). What the loop
  needs to know of the objective itself travels as :class:`ObjectiveFacts`.

Objectives subclass these protocols explicitly (:class:`Objective` gives ``lower_is_better`` and
``start_round`` their defaults); anything with the same members works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ItemTask:
    """What the early elimination knows of one task: its items and its metric's range."""

    name: str
    metric: str
    n: int
    lo: float = 0.0
    hi: float = 1.0


class Objective(Protocol):
    """Raw scores of the model without ``drop``; the greedy loop normalises them by the full model's."""

    #: whether larger raw scores are better (perplexity: False)
    higher_is_better: bool
    #: names of the raw scores that are better when lower although ``higher_is_better`` (their ratio is inverted)
    lower_is_better: AbstractSet[str] = frozenset()

    def __call__(self, drop: Sequence[int], fraction: float = 1.0) -> dict[str, float]:
        """Scores of the model without ``drop``; ``fraction`` < 1 (racing only) spends that share of the
        budget, on a prefix of the items, so smaller budgets see nested subsets."""
        ...

    def start_round(self, dropped: Sequence[int]) -> None:
        """A round begins with ``dropped`` removed; every candidate of the round removes one more layer."""
        return None


@runtime_checkable
class ItemObjective(Objective, Protocol):
    """An objective that can also score its items chunk by chunk (exact early elimination).

    ``chunk(drop, k)`` returns the primary value of items ``k*chunk_size ..`` of every task under the
    key ``"task|i"`` (a value in ``[lo, hi]`` of its :class:`ItemTask`), and where known a continuous
    secondary value under ``"task|i|s"`` (the tie-break). The primary score of a task is the mean of its
    items' values. ``item_tasks`` is None when the scores cannot be bounded item by item
    (``no_bounds_reason`` says why); the loop then calls the objective whole.
    """

    item_tasks: list[ItemTask] | None
    #: items per task in one chunk
    chunk_size: int
    #: whether every item comes with a secondary value (else ties are broken by the higher index)
    has_secondary: bool = False
    no_bounds_reason: str | None = None

    @property
    def num_chunks(self) -> int:
        """Chunks needed to cover every item of every task."""
        ...

    def chunk(self, drop: Sequence[int], k: int) -> dict[str, float]:
        """Per-item values of chunk ``k`` for the model without ``drop``."""
        ...


class SearchJournal(Protocol):
    """Raw results by record id: what a resumed search reads back instead of measuring again."""

    def get(self, rec_id: str) -> dict[str, float] | None: ...

    def add(self, rec_id: str, raw: dict[str, float], **extra: Any) -> None: ...


@dataclass(frozen=True)
class Measurement:
    """One measurement the loop asks for: the model without ``drop``, as item chunk ``chunk`` or whole (at
    ``fraction`` of the budget). ``rec_id`` is its journal record; ``candidate`` the layer it tries
    (None for the full model); ``extra`` what the journal records beside the result."""

    rec_id: str
    drop: tuple[int, ...]
    chunk: int | None = None
    fraction: float = 1.0
    candidate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def measure(objective: Objective, m: Measurement) -> dict[str, float]:
    """What one measurement asks of ``objective`` (the same call in process and on a worker)."""
    drop = list(m.drop)
    if m.chunk is not None:
        assert isinstance(objective, ItemObjective)
        return objective.chunk(drop, m.chunk)
    return objective(drop) if m.fraction == 1.0 else objective(drop, fraction=m.fraction)


class Evaluator(Protocol):
    """Where measurements run. ``capacity`` is how many more it takes now; ``submit`` hands one over;
    ``collect`` waits for the next to finish (in any order) and returns it with its raw result;
    ``start_round`` says which layers the next measurements' round has removed (hidden-state reuse)."""

    def start_round(self, dropped: Sequence[int]) -> None: ...

    def capacity(self) -> int: ...

    def submit(self, m: Measurement) -> None: ...

    def collect(self) -> tuple[Measurement, dict[str, float]]: ...


@dataclass(frozen=True)
class ObjectiveFacts:
    """What the greedy loop knows of an objective besides its results (picklable: a Ray worker sends it).

    ``item_tasks`` is None when the objective is scored whole (then ``no_bounds_reason`` may say why)."""

    higher_is_better: bool
    lower_is_better: frozenset[str] = frozenset()
    item_tasks: tuple[ItemTask, ...] | None = None
    chunk_size: int = 0
    num_chunks: int = 0
    has_secondary: bool = False
    no_bounds_reason: str | None = None

    @classmethod
    def of(cls, objective: Objective) -> ObjectiveFacts:
        items = isinstance(objective, ItemObjective)
        bounded = items and objective.item_tasks is not None
        return cls(
            higher_is_better=bool(objective.higher_is_better),
            lower_is_better=frozenset(getattr(objective, "lower_is_better", ())),
            item_tasks=tuple(objective.item_tasks or ()) if bounded else None,
            chunk_size=int(objective.chunk_size) if bounded else 0,
            num_chunks=int(objective.num_chunks) if bounded else 0,
            has_secondary=bool(getattr(objective, "has_secondary", False)) if bounded else False,
            no_bounds_reason=getattr(objective, "no_bounds_reason", None) if items else None,
        )
