"""Robust statistics the detectors share. Plain numbers in, plain numbers out."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence, Sized
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826
"""Scale factor that makes the median absolute deviation estimate a normal standard deviation."""


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


_SORT_LIMIT = 100  # values: above this many, the median is taken in numpy


def median(values: Iterable[float] | np.ndarray) -> float:
    """Median of the finite values (NaN when there are none).

    Detectors call this on windows of tens to hundreds of values: up to ~100, sorting a Python list is faster
    than any numpy call's overhead; above, a partition of an array is (a report computes dozens of these).
    """
    if isinstance(values, Sized) and not isinstance(values, np.ndarray) and len(values) > _SORT_LIMIT:
        values = np.fromiter(values, dtype=np.float64, count=len(values))
    if isinstance(values, np.ndarray):
        values = values.ravel()
        return fast_median(values[np.isfinite(values)])
    ordered = sorted(v for v in values if math.isfinite(v))
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def fast_median(array: np.ndarray) -> float:
    """Median of a 1-D array of finite numbers through ``np.partition``: ``np.median`` checks for NaN and costs
    tens of microseconds a call, which adds up over a report's many small medians."""
    n = array.size
    if not n:
        return math.nan
    mid = n // 2
    if n % 2:
        return float(np.partition(array, mid)[mid])
    part = np.partition(array, (mid - 1, mid))
    return float((part[mid - 1] + part[mid]) / 2)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` where each counts ``weights`` times (the lower weighted median; NaN when empty or
    weightless): e.g. per-parameter ratios with each parameter's element count, so every weight counts once."""
    keep = np.isfinite(values) & (weights > 0)
    values, weights = values[keep], weights[keep]
    if not values.size:
        return math.nan
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def model_update_ratio(ratios: np.ndarray, sizes: np.ndarray | None = None) -> float:
    """The run's update/weight ratio from per-parameter ratios (negative: not measured): the median over the
    model's weights, each element counting once (``sizes``: elements per parameter); without sizes, the median
    over parameters. NaN when nothing was measured."""
    seen = ratios >= 0
    if not seen.any():
        return math.nan
    if sizes is not None and len(sizes) == len(ratios):
        return weighted_median(ratios[seen], np.asarray(sizes, dtype=np.float64)[seen])
    return median(ratios[seen])


def row_medians(rows: np.ndarray) -> np.ndarray:
    """Median of each row of a 2-D array, NaN where a row holds one, as ``np.median(rows, axis=1)``: a sort along
    the rows. ``np.median`` itself imports ``numpy.ma`` on its first call (~10 ms, paid inside a report)."""
    ordered = np.sort(rows, axis=1)
    n = rows.shape[1]
    middle = ordered[:, n // 2] if n % 2 else (ordered[:, n // 2 - 1] + ordered[:, n // 2]) / 2
    return np.where(np.isnan(ordered[:, -1]), np.nan, middle)


def column_medians(rows: np.ndarray) -> np.ndarray:
    """Median of each column, ignoring NaN (NaN where a column has none). Vectorised: ``np.nanmedian`` goes
    through masked arrays and costs milliseconds on the small windows detectors see."""
    ordered = np.sort(rows, axis=0)  # NaN sorts last
    count = np.isfinite(rows).sum(axis=0)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[None, :], axis=0)[0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[None, :], axis=0)[0]
    return np.where(count > 0, (low + high) / 2, np.nan)


def mad(values: Sequence[float] | np.ndarray) -> float:
    """Median absolute deviation, scaled to estimate a standard deviation."""
    array = finite(values)
    if not array.size:
        return math.nan
    return float(MAD_TO_SIGMA * fast_median(np.abs(array - fast_median(array))))


def theil_sen_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, max_points: int = 200) -> float:
    """Median of pairwise slopes: a trend estimate that ignores up to ~29% outliers."""
    if len(x) <= 12:  # a handful of block medians: plain Python beats numpy's per-call overhead
        points = [(float(a), float(b)) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
        slopes = [(b2 - b1) / (a2 - a1) for i, (a1, b1) in enumerate(points) for a2, b2 in points[i + 1 :] if a2 != a1]
        return median(slopes) if slopes else math.nan
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 2:
        return math.nan
    if xs.size > max_points:  # evenly thin long series: O(n^2) pairs
        pick = np.linspace(0, xs.size - 1, max_points).round().astype(int)
        xs, ys = xs[pick], ys[pick]
    i, j = _pairs(xs.size)
    dx = xs[j] - xs[i]
    ok = dx != 0
    if not ok.any():
        return math.nan
    return fast_median((ys[j] - ys[i])[ok] / dx[ok])


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` of ``n`` points (built once per size: a report fits the same sizes again and again)."""
    i, j = np.triu_indices(n, k=1)
    i.flags.writeable = j.flags.writeable = False
    return i, j


def rank_correlation(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation: how monotonically ``y`` follows ``x`` (1: always rising)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if keep.sum() < 3:
        return math.nan
    rx = np.argsort(np.argsort(xs[keep])).astype(np.float64)
    ry = np.argsort(np.argsort(ys[keep])).astype(np.float64)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float(np.dot(rx, rx) * np.dot(ry, ry)))
    return float(np.dot(rx, ry) / denominator) if denominator > 0 else math.nan


def mann_kendall(values: Sequence[float] | np.ndarray, max_points: int = 200) -> float:
    """Mann-Kendall trend statistic as a z-score: positive for a rising series, negative for a falling one.

    Rank-based, so it holds for heavy-tailed noise. Under the null of exchangeable values (no trend) z is
    approximately standard normal: ``|z| >= 3`` happens by chance with probability about 0.003 (two-sided).
    """
    y = finite(values)
    if y.size > max_points:  # evenly thinned: O(n^2) pairs, and a long series keeps its shape
        y = y[np.linspace(0, y.size - 1, max_points).round().astype(int)]
    n = y.size
    if n < 4:
        return 0.0
    diff = np.sign(y[None, :] - y[:, None])
    s = float(np.triu(diff, k=1).sum())
    _, counts = np.unique(y, return_counts=True)
    ties = float(np.sum(counts * (counts - 1) * (2 * counts + 5)))
    variance = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    if variance <= 0:
        return 0.0
    return (s - math.copysign(1.0, s)) / math.sqrt(variance) if s else 0.0


def rank_sum_z(before: Sequence[float] | np.ndarray, after: Sequence[float] | np.ndarray) -> float:
    """Mann-Whitney U as a z-score: positive when ``after`` tends to be larger than ``before``.

    Rank-based (heavy tails do not matter); approximately standard normal under the null that both samples
    come from one distribution.
    """
    a, b = finite(before), finite(after)
    if a.size < 2 or b.size < 2:
        return 0.0
    both = np.concatenate([a, b])
    ranks = _ranks(both)
    u = float(ranks[a.size :].sum()) - b.size * (b.size + 1) / 2
    mean = a.size * b.size / 2
    _, counts = np.unique(both, return_counts=True)
    n = both.size
    variance = a.size * b.size / 12 * ((n + 1) - float(np.sum(counts**3 - counts)) / (n * (n - 1)))
    return (u - mean) / math.sqrt(variance) if variance > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(1, values.size + 1)
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if unique.size != values.size:
        sums = np.zeros(unique.size)
        np.add.at(sums, inverse, ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def curvature_noise(values: Sequence[float] | np.ndarray, lag: int = 1) -> float:
    """Robust standard deviation of the noise around a trend of any steady slope: the MAD of second
    differences of values ``lag`` apart divided by sqrt(6) (a constant rate of change, e.g. an exponential climb
    in log scale, leaves them at zero). A lag above 1 also sees noise that wanders: correlated neighbours differ
    by less than the noise's spread."""
    second = _second_differences(values, lag)
    return math.nan if second is None else mad(second) / math.sqrt(6)


