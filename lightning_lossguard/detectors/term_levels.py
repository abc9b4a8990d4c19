"""The levels of a multi-term loss's terms at the start and now, from the ``loss_terms`` a ``training_step`` hands
over: whether a term that made up a fair share of the start is still being learnt while the total rises.

A total can rise while the objective is learnt: one term trades off against the others (a VQ-VAE's codebook loss
grows while its codes catch up with a growing encoder, and its gradient grows with it). By the total and the gradient
norm alone that is a divergence; a term that held ``share`` of the start and fell ``fall``-fold below it, beyond its
own noise, says it is not. ``loss_divergence`` and ``exploding_gradients`` then warn instead of raising an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_lossguard.detectors.stats import median, rank_sum_z


class TermLevels:
    """Each term's first and latest ``keep`` finite values (plain lists: checkpoint-safe).

    Args:
        keep: values that make a level (the start's, the current one).
        share: a term counts when it held at least this share of the start (the terms' magnitudes summed) ...
        fall: ... and fell at least this many times below its start ...
        z: ... with its latest values below its first by a rank-sum z of at least this (its own noise).
    """

    def __init__(self, keep: int, share: float, fall: float, z: float) -> None:
        self.keep, self.share, self.fall, self.z = int(keep), float(share), float(fall), float(z)
        self.first: dict[str, list[float]] = {}
        self.latest: dict[str, list[float]] = {}

    def extend(self, terms: Mapping[str, np.ndarray]) -> None:
        for name, values in terms.items():
            finite = [v for v in np.asarray(values, dtype=np.float64).tolist() if math.isfinite(v)]
            first = self.first.setdefault(name, [])
            first.extend(finite[: max(0, self.keep - len(first))])
            self.latest[name] = (self.latest.get(name, []) + finite)[-self.keep :]

    def trade_off(self) -> str | None:
        """None when the run hands over no terms; "" when no term is being learnt; else what the terms did: the
        largest fall among those still being learnt, and the terms that rose."""
        if not self.first:
            return None
        start = {n: abs(median(v)) for n, v in self.first.items() if v and self.latest.get(n)}
        now = {n: median(self.latest[n]) for n in start}
        total = sum(start.values())
        if len(start) < 2 or not total > 0:
            return ""
        learnt = [
            n
            for n in start
            if start[n] >= self.share * total
            and abs(now[n]) * self.fall <= start[n]
            and rank_sum_z(np.abs(self.first[n]), np.abs(self.latest[n])) <= -self.z
        ]
        if not learnt:
            return ""
        fell = max(learnt, key=lambda n: start[n] / max(abs(now[n]), 1e-300))
        rose = ", ".join(f"{n} {start[n]:.3g} -> {now[n]:.3g}" for n in start if abs(now[n]) > start[n])
        return (
            f"the rise is in {rose or 'no single term'}, while {fell} fell {start[fell]:.3g} -> {now[fell]:.3g}: one "
            "term of the objective trades off against the others (a VQ-VAE's codebook loss while its codes catch up, "
            "a KL or adversarial term)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "first": {k: list(v) for k, v in self.first.items()},
            "latest": {k: list(v) for k, v in self.latest.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.first = {str(k): [float(x) for x in v] for k, v in state.get("first", {}).items()}
        self.latest = {str(k): [float(x) for x in v] for k, v in state.get("latest", {}).items()}
