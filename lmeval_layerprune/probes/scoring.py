"""One rule for probe metrics that cannot score every item: not scorable is missing, not zero.

A per-item metric returns :data:`NOT_SCORABLE` (``nan``) for an item its definition excludes
(Rep-n of a response shorter than n tokens; Self-BLEU of a response without two sentences of
at least n tokens; a CoT step-error rate of a response that writes no step is a ratio with a
zero denominator, ``(0, 0)``). The aggregations here skip such items:

* :func:`mean_scorable`: mean over the scorable items; ``nan`` when none is (never 0);
* :func:`pooled_ratio`: for ``(numerator, denominator)`` items, sum / sum over the items with
  a positive denominator; ``nan`` when there are none;
* :func:`count_scorable`: how many items were scorable, reported beside the value as a metric
  named ``<metric>_n`` (the same per-item function under a second name).

In a task YAML::

    metric_list:
      - metric: !function lmeval_layerprune.probes.degeneration.rep_4
        aggregation: !function lmeval_layerprune.probes.scoring.mean_scorable
        higher_is_better: false
      - metric: !function lmeval_layerprune.probes.degeneration.rep_4_n
        aggregation: !function lmeval_layerprune.probes.scoring.count_scorable
        higher_is_better: true

**Standard errors.** lm-eval computes a closed-form stderr only for its own ``mean``
aggregation and bootstraps only a fixed list of its own functions (``nanmean`` among them); for
any other aggregation it reports ``"N/A"``. So these metrics carry ``<metric>_stderr = "N/A"``:
explicitly absent rather than wrong. (With ``aggregation: mean`` lm-eval would have averaged
the excluded items as zeros and given a stderr over all items; lm-eval's ``nanmean`` would
bootstrap, but a resample that draws no scorable item is ``nan`` and turns the whole stderr
into ``nan`` at the small sample sizes probes use.) :func:`stderr_scorable` gives the
closed-form standard error of the mean over the scorable items, for reports that read the
per-item values from lm-eval's samples files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

#: The per-item value of an item the metric's definition excludes.
NOT_SCORABLE: float = math.nan


def is_scorable(value: Any) -> bool:
    """Whether a per-item value counts: a finite-or-infinite number that is not ``nan`` (and not
    ``None``), or a ``(numerator, denominator)`` pair with a positive denominator."""
    if value is None:
        return False
    if isinstance(value, tuple | list):
        return len(value) == 2 and value[1] > 0
    return not math.isnan(float(value))


def scorable(items: Iterable[Any]) -> list[Any]:
    """The scorable items, in order."""
    return [v for v in items if is_scorable(v)]


def mean_scorable(items: Iterable[Any]) -> float:
    """lm-eval aggregation: the mean over scorable items; ``nan`` when none is scorable."""
    values = [float(v) for v in scorable(items)]
    return math.fsum(values) / len(values) if values else math.nan


def count_scorable(items: Iterable[Any]) -> int:
    """lm-eval aggregation: the number of scorable items (the ``<metric>_n`` beside a value)."""
    return len(scorable(items))


def pooled_ratio(items: Iterable[Sequence[float]]) -> float:
    """lm-eval aggregation for ``(numerator, denominator)`` items: sum of numerators / sum of
    denominators over the scorable items; ``nan`` when no item has a positive denominator."""
    pairs = scorable(items)
    total = sum(d for _, d in pairs)
    return sum(n for n, _ in pairs) / total if total else math.nan


def stderr_scorable(items: Iterable[Any]) -> float:
    """Standard error of :func:`mean_scorable`: sample standard deviation (n - 1) over the
    scorable items / sqrt(their number); ``nan`` with fewer than two scorable items."""
    values = [float(v) for v in scorable(items)]
    k = len(values)
    if k < 2:
        return math.nan
    mu = math.fsum(values) / k
    return math.sqrt(math.fsum((v - mu) ** 2 for v in values) / (k - 1) / k)
