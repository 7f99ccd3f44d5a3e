"""The statistics of the report: paired bootstrap draws, percentile and BCa intervals, p-values
with their resolution, and the comparison of one run with its unpruned reference on one task.

Paired bootstrap. The items both runs scored are resampled together, ``B`` times with a fixed
seed: the same draw for the run and its reference, and for twin tasks over the same documents
(``arith_probe_add_1d`` / ``arith_probe_mc_add_1d``; :func:`draw_key`), so that per-type means
and differences of replicates are replicates of the means and differences.

Intervals. :func:`percentile_interval` takes the 2.5 / 97.5 percentiles of the replicates;
:func:`bca_interval` corrects those for bias and skew (Efron's BCa: bias from the share of
replicates below the estimate, acceleration from a leave-one-item-out jackknife, per independent
sample as :func:`scipy.stats.bootstrap` computes it).

p-values. :class:`PValue` is a two-sided bootstrap p-value, twice the share of replicates on the
far side of 0. With ``B`` resamples it moves in steps of ``2/B``; when no resample crosses 0 it is
reported as ``p < 2/B`` (:attr:`PValue.text`), never as 0 and never as a number finer than the
resamples resolve. Its Monte Carlo standard error is :attr:`PValue.mc_se`.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

GENERATIVE = "generative"
LIKELIHOOD = "likelihood"
KINDS = (LIKELIHOOD, GENERATIVE)
TYPE_LABELS = {LIKELIHOOD: "classification-style (loglikelihood / multiple choice)", GENERATIVE: "generative"}
#: resamples by default: p-values resolve 2/10,000 and the intervals' Monte Carlo error is small
#: (the sweep evidence's whole report takes about a second more than at 2,000)
DEFAULT_BOOTSTRAP = 10_000
DEFAULT_SEED = 1234
#: the fewest resamples ``report --bootstrap`` accepts for a 95% interval
MIN_BOOTSTRAP = 100
LEVEL = 0.95

#: (draw key, item count) -> leave-one-item-out estimates of a statistic, one per item position
Jackknife = dict[tuple[str, int], np.ndarray]


# ----------------------------------------------------------------- intervals


@dataclass
class Interval:
    value: float | None
    low: float | None = None
    high: float | None = None

    def fmt(self, digits: int = 3) -> str:
        if self.value is None or not math.isfinite(self.value):
            return "-"
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def excludes_zero(iv: Interval) -> bool:
    return iv.excludes_zero()


def _finite(reps: np.ndarray) -> np.ndarray | None:
    finite = reps[np.isfinite(reps)]
    return finite if finite.size >= max(10, reps.size // 2) else None


def percentile_interval(reps: np.ndarray, value: float | None) -> Interval:
    """The point estimate with the 2.5 / 97.5 percentiles of the finite replicates."""
    if value is None or not math.isfinite(value):
        return Interval(None)
    finite = _finite(reps)
    if finite is None:
        return Interval(value)
    lo, hi = np.percentile(finite, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Interval(float(value), float(lo), float(hi))


def acceleration(jack: Jackknife) -> float | None:
    """BCa's acceleration from leave-one-out estimates, one array per independent sample
    (the multi-sample formula of :func:`scipy.stats.bootstrap`); None when undefined."""
    num = den = 0.0
    for values in jack.values():
        n = values.size
        if n < 2 or not np.all(np.isfinite(values)):
            return None
        u = (n - 1) * (values.mean() - values)
        num += float((u**3).sum()) / n**3
        den += float((u**2).sum()) / n**2
    if den <= 0:
        return 0.0 if jack else None
    return num / (6 * den**1.5)


def bca_interval(reps: np.ndarray, value: float | None, jack: Jackknife | None) -> Interval | None:
    """Efron's bias-corrected and accelerated interval from the same replicates as
    :func:`percentile_interval`; None without jackknife values (or when they are not finite).

    Bias: the share of replicates below the estimate (ties count half, as discrete scores make
    many); acceleration: :func:`acceleration`."""
    if value is None or not math.isfinite(value) or not jack:
        return None
    finite = _finite(reps)
    a = acceleration(jack)
    if finite is None or a is None:
        return None
    below = (np.count_nonzero(finite < value) + 0.5 * np.count_nonzero(finite == value)) / finite.size
    if not 0 < below < 1:
        return None
    norm = NormalDist()
    z0 = norm.inv_cdf(below)
    quantiles = []
    for tail in ((1 - LEVEL) / 2, (1 + LEVEL) / 2):
        z = z0 + norm.inv_cdf(tail)
        quantiles.append(100 * norm.cdf(z0 + z / (1 - a * z)))
    lo, hi = np.percentile(finite, quantiles)
    return Interval(float(value), float(lo), float(hi))


# ------------------------------------------------------------------ p-values


@dataclass(frozen=True)
class PValue:
    """A two-sided bootstrap p-value of "the statistic is 0": twice the share of the finite
    replicates on the far side of 0 (the smaller tail, 0 itself counted in both), at most 1."""

    crossings: int  # replicates in the smaller tail
    resamples: int  # finite replicates

    @classmethod
    def from_replicates(cls, d: np.ndarray) -> PValue:
        d = d[np.isfinite(d)]
        return cls(int(min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))), int(d.size))

    @property
    def known(self) -> bool:
        return self.resamples > 0

    @property
    def value(self) -> float:
        """The estimate (0 when no replicate crossed; read :attr:`text` for what may be said)."""
        return min(1.0, 2 * self.crossings / self.resamples) if self.known else float("nan")

    @property
    def resolution(self) -> float:
        """The smallest positive value these resamples can show: ``2 / B``."""
        return 2 / self.resamples if self.known else float("nan")

    @property
    def below_resolution(self) -> bool:
        return self.known and self.crossings == 0

    @property
    def mc_se(self) -> float:
        """Monte Carlo standard error of :attr:`value` (binomial, for the doubled tail share)."""
        if not self.known:
            return float("nan")
        q = self.crossings / self.resamples
        return min(1.0, 2 * math.sqrt(q * (1 - q) / self.resamples))

    @property
    def text(self) -> str:
        """``= 0.0046`` (two significant digits), or ``< 0.0002`` when no resample crossed 0."""
        if not self.known:
            return "=?"
        if self.below_resolution:
            return f"< {_sig(self.resolution, up=True)}"
        return f"= {_sig(self.value)}"

    def to_json(self) -> dict[str, Any]:
        """``p`` is the estimate, or the bound when ``p_below`` (no resample crossed 0)."""
        if not self.known:
            return {"p": None, "p_below": False, "p_mc_se": None, "p_crossings": 0, "p_resamples": 0}
        return {
            "p": self.resolution if self.below_resolution else self.value,
            "p_below": self.below_resolution,
            "p_mc_se": self.mc_se,
            "p_crossings": self.crossings,
            "p_resamples": self.resamples,
        }


def _sig(x: float, digits: int = 2, *, up: bool = False) -> str:
    """``x`` to ``digits`` significant digits in plain decimals (0.0046, 0.80, 1.0); ``up``: a bound,
    rounded up and without trailing zeros (2/3000 -> 0.00067, 2/10000 -> 0.0002)."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(x)))
    if not up:
        return f"{x:.{decimals}f}"
    scaled = math.ceil(round(x * 10**decimals, 9)) / 10**decimals
    return f"{scaled:.{decimals}f}".rstrip("0").rstrip(".")