def convex_curvature_noise(values: Sequence[float] | np.ndarray, lag: int) -> float:
    """:func:`curvature_noise` from the negative second differences alone: when the noise is symmetric their median
    is that of its absolute values, so ``MAD_TO_SIGMA`` scales it to a standard deviation. A convex stretch (a loss
    that falls fast and levels off, the bottom of a U) only adds positive second differences, which at long lags
    would otherwise pass for noise. NaN with fewer than 5 negative ones."""
    second = _second_differences(values, lag)
    negative = -second[second < 0] if second is not None else np.empty(0)
    if negative.size < 5:
        return math.nan
    return MAD_TO_SIGMA * fast_median(negative) / math.sqrt(6)


def _second_differences(values: Sequence[float] | np.ndarray, lag: int) -> np.ndarray | None:
    """Second differences of the finite values ``lag`` apart (None with too few values for the lag)."""
    y = finite(values)
    if y.size < 2 * lag + 2:
        return None
    second: np.ndarray = y[2 * lag :] - 2 * y[lag:-lag] + y[: -2 * lag]
    return second


def step_noise(values: Sequence[float] | np.ndarray) -> float:
    """Robust standard deviation of the noise around a slowly moving level: the MAD of successive differences
    divided by sqrt(2) (a trend barely changes neighbouring differences)."""
    y = finite(values)
    if y.size < 3:
        return math.nan
    return mad(np.diff(y)) / math.sqrt(2)


