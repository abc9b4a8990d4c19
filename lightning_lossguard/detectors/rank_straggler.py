"""``rank_straggler``: under DDP/FSDP one rank's steps are persistently slower than the others', in one phase.

Every rank's phase times of each report interval arrive together (the report's one gather). Ranks synchronise
inside the step (the gradient all-reduce in backward, FSDP's all-gathers in forward), so a slow rank makes the
others *wait* there: the others look slow in the phase that synchronises, the slow rank in the phase that
causes it. The cause is the first phase, in the order data loading, optimizer step, forward/loss
(``training_step``), backward, where a minority of ranks is slower than the rest: data loading and the optimizer
step hold no collective of DDP or FSDP, forward holds FSDP's, backward everyone's.

Per interval and per rank, the median time of each phase over the interval's batches. A rank is slow in a
phase when its median is ``slow_ratio`` times the other ranks' median and the difference is at least
``min_excess_ms`` and ``min_share`` of the whole step (data wait included); a warning when the same ranks are
slow for ``persist`` intervals in a row. A rank slowed inside a phase that synchronises every rank (its forward
under FSDP) slows all of them alike there: no rank stands out, and nothing is claimed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.rank_attribution import ranks_text
from lightning_lossguard.detectors.stats import fast_median
from lightning_lossguard.diagnosis import Diagnosis

PHASES = ("data", "training_step", "backward", "optimizer")
"""The phases compared across ranks (a step is the four of them)."""

CAUSE_ORDER = ("data", "optimizer", "training_step", "backward")
"""Phases from the least to the most likely to hold a collective: the first one where a minority of ranks is slow
is the cause; a slowness later in the list is the other ranks waiting for it."""

PHASE_NAMES = {
    "data": "data loading",
    "training_step": "forward/loss (training_step)",
    "backward": "backward",
    "optimizer": "the optimizer step",
}

_REMEDIES = {
    "data": (
        "Check {who}'s data pipeline and host: slow or remote storage, expensive decoding or augmentation, too few "
        "DataLoader workers (num_workers), a shard of larger samples."
    ),
    "training_step": (
        "Balance the work per rank: {who}'s batches may be larger (variable-length sequences: bucket by length) or "
        "take another code path; compare the devices and hosts."
    ),
    "backward": "Check {who}'s device and host: a slower or shared device, thermal throttling, another process on it.",
    "optimizer": (
        "Check {who}'s optimizer step: CPU offload, a host busy with other work, or state that differs across ranks."
    ),
}


@dataclasses.dataclass(frozen=True)
class RankStragglerThresholds(Thresholds):
    slow_ratio: float = threshold(
        1.5, "A rank is slow in a phase when its median time there is this many times the other ranks' ...", low=1
    )
    min_excess_ms: float = threshold(5.0, "... and at least this many milliseconds more per step ...")
    min_share: float = threshold(0.1, "... and at least this share of the whole step (data wait included).", high=1)
    persist: int = threshold(3, "Report intervals in a row in which the same ranks must be slow.", low=1)
    min_batches: int = threshold(5, "Timed batches an interval needs to count.", low=1)


class RankStraggler(Detector[RankStragglerThresholds]):
    """Per report interval, the slow ranks and their phase; a warning after ``persist`` intervals in a row."""

    code = "rank_straggler"
    Thresholds = RankStragglerThresholds

    def __init__(self, thresholds: RankStragglerThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.intervals = 0  # intervals of a distributed run judged so far
        self.streak = 0
        self.slow_ranks: list[int] = []
        self.first_step = -1

    def unjudged(self) -> str | None:
        t = self.thresholds
        if not self.intervals or self.intervals >= t.persist:
            return None  # a single process has no straggler to judge
        return f"needs {int(t.persist)} report intervals of {int(t.min_batches)} timed batches, saw {self.intervals}"

    def update(self, steps: Sequence[int], rank_phase_ms: Mapping[str, np.ndarray]) -> list[Diagnosis]:
        """One report interval: ``rank_phase_ms[phase][rank, i]`` is rank's time (ms) in that phase at ``steps[i]``."""
        t = self.thresholds
        medians = {p: _medians(rank_phase_ms.get(p), int(t.min_batches)) for p in PHASES}
        ranks = max((len(m) for m in medians.values() if m is not None), default=0)
        if ranks < 2 or medians["training_step"] is None or not steps:
            return []
        self.intervals += 1
        step_ms = _step_ms(medians)
        finding = self._slowest(medians, step_ms)
        if finding is None:
            self.streak, self.slow_ranks = 0, []
            return []
        slow, phase = finding
        if slow != self.slow_ranks:
            self.streak, self.slow_ranks, self.first_step = 0, slow, int(steps[0])
        self.streak += 1
        if self.streak < t.persist:
            return []
        return [self._diagnosis(int(steps[-1]), slow, phase, medians, step_ms)]

    def _slowest(self, medians: Mapping[str, np.ndarray | None], step_ms: float) -> tuple[list[int], str] | None:
        """The slow ranks and their phase in this interval (the first phase in :data:`CAUSE_ORDER`), if any."""
        t = self.thresholds
        for phase in CAUSE_ORDER:
            values = medians[phase]
            if values is None:
                continue
            slow = []
            for rank, mine in enumerate(values):
                others = _others(values, rank)
                excess = mine - others
                if (
                    mine >= t.slow_ratio * others
                    and excess >= t.min_excess_ms
                    and excess >= t.min_share * step_ms
                    and math.isfinite(excess)
                ):
                    slow.append(rank)
            if slow and (2 * len(slow) < len(values) or (len(values) == 2 and len(slow) == 1)):
                return slow, phase
        return None

    def _diagnosis(
        self, step: int, slow: list[int], phase: str, medians: Mapping[str, np.ndarray | None], step_ms: float
    ) -> Diagnosis:
        values = medians[phase]
        assert values is not None
        rank = slow[0]
        mine, others = float(values[rank]), _others(values, rank)
        evidence: dict[str, float] = {
            "slow_rank": rank,
            "ranks_slow": len(slow),
            "ranks": len(values),
            "ratio": mine / others if others > 0 else math.inf,
            "excess_ms": mine - others,
            "share": (mine - others) / step_ms if step_ms > 0 else math.nan,
            "step_ms": step_ms,
            "intervals": self.streak,
            "first_step": self.first_step,
        }
        for name in PHASES:
            column = medians[name]
            evidence[f"{name}_ms"] = float(column[rank]) if column is not None else math.nan
            evidence[f"{name}_others_ms"] = _others(column, rank) if column is not None else math.nan
        who = ranks_text(slow)
        ratio = f"{evidence['ratio']:.3g}x" if math.isfinite(evidence["ratio"]) else "far more"
        message = (
            f"{who[0].upper()}{who[1:]} {'is' if len(slow) == 1 else 'are'} persistently slower than the other ranks "
            f"in {PHASE_NAMES[phase]}: {mine:.3g} ms per step vs {others:.3g} ms ({ratio}, +{mine - others:.3g} ms, "
            f"{evidence['share']:.0%} of the {step_ms:.3g} ms step), {self.streak} report intervals in a row since "
            f"step {self.first_step}{self._waiting(medians, rank)}."
        )
        remedies = [_REMEDIES[phase].format(who=who), *code_info(self.code).remedies]
        return self.diagnosis(step, message, evidence, subject=f"{who} {phase}", remedies=remedies)

    def _waiting(self, medians: Mapping[str, np.ndarray | None], rank: int) -> str:
        """Where the other ranks wait for the slow one: the phase they spend the most extra time in."""
        best, where = 0.0, ""
        for phase in PHASES:
            values = medians[phase]
            if values is None:
                continue
            wait = _others(values, rank) - float(values[rank])
            if wait > best:
                best, where = wait, phase
        if not where or best < self.thresholds.min_excess_ms:
            return ""
        return f"; the other ranks wait for it in {PHASE_NAMES[where]} (+{best:.3g} ms)"


def _medians(values: np.ndarray | None, min_batches: int) -> np.ndarray | None:
    """Per rank, the median of its finite times (None when a rank has fewer than ``min_batches``)."""
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        return None
    out = np.empty(array.shape[0])
    for rank, row in enumerate(array):
        finite = row[np.isfinite(row)]
        if finite.size < min_batches:
            return None
        out[rank] = fast_median(finite)
    return out


def _others(values: np.ndarray, rank: int) -> float:
    rest = np.delete(values, rank)
    return fast_median(rest)  # NaN when no other rank


def _step_ms(medians: Mapping[str, np.ndarray | None]) -> float:
    """The median over ranks of a whole step: data wait plus the phases of the batch."""
    total = np.zeros(len(next(m for m in medians.values() if m is not None)))
    for values in medians.values():
        if values is not None:
            total += values
    return fast_median(total)
