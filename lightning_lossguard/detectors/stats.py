"""Robust statistics the detectors share. Plain numbers in, plain numbers out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826
"""Scale factor that makes the median absolute deviation estimate a normal standard deviation."""


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def median(values: Iterable[float] | np.ndarray) -> float:
    """Median of the finite values (NaN when there are none).

    Detectors call this on windows of tens to hundreds of values, where sorting a Python list is several
    times faster than ``np.median``'s per-call overhead.
    """
    if isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    ordered = sorted(v for v in values if math.isfinite(v))
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
    return float(MAD_TO_SIGMA * np.median(np.abs(array - np.median(array))))


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
    i, j = np.triu_indices(xs.size, k=1)
    dx = xs[j] - xs[i]
    ok = dx != 0
    if not ok.any():
        return math.nan
    return float(np.median((ys[j] - ys[i])[ok] / dx[ok]))


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


def log10(value: float) -> float:
    """log10 for positive finite numbers, NaN otherwise."""
    return math.log10(value) if value > 0 and math.isfinite(value) else math.nan


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
            self.values.extend(np.median(blocks, axis=1).tolist())
            # Step of each block's last value: its position among the new values.
            ends = (np.arange(1, done + 1) * self.size - 1) - start
            self.steps.extend(int(new_steps[e]) for e in ends)
        self._pending = pending[done * self.size :].tolist()
        self._pending_step = int(new_steps[-1])
        while len(self.values) > self.max_blocks:
            self._merge()

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
