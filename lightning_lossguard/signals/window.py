"""One report interval of signals, on the host: what the detectors are fed."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from lightning_lossguard.signals.gradients import NO_GRADIENT
from lightning_lossguard.signals.unstepped import Unstepped


@dataclass
class Window:
    """Signals of the batches and optimizer steps since the previous report.

    Arrays are numpy, one entry per optimizer step (``optimizer_steps``), per training batch that returned
    a loss (``batch_steps``) or per timed batch (``timing_steps``). Missing values are NaN (timings) or
    ``NO_GRADIENT`` (-1, per-parameter norms).
    """

    optimizer_steps: list[int] = field(default_factory=list)
    param_norms: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    batch_steps: list[int] = field(default_factory=list)
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss_terms: dict[str, np.ndarray] = field(default_factory=dict)
    logged_rows: list[int] = field(default_factory=list)  # indices into ``loss``: the timed batches that logged
    logged: dict[str, np.ndarray] = field(default_factory=dict)  # scalars the step logged, aligned with logged_rows
    learning_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))  # aligned with batch_steps
    timing_steps: list[int] = field(default_factory=list)
    phase_ms: dict[str, np.ndarray] = field(default_factory=dict)  # aligned with timing_steps
    section_ms: dict[str, np.ndarray] = field(default_factory=dict)
    cpu_ms: dict[str, np.ndarray] = field(default_factory=dict)  # training_step, loss, step in CPU time (CPU runs)
    dead_unit_share: np.ndarray | None = None  # [params], latest report-step sample, -1 where unsampled
    dead_unit_first: np.ndarray | None = None  # [params], the window's first sample (the run's start, first time)
    update_ratio: np.ndarray | None = None  # [params], latest report-step sample, -1 where unsampled
    # [params], 16-bit parameters only: the share of sampled elements the latest sampled step left unchanged
    unmoved_share: np.ndarray | None = None
    sample_step: int | None = None
    leftover_grad_norm: float | None = None  # gradient found before a backward that should start from zero
    leftover_optimizer: int | None = None  # manual optimization: the index of the optimizer that norm belongs to
    skipped_batches: int = 0  # batches that returned no loss (automatic optimization: Lightning skipped them)
    skipped_read: int = 0  # batches that returned no loss and whose logged values were read (timed ones)
    skipped_nonfinite: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # ... (step, names) not finite
    # Sampled steps: (gradient norm as read, the same gradients' norm after the optimizer step); clipping shows here
    norms_around_step: list[tuple[float, float]] = field(default_factory=list)
    scaler_scale: float | None = None
    host_rss_mb: float | None = None
    allocator_free_mb: float | None = None  # freed memory malloc keeps: part of the RSS no object holds (NaN: not read)
    device_allocated_mb: float | None = None
    unstepped: list[Unstepped] = field(default_factory=list)  # in no optimizer, with a gradient, unmoved
    batches_left: int | None = None  # training batches the fit is planned to run after this window (None: unknown)
    ranks: int = 1
    rank_loss: np.ndarray | None = None  # [ranks, batches] aligned with batch_steps (distributed runs)
    rank_phase_ms: dict[str, np.ndarray] = field(default_factory=dict)  # [ranks, batches] per phase, timing_steps
    _layer_cache: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def grad_norms(self) -> np.ndarray:
        """Global L2 gradient norm per optimizer step (computed once, shared by judging and logging)."""
        return global_norms(self.param_norms)

    def layer_grad_norms(self, layer_of: tuple[int, ...], layers: int) -> np.ndarray:
        """Per-layer L2 norms per optimizer step, computed once per window."""
        if self._layer_cache is None:
            self._layer_cache = layer_norms(self.param_norms, layer_of, layers)
        return self._layer_cache

    def rank_tail(self) -> RankTail:
        """What each rank reported in this window: its last loss and its phase times (kept as they are: only a stall
        report reads them, and takes their medians then)."""
        loss = self.rank_loss[:, -1] if self.rank_loss is not None and self.rank_loss.shape[1] else None
        phases = {p: values for p, values in self.rank_phase_ms.items() if values.size and values.ndim == 2}
        return RankTail(self.last_step, self.ranks, loss, phases)

    @property
    def empty(self) -> bool:
        return not self.optimizer_steps and not self.batch_steps and not self.skipped_batches

    @property
    def last_step(self) -> int:
        steps = self.optimizer_steps[-1:] + self.batch_steps[-1:]
        return max(steps) if steps else 0


@dataclass(frozen=True)
class RankTail:
    """What every rank sent at the last report of a distributed run (kept for a stall report).

    Attributes:
        step: the last step of that report.
        ranks: how many ranks there are.
        loss: per rank, the loss of its last batch (None when no loss was returned).
        phase_rows: per phase, ``[ranks, timed batches]``: each rank's times in that report (NaN where unmeasured).
    """

    step: int
    ranks: int
    loss: np.ndarray | None
    phase_rows: dict[str, np.ndarray]


def global_norms(param_norms: np.ndarray) -> np.ndarray:
    """Global L2 norm per row from per-parameter norms (parameters without gradient left out)."""
    if param_norms.size == 0:
        return np.zeros(param_norms.shape[0])
    present = param_norms != NO_GRADIENT
    squares = np.where(present, param_norms, 0.0) ** 2
    return np.asarray(np.sqrt(squares.sum(axis=1)))


def layer_norms(param_norms: np.ndarray, layer_of: tuple[int, ...], layers: int) -> np.ndarray:
    """Per-layer L2 norm per row; NaN where no parameter of the layer had a gradient, or one was non-finite."""
    out = np.full((param_norms.shape[0], layers), np.nan)
    if not layer_of or not len(param_norms):
        return out
    # The columns sorted by layer, then summed layer by layer: a few array ops, not one per parameter.
    layer = np.asarray(layer_of)
    order = np.argsort(layer, kind="stable")
    owners, starts = np.unique(layer[order], return_index=True)
    columns = param_norms[:, order]
    present = columns != NO_GRADIENT
    squares = np.add.reduceat(np.where(present, columns, 0.0) ** 2, starts, axis=1)
    seen = np.logical_or.reduceat(present, starts, axis=1)
    out[:, owners] = np.where(seen, np.sqrt(squares), np.nan)
    return out
