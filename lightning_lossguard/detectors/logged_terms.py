"""Which scalars a run logs are the terms of its loss, decided from the numbers alone.

A ``training_step`` that returns only its total often logs the parts (``self.log_dict({"recon": ..., "kl": ...})``).
Logged series are the loss's terms when a sum of them with positive weights gives the loss on every logged batch, to
float precision (``tolerance``): names, and metrics that merely move with the loss (an accuracy, a learning rate),
cannot pass that. A logged copy of the total itself is left out first. Decided once, on the first window with
enough logged batches, and checked on every window after: a run whose logged values stop adding up loses its terms
for good. The terms, weighted as the loss weights them, then feed :class:`TermLevels` like handed-over terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_lossguard.detectors.stats import fast_median, row_medians

MIN_ROWS = 8
"""Logged batches a window needs before terms are looked for (fewer pin a fit of several series down poorly)."""


class LoggedTerms:
    """The weights of the logged series that add up to the loss: ``{}`` while undecided or when none do.

    Args:
        tolerance: the largest difference between the loss and the weighted sum, relative to the loss's typical
            size (float32 sums differ by ~1e-7 of it): ``loss_divergence``'s ``term_sum_tolerance``.
        min_share: a series whose weighted values make up less than this share of the loss does not count.
    """

    def __init__(self, tolerance: float = 1e-4, min_share: float = 1e-3) -> None:
        self.tolerance, self.min_share = float(tolerance), float(min_share)
        self.weights: dict[str, float] = {}
        self.given_up = False

    def terms(self, loss: np.ndarray, rows: list[int], logged: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The weighted terms on the logged rows of this window (``{}`` when there are none)."""
        if self.given_up or not rows or not logged:
            return {}
        # A batch that logged but returned no loss (manual optimization) has no loss row: its values are left out.
        at = np.asarray(rows)
        kept = at < len(loss)
        target = np.asarray(loss, dtype=np.float64)[at[kept]]
        finite = np.isfinite(target)
        columns = {n: np.asarray(v, dtype=np.float64)[kept] for n, v in logged.items()}
        if not self.weights:
            self.weights = self._identify(target, finite, columns)
            if not self.weights:
                return {}
        elif not all(n in columns for n in self.weights) or not self._adds_up(target, finite, columns, self.weights):
            self.weights, self.given_up = {}, True
            return {}
        return {n: w * columns[n] for n, w in self.weights.items()}

    def _identify(self, target: np.ndarray, finite: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, float]:
        scale = fast_median(np.abs(target[finite])) if finite.any() else 0.0
        if finite.sum() < MIN_ROWS or not scale > 0:
            return {}
        y = target[finite]
        usable = {
            n: c[finite]
            for n, c in columns.items()
            if np.isfinite(c[finite]).all()
            and np.ptp(c[finite]) > 0
            and np.max(np.abs(c[finite] - y)) > self.tolerance * scale  # the total itself, logged
        }
        names = list(usable)
        while len(names) >= 2:
            x = np.stack([usable[n] for n in names], axis=1)
            weights, *_ = np.linalg.lstsq(x, y, rcond=None)
            share = np.abs(weights) * row_medians(np.abs(x).T) / scale
            keep = [n for n, s in zip(names, share) if s >= self.min_share]
            if len(keep) < len(names):
                names = keep
                continue
            fitted = dict(zip(names, weights.tolist()))
            if all(w > 0 for w in fitted.values()) and self._adds_up(target, finite, columns, fitted):
                return fitted
            return {}
        return {}

    def _adds_up(
        self, target: np.ndarray, finite: np.ndarray, columns: Mapping[str, np.ndarray], weights: Mapping[str, float]
    ) -> bool:
        total = np.sum([w * columns[n] for n, w in weights.items()], axis=0)
        both = finite & np.isfinite(total)
        if not both.any():
            return True  # nothing finite to check against: neither confirmed nor refuted
        scale = max(fast_median(np.abs(target[both])), math.ulp(1.0))
        return bool(np.max(np.abs(total[both] - target[both])) <= self.tolerance * scale)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "given_up": self.given_up}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = {str(k): float(v) for k, v in state.get("weights", {}).items()}
        self.given_up = bool(state.get("given_up", False))
