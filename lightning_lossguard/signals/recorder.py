"""Owns the probes of one run and turns their buffers into a host :class:`Window`, once per interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lightning_lossguard.signals.clock import Clock
from lightning_lossguard.signals.gradients import NO_GRADIENT, GradientProbe
from lightning_lossguard.signals.losses import LossProbe
from lightning_lossguard.signals.step_timer import PHASES, StepTimer
from lightning_lossguard.signals.window import Window

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


class SignalRecorder:
    """Per-step recording (device work and host marks only) and the one read-back per report interval.

    Args:
        parameters: watched parameters, in layout order.
        clock: marks time on the model's device.
        loss_scale: multiply recorded losses by this (Lightning divides by ``accumulate_grad_batches``).
    """

    def __init__(
        self,
        parameters: Sequence[nn.Parameter],
        clock: Clock,
        loss_scale: float = 1.0,
        sharded: Sequence[bool] = (),
    ) -> None:
        self.gradients = GradientProbe(parameters, sharded)
        self.losses = LossProbe()
        self.timer = StepTimer(clock)
        self.loss_scale = loss_scale
        self._optimizer_steps: list[int] = []
        self._batch_row: torch.Tensor | None = None
        self._batch_steps: list[int] = []
        self._learning_rates: list[float] = []
        self._sample_step: int | None = None

    def watch(self, parameters: Sequence[nn.Parameter], sharded: Sequence[bool] = ()) -> None:
        """Watch another set of parameters from now on. Rows of the old set not yet drained are dropped (rows of
        two sets never share a window): call it right after :meth:`drain`, or before the first report."""
        self.gradients = GradientProbe(parameters, sharded)
        self._batch_row = None
        self._optimizer_steps = []
        self._sample_step = None

    # -- per-step path ----------------------------------------------------------------------------
    def begin_batch(self) -> None:
        """A new training batch: the next optimizer step opens a new gradient row."""
        self._batch_row = None

    def record_gradients(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """One row per batch: every optimizer that steps in it (GANs, manual optimization) fills its part."""
        opened = self._batch_row is None
        self._batch_row = self.gradients.record(optimizer, self._batch_row)
        if opened and self._batch_row is not None:
            self._optimizer_steps.append(step)

    def record_loss(
        self, step: int, loss: torch.Tensor, terms: Mapping[str, object] | None, learning_rate: float = math.nan
    ) -> None:
        """The batch's loss (device copy) and the learning rate it was taken with (a host float)."""
        self.losses.record(loss, terms)
        self._batch_steps.append(step)
        self._learning_rates.append(learning_rate)

    # -- report steps only ------------------------------------------------------------------------
    def sample_before_step(
        self,
        step: int,
        optimizer: torch.optim.Optimizer,
        unit_params: Sequence[int],
        max_update_elements: int,
    ) -> None:
        self.gradients.sample_dead_units(unit_params)
        if max_update_elements > 0:
            self.gradients.snapshot_weights(optimizer, max_update_elements)
        self._sample_step = step

    def sample_leftover(self) -> None:
        self.gradients.sample_leftover()

    def sample_after_step(self) -> None:
        self.gradients.sample_update_ratio()

    def drain(self, reduce_sum: ReduceSum | None = None, world_size: int = 1) -> Window:
        """Copy everything recorded since the last call to the host: the one device read per interval.

        ``reduce_sum`` (distributed runs) all-reduces one packed tensor of losses and timings, averaged over
        ranks so a NaN on any rank shows, and the squares of sharded parameters' local gradient norms (a
        DTensor shard per rank), summed into the global norm. Other gradient norms need no reduction: DDP
        all-reduced the gradients.
        """
        grads = self.gradients.rows.take()
        dead = self.gradients.dead_units.take()
        updates = self.gradients.update_ratio.take()
        leftover = self.gradients.leftover.take()
        losses = self.losses.take()
        timing_steps, phases, sections = self.timer.drain()
        section_names = list(sections)
        timing_host = np.array([phases[p] for p in PHASES] + [sections[n] for n in section_names], dtype=np.float64)
        device = next((t.device for t in (grads, losses, dead, updates, leftover) if t.numel()), torch.device("cpu"))
        parts = [grads, dead, updates, losses, leftover]
        if reduce_sum is not None:
            timing = torch.as_tensor(timing_host, dtype=torch.float32, device=device)
            shared = reduce_sum(torch.cat([losses.reshape(-1).to(device), timing.reshape(-1)])) / world_size
            parts[3] = shared[: losses.numel()].reshape(losses.shape)
            parts.append(shared[losses.numel() :].reshape(timing.shape))  # parts[5]
            parts[0] = self._global_norms(grads.to(device), reduce_sum)
        flat = torch.cat([p.reshape(-1).to(device=device, dtype=torch.float32) for p in parts])
        host = flat.cpu().double().numpy()  # the single device-to-host copy of the interval
        pieces: list[np.ndarray] = []
        offset = 0
        for part in parts:
            pieces.append(host[offset : offset + part.numel()].reshape(tuple(part.shape)))
            offset += part.numel()
        grad_rows, dead_rows, update_rows, loss_rows, leftover_rows = pieces[:5]
        timing_rows = pieces[5] if reduce_sum is not None else timing_host  # ranks averaged under DDP

        names = self.losses.term_names or ()
        window = Window(
            optimizer_steps=self._optimizer_steps,
            param_norms=grad_rows.reshape(len(self._optimizer_steps), -1)
            if self._optimizer_steps
            else np.zeros((0, len(self.gradients.parameters))),
            batch_steps=self._batch_steps,
            learning_rate=np.asarray(self._learning_rates, dtype=np.float64),
            loss=loss_rows[:, 0] * self.loss_scale if loss_rows.size else np.zeros(0),
            loss_terms={n: loss_rows[:, 1 + i] for i, n in enumerate(names)} if loss_rows.size else {},
            timing_steps=timing_steps,
            phase_ms={p: timing_rows[i] for i, p in enumerate(PHASES)},
            section_ms={n: timing_rows[len(PHASES) + i] for i, n in enumerate(section_names)},
            dead_unit_share=dead_rows[-1] if dead_rows.size else None,
            dead_unit_first=dead_rows[0] if dead_rows.size else None,
            update_ratio=update_rows[-1] if update_rows.size else None,
            sample_step=self._sample_step if (dead_rows.size or update_rows.size) else None,
            leftover_grad_norm=float(leftover_rows.max()) if leftover_rows.size else None,
        )
        self._optimizer_steps = []
        self._batch_steps = []
        self._learning_rates = []
        self._sample_step = None
        return window

    def _global_norms(self, rows: torch.Tensor, reduce_sum: ReduceSum) -> torch.Tensor:
        """Sharded columns: the local norms of every rank combined into the global norm (sum of squares)."""
        sharded = [i for i, s in enumerate(self.gradients.sharded) if s]
        if not sharded or rows.numel() == 0:
            return rows
        columns = torch.tensor(sharded, device=rows.device)
        local = rows[:, columns]
        present = local != NO_GRADIENT  # alike on every rank; a NaN shard makes the global norm NaN everywhere
        total = reduce_sum(torch.where(present, local.double() ** 2, torch.zeros_like(local, dtype=torch.float64)))
        rows = rows.clone()
        rows[:, columns] = torch.where(present, total.sqrt().float(), local)
        return rows
