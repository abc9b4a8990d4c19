"""Robust statistics the detectors share. Plain numbers in, plain numbers out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826
"""Scale factor that makes the median absolute deviation estimate a normal standard deviation."""


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def median(values: Sequence[float] | np.ndarray) -> float:
    array = finite(values)
    return float(np.median(array)) if array.size else math.nan


def mad(values: Sequence[float] | np.ndarray) -> float:
    """Median absolute deviation, scaled to estimate a standard deviation."""
    array = finite(values)
    if not array.size:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(array - np.median(array))))


def theil_sen_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, max_points: int = 200) -> float:
    """Median of pairwise slopes: a trend estimate that ignores up to ~29% outliers."""
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
    Picklable plain lists, so detectors that own one stay resumable.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self.steps: list[int] = []
        self.values: list[float] = []
        self._pending: list[float] = []
        self._pending_step = 0
        self.count = 0

    def extend(self, steps: Sequence[int], values: Sequence[float] | np.ndarray) -> None:
        for step, value in zip(steps, values):
            value = float(value)
            if not math.isfinite(value):
                continue
            self._pending.append(value)
            self._pending_step = int(step)
            self.count += 1
            if len(self._pending) == self.size:
                self.steps.append(self._pending_step)
                self.values.append(float(np.median(self._pending)))
                self._pending = []

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update({k: (list(v) if isinstance(v, list) else v) for k, v in state.items()})