def log10(value: float) -> float:
    """log10 for positive finite numbers, NaN otherwise."""
    return math.log10(value) if value > 0 and math.isfinite(value) else math.nan


def log10_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """:func:`log10` of every value at once (a report's rows are judged in bulk, not value by value)."""
    array = np.asarray(values, dtype=np.float64)
    positive = np.isfinite(array) & (array > 0)
    out = np.full(array.shape, math.nan)
    np.log10(array, out=out, where=positive)
    return out


class BlockMedians:
    """Compresses a long noisy series into medians of consecutive blocks of ``size`` values.

    The pending partial block is kept; completed blocks are (step of the block's last value, median).
    Beyond ``max_blocks`` blocks, neighbours are merged pairwise and the block size doubles, so a run of
    any length keeps a bounded, evenly spaced history. Plain lists, so detectors that own one stay
    resumable.
    """

    def __init__(self, size: int, max_blocks: int = 2000) -> None:
        self.size = max(1, int(size))
        self.max_blocks = max(2, int(max_blocks))
        self.steps: list[int] = []
        self.values: list[float] = []
        self._pending: list[float] = []
        self._pending_step = 0
        self.count = 0

    def extend(self, steps: Sequence[int], values: Sequence[float] | np.ndarray) -> None:
        array = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(array)
        if not keep.any():
            return
        new_values = array[keep]
        new_steps = np.asarray(steps)[keep]
        self.count += int(new_values.size)
        pending = np.concatenate([np.asarray(self._pending, dtype=np.float64), new_values])
        start = len(self._pending)
        done = pending.size // self.size
        if done:
            blocks = pending[: done * self.size].reshape(done, self.size)
            self.values.extend(row_medians(blocks).tolist())
            # Step of each block's last value: its position among the new values.
            ends = (np.arange(1, done + 1) * self.size - 1) - start
            self.steps.extend(new_steps[ends].astype(np.int64).tolist())
        self._pending = pending[done * self.size :].tolist()
        self._pending_step = int(new_steps[-1])
        while len(self.values) > self.max_blocks:
            self._merge()

    def since(self, step: int) -> list[tuple[int, float]]:
        """The completed blocks that end after ``step``: (step, median) each."""
        return [(s, v) for s, v in zip(self.steps, self.values) if s > step]

    def _merge(self) -> None:
        # The mean of two neighbouring medians stands in for the median of their union.
        pairs = len(self.values) // 2 * 2
        merged = [(a + b) / 2 for a, b in zip(self.values[:pairs:2], self.values[1:pairs:2])]
        self.steps = self.steps[1:pairs:2] + self.steps[pairs:]
        self.values = merged + self.values[pairs:]
        self.size *= 2

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update({k: (list(v) if isinstance(v, list) else v) for k, v in state.items()})
