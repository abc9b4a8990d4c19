"""Owns the probes of one run and turns their buffers into a host :class:`Window`, once per interval."""

from __future__ import annotations

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
        sharded: gradients are shards (FSDP/DeepSpeed); norms are all-reduced as sums of squares.
        loss_scale: multiply recorded losses by this (Lightning divides by ``accumulate_grad_batches``).
    """

    def __init__(
        self, parameters: Sequence[nn.Parameter], clock: Clock, sharded: bool = False, loss_scale: float = 1.0
    ) -> None:
        self.gradients = GradientProbe(parameters, squared=sharded)
        self.losses = LossProbe()
        self.timer = StepTimer(clock)
        self.sharded = sharded
        self.loss_scale = loss_scale
        self._optimizer_steps: list[int] = []
        self._batch_steps: list[int] = []
        self._sample_step: int | None = None

    # -- per-step path ----------------------------------------------------------------------------
    def record_gradients(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        before = self.gradients.rows.count
        self.gradients.record(optimizer)
        if self.gradients.rows.count > before:
            self._optimizer_steps.append(step)

    def record_loss(self, step: int, loss: torch.Tensor, terms: Mapping[str, object] | None) -> None:
        self.losses.record(loss, terms)
        self._batch_steps.append(step)

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

    def sample_after_step(self) -> None:
        self.gradients.sample_update_ratio()

    def drain(self, reduce_sum: ReduceSum | None = None, world_size: int = 1) -> Window:
        """Copy everything recorded since the last call to the host: the one device read per interval.

        ``reduce_sum`` (distributed runs) all-reduces one packed tensor: losses and timings are averaged
        over ranks (so a NaN on any rank shows), sharded gradient norms are summed as squares.
        """
        grads = self.gradients.rows.take()
        dead = self.gradients.dead_units.take()
        updates = self.gradients.update_ratio.take()
        losses = self.losses.take()
        timing_steps, phases, sections = self.timer.drain()
        section_names = list(sections)
        timing = np.array([phases[p] for p in PHASES] + [sections[n] for n in section_names], dtype=np.float64)
        device = next((t.device for t in (grads, losses, dead, updates) if t.numel()), torch.device("cpu"))

        if reduce_sum is not None:
            timing_t = torch.as_tensor(timing, dtype=torch.float32, device=device)
            shared = [losses.reshape(-1).to(device), timing_t.reshape(-1)]
            if self.sharded:
                shared.append(grads.reshape(-1).to(device))
            total = reduce_sum(torch.cat(shared))
            n_loss, n_timing = losses.numel(), timing_t.numel()
            losses = total[:n_loss].reshape(losses.shape) / world_size
            timing_t = total[n_loss : n_loss + n_timing].reshape(timing_t.shape) / world_size
            if self.sharded:
                grads = total[n_loss + n_timing :].reshape(grads.shape)
            timing = timing_t.cpu().double().numpy()

        parts = [grads, dead, updates, losses]
        flat = torch.cat([p.reshape(-1).to(device=device, dtype=torch.float32) for p in parts])
        host = flat.cpu().double().numpy()  # the single device-to-host copy of the interval
        pieces: list[np.ndarray] = []
        offset = 0
        for part in parts:
            pieces.append(host[offset : offset + part.numel()].reshape(tuple(part.shape)))
            offset += part.numel()
        grad_rows, dead_rows, update_rows, loss_rows = pieces
        if self.sharded and grad_rows.size:
            grad_rows = np.where(grad_rows < 0, NO_GRADIENT, np.sqrt(np.maximum(grad_rows, 0.0)))

        names = self.losses.term_names or ()
        window = Window(
            optimizer_steps=self._optimizer_steps,
            param_norms=grad_rows.reshape(len(self._optimizer_steps), -1)
            if self._optimizer_steps
            else np.zeros((0, len(self.gradients.parameters))),
            batch_steps=self._batch_steps,
            loss=loss_rows[:, 0] * self.loss_scale if loss_rows.size else np.zeros(0),
            loss_terms={n: loss_rows[:, 1 + i] for i, n in enumerate(names)} if loss_rows.size else {},
            timing_steps=timing_steps,
            phase_ms={p: timing[i] for i, p in enumerate(PHASES)},
            section_ms={n: timing[len(PHASES) + i] for i, n in enumerate(section_names)},
            dead_unit_share=dead_rows[-1] if dead_rows.size else None,
            update_ratio=update_rows[-1] if update_rows.size else None,
            sample_step=self._sample_step if (dead_rows.size or update_rows.size) else None,
        )
        self._optimizer_steps = []
        self._batch_steps = []
        self._sample_step = None
        return window
