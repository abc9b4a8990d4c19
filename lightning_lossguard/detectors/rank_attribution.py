"""Which rank a loss finding starts on, from every rank's own losses (distributed runs).

Under DDP or FSDP a NaN or a blow-up that one rank's data causes reaches every rank at the next optimizer step
(the gradients are averaged), so the mean loss the loss detectors judge cannot say where it came from. Each
rank's own losses can: the first rank whose loss went non-finite, or crossed ``rise``-fold its own start, is
the first place to look at the data. When every rank got there at the same step, the cause is shared (the
weights, the learning rate), not one rank's data, and the message says so.

Plain numbers in (``[ranks, batches]`` losses), amended diagnoses out: no Lightning, no collective.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_lossguard.detectors.stats import median
from lightning_lossguard.diagnosis import Diagnosis, format_number

ATTRIBUTED = ("nonfinite_loss", "loss_divergence")
"""Codes whose diagnoses name the rank(s) they started on."""


class RankAttribution:
    """Per rank: the first step with a non-finite loss, and for rises, the step its loss (block medians of
    ``block`` batches) first reached ``1 + rise`` times its own start (the median of its first ``start_blocks``
    blocks).

    Args:
        rise: the rise over the start that counts as the start of a blow-up (``loss_divergence``'s ``rise``).
        block: batches per block median.
        start_blocks: blocks whose median is a rank's start level.
    """

    def __init__(self, rise: float = 1.0, block: int = 10, start_blocks: int = 3) -> None:
        self.rise = float(rise)
        self.block = max(1, int(block))
        self.start_blocks = max(1, int(start_blocks))
        self.ranks = 0
        self.first_nonfinite: list[int] = []  # per rank; -1: never
        self.pending: list[list[float]] = []  # per rank, finite losses of the block being filled
        self.pending_steps = 0
        self.starts: list[list[float]] = []  # per rank, its first block medians (its start level)
        self.latest: list[float] = []  # per rank, its latest block median
        self.blocks = 0
        self.crossed: list[int] = []  # per rank, the step its loss first reached (1 + rise) x its start; -1: not yet

    def update(self, steps: Sequence[int], losses: np.ndarray) -> None:
        """Add one window: ``losses[rank, i]`` is rank's loss at ``steps[i]``."""
        values = np.asarray(losses, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] != len(steps):
            return
        if values.shape[0] != self.ranks:
            self._reset(values.shape[0])
        for i, step in enumerate(steps):
            column = values[:, i]
            for rank, value in enumerate(column.tolist()):
                if not math.isfinite(value):
                    if self.first_nonfinite[rank] < 0:
                        self.first_nonfinite[rank] = int(step)
                elif self.first_nonfinite[rank] < 0:
                    self.pending[rank].append(value)
            self.pending_steps += 1
            if self.pending_steps == self.block:
                self._close_block(int(step))

    def _reset(self, ranks: int) -> None:
        self.ranks = ranks
        self.first_nonfinite = [-1] * ranks
        self.pending = [[] for _ in range(ranks)]
        self.pending_steps = 0
        self.starts = [[] for _ in range(ranks)]
        self.latest = [math.nan] * ranks
        self.blocks = 0
        self.crossed = [-1] * ranks

    def _close_block(self, step: int) -> None:
        self.blocks += 1
        for rank in range(self.ranks):
            level = median(self.pending[rank])
            self.pending[rank] = []
            self.latest[rank] = level
            if self.blocks <= self.start_blocks:
                self.starts[rank].append(level)
                continue
            start = self.start(rank)
            if self.crossed[rank] < 0 and start > 0 and level >= (1 + self.rise) * start:
                self.crossed[rank] = step
        self.pending_steps = 0

    def start(self, rank: int) -> float:
        return median(self.starts[rank]) if self.starts[rank] else math.nan

    def current(self, rank: int) -> float:
        return self.latest[rank]

    # -- attribution -------------------------------------------------------------------------------------
    def attribute(self, found: Sequence[Diagnosis]) -> list[Diagnosis]:
        """``found`` with the loss findings of a distributed run naming the rank(s) they started on."""
        if self.ranks < 2:
            return list(found)
        out = []
        for diagnosis in found:
            if diagnosis.code == "nonfinite_loss":
                diagnosis = self._nonfinite(diagnosis)
            elif diagnosis.code == "loss_divergence" and diagnosis.subject != "falling":
                diagnosis = self._rising(diagnosis)
            out.append(diagnosis)
        return out

    def _nonfinite(self, diagnosis: Diagnosis) -> Diagnosis:
        steps = [s for s in self.first_nonfinite if s >= 0]
        if not steps:
            return diagnosis
        first = min(steps)
        starters = [r for r, s in enumerate(self.first_nonfinite) if s == first]
        later = sorted((s, r) for r, s in enumerate(self.first_nonfinite) if s > first)
        if len(starters) < self.ranks:
            followed = ""
            if later:
                at = sorted({s for s, _ in later})
                who = [r for _, r in later]
                when = f"at step {at[0]}" if len(at) == 1 else f"from step {at[0]}"
                followed = f" ({ranks_text(who)} followed {when})"
            text = (
                f" It started on {ranks_text(starters)} only{followed}: look at {ranks_text(starters)}'s batch of "
                f"step {first} first."
            )
        else:
            text = (
                f" It started on every rank at once ({self.ranks} ranks): a shared cause (the weights, the learning "
                "rate), not one rank's data."
            )
        return _amend(diagnosis, text, starters, self.ranks, {})

    def _rising(self, diagnosis: Diagnosis) -> Diagnosis:
        steps = [s for s in self.crossed if s >= 0]
        if not steps:
            return diagnosis
        first = min(steps)
        starters = [r for r, s in enumerate(self.crossed) if s == first]
        factors = [self.current(r) / self.start(r) if self.start(r) > 0 else math.nan for r in range(self.ranks)]
        mine = max(factors[r] for r in starters)
        others = [f for r, f in enumerate(factors) if r not in starters and math.isfinite(f)]
        extra = {"first_rank_rise": mine, "other_ranks_rise": max(others) if others else math.nan}
        threshold = f"{format_number(1 + self.rise)}x"
        if len(starters) < self.ranks:
            behind = f"; the other ranks' at most {format_number(max(others))}x" if others else ""
            text = (
                f" It started on {ranks_text(starters)} only (its loss reached {threshold} its own start by step "
                f"{first} and is {format_number(mine)}x it now{behind}): look at {ranks_text(starters)}'s data first."
            )
        else:
            text = (
                f" It rose on every rank alike ({self.ranks} ranks reached {threshold} their start by step {first}): "
                "a shared cause (the learning rate, the weights), not one rank's data."
            )
        return _amend(diagnosis, text, starters, self.ranks, extra)

    # -- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("rise", "block", "start_blocks")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)


def ranks_text(ranks: Sequence[int]) -> str:
    """``rank 1``, ``ranks 1 and 3``, ``ranks 1, 3 and 5``."""
    names = [str(r) for r in sorted(ranks)]
    if len(names) == 1:
        return f"rank {names[0]}"
    return f"ranks {', '.join(names[:-1])} and {names[-1]}"


def _amend(diagnosis: Diagnosis, text: str, starters: Sequence[int], ranks: int, extra: dict[str, float]) -> Diagnosis:
    evidence = {
        **diagnosis.evidence,
        "first_rank": float(min(starters)),
        "ranks_affected": float(len(starters)),
        "ranks": float(ranks),
        **extra,
    }
    return dataclasses.replace(diagnosis, message=diagnosis.message + text, evidence=evidence)