# -------------------------------------------------------------- the draws


def draw_key(task: str) -> str:
    """Twin tasks (``x_mc_y`` / ``x_y``, ``x_mc`` / ``x``) share a family and so a bootstrap draw."""
    return re.sub(r"_mc(?=_|$)", "", task)


#: item positions drawn at a time (bounds the memory of a bootstrap over large tasks: 32 MB of indices)
CHUNK = 4_000_000


def bootstrap_draws(key: str, n: int, iters: int, seed: int) -> np.ndarray:
    """``iters`` resamples of ``n`` item positions, the same for every call with the same key and n."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n])
    return rng.integers(0, n, size=(iters, n))


def resampled_means(columns: tuple[np.ndarray, ...], key: str, iters: int, seed: int) -> list[np.ndarray]:
    """The mean of each column (paired item values) over the :func:`bootstrap_draws` resamples of
    ``key``, drawn in chunks (the same draws as one :func:`bootstrap_draws` call, in bounded memory)."""
    n = columns[0].size
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n])
    out = [np.empty(iters) for _ in columns]
    step = max(1, CHUNK // n)
    for start in range(0, iters, step):
        rows = min(step, iters - start)
        draws = rng.integers(0, n, size=(rows, n))
        for x, means in zip(columns, out, strict=True):
            means[start : start + rows] = x[draws].mean(axis=1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray, higher_is_better: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den if higher_is_better else den / num
    return np.where(np.isfinite(out), out, np.nan)


# ------------------------------------------------------------ comparisons


@dataclass
class Comparison:
    """One run's score of one task against the unpruned reference."""

    task: str
    metric: str
    kind: str
    score: float
    stderr: float | None
    base: float
    n: int | None
    delta: Interval
    retention: Interval
    source: str  # "paired bootstrap (n items)" / "stderr" / ""
    reps: np.ndarray | None = field(default=None, repr=False)  # retention replicates
    jack: Jackknife | None = field(default=None, repr=False)  # leave-one-item-out retentions
    retention_bca: Interval | None = None


