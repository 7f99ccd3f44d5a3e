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
  (:class:`lmeval_layerprune.core.journal.Journal` on disk; ``Journal(None, key)`` in memory).

Objectives subclass these protocols explicitly (:class:`Objective` gives ``lower_is_better`` and
``start_round`` their defaults); anything with the same members works too.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
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