def _paired(xp: np.ndarray, xb: np.ndarray, key: str, hib: bool, ratio_ok: bool, iters: int, seed: int) -> tuple:
    """Delta and retention of paired item values ``xp`` (run) / ``xb`` (reference) by bootstrap."""
    n = xp.size
    mp, mb = resampled_means((xp, xb), key, iters, seed)
    point_p, point_b = float(xp.mean()), float(xb.mean())
    delta = percentile_interval(mp - mb, point_p - point_b)
    if not ratio_ok:
        return delta, Interval(None), None, None, None
    reps = _ratio(mp, mb, hib)
    point = float(_ratio(np.array([point_p]), np.array([point_b]), hib)[0])
    loo = _ratio((xp.sum() - xp) / (n - 1), (xb.sum() - xb) / (n - 1), hib)
    jack = {(key, n): loo}
    return delta, percentile_interval(reps, point), reps, jack, bca_interval(reps, point, jack)


def _independent(s: Any, b: Any, task: str, hib: bool, ratio_ok: bool, iters: int, seed: int) -> tuple:
    """Delta and retention from lm-eval's standard errors, the runs taken as independent (delta method)."""
    se_p, se_b = s.stderr, b.stderr
    known = se_p is not None and se_b is not None
    d = s.value - b.value
    se_d = math.hypot(se_p, se_b) if known else None
    delta = Interval(d, d - 1.96 * se_d, d + 1.96 * se_d) if se_d is not None else Interval(d)
    if not ratio_ok:
        return delta, Interval(None), None, known
    num, den = (s.value, b.value) if hib else (b.value, s.value)
    r = num / den if den else None
    if r is None or not known:
        return delta, Interval(r), None, known
    se_num, se_den = (se_p, se_b) if hib else (se_b, se_p)
    se_r = math.sqrt(se_num**2 / den**2 + num**2 * se_den**2 / den**4)
    z = np.random.default_rng([seed, zlib.crc32(task.encode())]).standard_normal(iters)
    return delta, Interval(r, r - 1.96 * se_r, r + 1.96 * se_r), r + se_r * z, known


def compare(
    run: Any,
    ref: Any,
    task: str,
    metric: str,
    filt: str | None,
    *,
    iters: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> Comparison | None:
    """Score, change and retention of ``run`` against ``ref`` on one task metric, with intervals."""
    s = run.score(task, metric, filt)
    b = ref.score(task, metric, filt)
    if s is None or b is None:
        return None
    kind = s.kind if hasattr(s, "kind") else (GENERATIVE if s.output_type == "generate_until" else LIKELIHOOD)
    hib = s.higher_is_better is not False
    ratio_ok = b.value > 0 and s.value >= 0
    x = run.items(task, metric=metric, filter=s.filter)
    y = ref.items(task, metric=metric, filter=b.filter)
    common = sorted(set(x) & set(y)) if x and y else []
    if common and ratio_ok:
        ratio_ok = min(min(x[i] for i in common), min(y[i] for i in common)) >= 0
    if len(common) >= 2:
        xp = np.fromiter((x[i] for i in common), float, len(common))
        xb = np.fromiter((y[i] for i in common), float, len(common))
        delta, retention, reps, jack, bca = _paired(xp, xb, draw_key(task), hib, ratio_ok, iters, seed)
        source = f"paired bootstrap ({len(common)} items)"
    else:
        delta, retention, reps, known = _independent(s, b, task, hib, ratio_ok, iters, seed)
        jack, bca = None, None
        source = "stderr" if known else ""
    return Comparison(task, metric, kind, s.value, s.stderr, b.value, s.n, delta, retention, source, reps, jack, bca)


# ------------------------------------------------------------ type means


@dataclass
class TypeSummary:
    """Mean retention of one task type for one run, with its bootstrap interval."""

    kind: str
    retention: Interval
    tasks: list[str]
    reps: np.ndarray | None = field(default=None, repr=False)
    jack: Jackknife | None = field(default=None, repr=False)
    bca: Interval | None = None


def type_summary(kind: str, members: list[Comparison]) -> TypeSummary:
    """The mean of the members' retentions (the average of the tasks' ratios, each task weighing the
    same, not a ratio of pooled items), its interval from the same replicates, its jackknife."""
    value = float(np.mean([c.retention.value for c in members]))
    reps = jack = None
    if all(c.reps is not None for c in members):
        with np.errstate(invalid="ignore"):
            reps = np.mean(np.stack([c.reps for c in members]), axis=0)
    if all(c.jack for c in members):
        jack = {}
        for c in members:
            for key, loo in c.jack.items():  # type: ignore[union-attr]
                base = jack.get(key, np.full(loo.size, value))
                jack[key] = base + (loo - c.retention.value) / len(members)
    interval = percentile_interval(reps, value) if reps is not None else Interval(value)
    bca = bca_interval(reps, value, jack) if reps is not None else None
    return TypeSummary(kind, interval, [c.task for c in members], reps, jack, bca)


@dataclass
class Difference:
    """``a - b`` of two per-type retentions: the percentile interval, the BCa one and the p-value."""

    interval: Interval
    p: PValue
    bca: Interval | None = None


def _jack_difference(a: TypeSummary, b: TypeSummary) -> Jackknife | None:
    if not a.jack or not b.jack:
        return None
    out = {}
    for key in {*a.jack, *b.jack}:
        ja = a.jack.get(key, a.retention.value)
        jb = b.jack.get(key, b.retention.value)
        out[key] = np.asarray(ja - jb, float)
    return out


def paired_difference(a: TypeSummary, b: TypeSummary) -> Difference:
    """``a - b`` of two per-type retentions with its bootstrap intervals and two-sided p-value.

    Paired: both come from the same resamples of the same items (see :func:`bootstrap_draws`), so
    the difference of the replicates is the replicate of the difference."""
    diff = a.retention.value - b.retention.value  # type: ignore[operator]
    if a.reps is None or b.reps is None or a.reps.shape != b.reps.shape:
        return Difference(Interval(diff), PValue(0, 0))
    with np.errstate(invalid="ignore"):
        d = a.reps - b.reps
    return Difference(
        percentile_interval(d, diff), PValue.from_replicates(d), bca_interval(d, diff, _jack_difference(a, b))
    )
