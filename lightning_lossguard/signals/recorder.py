"""Owns the probes of one run and turns their buffers into a host :class:`Window`, once per interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lightning_lossguard.signals.clock import Clock
from lightning_lossguard.signals.gradients import NO_GRADIENT, GradientProbe, Row
from lightning_lossguard.signals.logged import LoggedScalars, nonfinite_logged
from lightning_lossguard.signals.losses import LossProbe
from lightning_lossguard.signals.parameters import Sharding
from lightning_lossguard.signals.step_timer import CPU_PHASES, PHASES, StepTimer
from lightning_lossguard.signals.window import RankTail, Window

SAMPLE_ROWS = {"dead": 2, "updates": 1}
"""Sample rows each rank sends for its sharded parameters: the first and the latest dead-unit sample of the window,
the latest update sample."""

Gather = Callable[[torch.Tensor], torch.Tensor]
"""Distributed runs: this rank's ``[n]`` tensor in, every rank's ``[ranks, n]`` out, in rank order, alike on every
rank (an all-gather: the one collective per report)."""


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
        sharding: Sequence[Sharding | None] = (),
    ) -> None:
        self.gradients = GradientProbe(parameters, sharding)
        self.losses = LossProbe()
        self.logged = LoggedScalars()
        self._skipped = LoggedScalars()  # what batches that returned no loss logged, until the next read ...
        self._skipped_steps: list[int] = []  # ... and their steps
        self._skipped_batches = 0  # batches that returned no loss since the last read, whether they logged or not
        self.timer = StepTimer(clock)
        self.loss_scale = loss_scale
        self._optimizer_steps: list[int] = []
        self._batch_row: Row | None = None
        self._dead_row: torch.Tensor | None = None  # the batch's dead-unit sample, as _batch_row
        self._batch_steps: list[int] = []
        self._learning_rates: list[float] = []
        self._sample_step: int | None = None
        self._scale_changes: list[tuple[int, float]] = []  # (first loss row, scale) within the window
        self.last_ranks: RankTail | None = None  # what each rank reported last (distributed runs)
        self._held_loss: tuple[int, int, torch.Tensor] | None = None  # anomaly mode: (batch, step, loss)

    def watch(self, parameters: Sequence[nn.Parameter], sharding: Sequence[Sharding | None] = ()) -> None:
        """Watch another set of parameters from now on. Rows of the old set not yet drained are dropped (rows of
        two sets never share a window): call it right after :meth:`drain`, or before the first report."""
        self.gradients = GradientProbe(parameters, sharding)
        self._batch_row = self._dead_row = None
        self._optimizer_steps = []
        self._sample_step = None

    # -- per-step path ----------------------------------------------------------------------------
    def begin_batch(self) -> None:
        """A new training batch: the next optimizer step opens a new gradient row (and sample row)."""
        self._batch_row = self._dead_row = None

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

    def hold_loss(self, batch: int, step: int, loss: torch.Tensor) -> None:
        """Under autograd's anomaly mode, before each backward: the loss of ``batch`` (a reference, no read). A NaN
        stops the fit inside that backward, before the batch ends and its loss is recorded."""
        self._held_loss = (batch, step, loss.detach())

    def record_held_loss(self, batch: int, learning_rate: float = math.nan) -> bool | None:
        """At an exception: the held loss, when it is ``batch``'s (the one that never ended), is recorded with the
        others; whether it was finite (one host read, off the per-step path). None when no such loss was held."""
        held, self._held_loss = self._held_loss, None
        if held is None or held[0] != batch:
            return None
        _, step, loss = held
        self.record_loss(step, loss, None, learning_rate)
        return bool(torch.isfinite(loss).all())

    def capture_logged(self, name: object, value: object) -> None:
        """A scalar the batch's ``training_step`` logged (timed batches only), keyed by the row its loss will take."""
        self.logged.capture(len(self._batch_steps), name, value)

    def skip_batch(self, step: int) -> None:
        """The batch returned no loss (Lightning skips it): what it logged is kept apart, for the report to say
        whether it logged a loss that was not finite."""
        self._skipped_batches += 1
        values = self.logged.pop_row(len(self._batch_steps))
        for name, value in values.items():
            self._skipped.capture(len(self._skipped_steps), name, value)
        if values:
            self._skipped_steps.append(step)

    def record_plain_loss(self, step: int, loss: torch.Tensor, learning_rate: float) -> bool:
        """:meth:`record_loss` for a loss without terms, when the run's losses have none (True); else nothing is
        recorded (False)."""
        if not self.losses.keep(loss):
            return False
        self._batch_steps.append(step)
        self._learning_rates.append(learning_rate)
        return True

    def change_loss_scale(self, scale: float) -> None:
        """Losses recorded from now on are multiplied by ``scale`` (the gradient accumulation changed)."""
        self._scale_changes.append((len(self._batch_steps), scale))

    def _loss_scales(self) -> float | np.ndarray:
        """The scale of each loss row of the window (one number when it did not change)."""
        if not self._scale_changes:
            return self.loss_scale
        scales = np.full(len(self._batch_steps), self.loss_scale, dtype=np.float64)
        for first, scale in self._scale_changes:
            scales[first:] = scale
        return scales

    def pending_losses(self) -> np.ndarray:
        """The training losses recorded since the last report, on the host and scaled as a report scales them,
        left for the report: one device read, for a validation run judged between reports."""
        losses = self.losses.pending()
        scale = self._loss_scales()
        return losses * (scale[: len(losses)] if isinstance(scale, np.ndarray) else scale)

    # -- report steps only ------------------------------------------------------------------------
    def sample_before_step(
        self,
        step: int,
        optimizer: torch.optim.Optimizer,
        unit_params: Sequence[int],
        max_update_elements: int,
        unit_axes: Mapping[int, int] | None = None,
        automatic: bool = True,
    ) -> None:
        self._dead_row = self.gradients.sample_dead_units(unit_params, optimizer, self._dead_row, unit_axes)
        if automatic:  # manual optimization reaches this hook inside opt.step(), after any clipping of its own
            self.gradients.norm_before_step(optimizer)
        if max_update_elements > 0:
            self.gradients.snapshot_weights(optimizer, max_update_elements)
        self._sample_step = step

    def sample_leftover(self) -> None:
        self.gradients.sample_leftover()

    @property
    def watching_clearing(self) -> bool:
        return self.gradients.watching_clearing

    def watch_clearing(self, optimizer: torch.optim.Optimizer, index: int = -1) -> None:
        self.gradients.watch_clearing(optimizer, index)

    def check_clearing(self) -> None:
        self.gradients.check_clearing()

    def end_clearing(self, optimizer: torch.optim.Optimizer) -> None:
        self.gradients.end_clearing(optimizer)

    def sample_after_step(self) -> None:
        self.gradients.sample_update_ratio()
        self.gradients.norm_after_step()

    def drain(self, gather: Gather | None = None) -> Window:
        """Copy everything recorded since the last call to the host: the one device read per interval.

        ``gather`` (distributed runs) is called once, on one packed tensor of this rank's losses, phase timings
        and the parts of its sharded parameters' samples (local gradient norms, dead rows, update and weight
        norms), so every rank gets every rank's rows: the losses and timings per rank (a NaN or a slow phase
        keeps the rank it came from) and the shards of each sharded gradient, combined here into the norm of
        the whole parameter. Other gradient norms need no collective: DDP already all-reduced the gradients.
        """
        self.gradients.expire_clearing()
        grads = self.gradients.rows.take()
        dead = self.gradients.dead_units.take()
        dead = dead[[0, -1]] if len(dead) > 2 else dead  # the window's first sample and its latest are judged
        updates = self.gradients.update_ratio.take()[-1:]
        # Each rank's own shard is a sample of its parameter as good as the whole: no collective for these.
        unmoved = self.gradients.unmoved.take()[-1:]
        leftover, sources = self.gradients.take_leftover()  # this rank's own: uncleared shows on any rank
        step_norms = self.gradients.step_norms.take()  # this rank's own: DDP's gradients are the same on every rank
        losses = self.losses.take()
        timing_steps, phases, sections = self.timer.drain()
        section_names = list(sections)
        timed_rows = PHASES + CPU_PHASES
        timing_host = np.array([phases[p] for p in timed_rows] + [sections[n] for n in section_names], dtype=np.float64)
        timing_host = timing_host.reshape(len(timed_rows) + len(section_names), len(timing_steps))
        device = next((t.device for t in (grads, losses, dead, updates) if t.numel()), torch.device("cpu"))
        # Logged values are judged against the losses, on one process: without either they are dropped unread (a
        # value on another device than the losses would cost a copy each).
        logged = self.logged.take(device) if gather is None and losses.numel() else None
        if logged is None:
            self.logged.clear()
        skipped, skipped_steps, self._skipped_steps = self._skipped.take(device), self._skipped_steps, []
        skipped_batches, self._skipped_batches = self._skipped_batches, 0
        logged_part = logged.on_device if logged is not None else torch.zeros(0)
        parts = [grads, dead, updates, losses, leftover, logged_part, skipped.on_device, step_norms, unmoved]
        if gather is not None:
            parts[3] = gather(self._packet(grads, dead, updates, losses, timing_host, device))
        flat = torch.cat([p.reshape(-1).to(device=device, dtype=torch.float32) for p in parts])
        host = flat.cpu().double().numpy()  # the single device-to-host copy of the interval
        pieces: list[np.ndarray] = []
        offset = 0
        for part in parts:
            pieces.append(host[offset : offset + part.numel()].reshape(tuple(part.shape)))
            offset += part.numel()
        grad_rows, dead_rows, update_rows, loss_rows, leftover_rows, logged_cells, skipped_cells = pieces[:7]
        step_rows, unmoved_rows = pieces[7:]
        steps = [skipped_steps[row] for row in skipped.rows]
        skipped_bad = nonfinite_logged(steps, skipped.names, skipped.matrix(skipped_cells), skipped.present)
        timing_rows = timing_host
        width = len(self.gradients.parameters)
        ranks: _Ranks | None = None
        if gather is not None:
            ranks = _Ranks(pieces[3], tuple(losses.shape), timing_host.shape, self._shard_columns(), len(grads))
            loss_rows = ranks.losses.mean(axis=0)  # the mean over ranks: a NaN on any rank shows
            timing_rows = ranks.timings.mean(axis=0)
            grad_rows = ranks.combine_norms(grad_rows, self.gradients.sharding)
            dead_rows = ranks.combine_sample(dead_rows, ranks.dead, width, squares=False)
            update_rows = ranks.combine_sample(update_rows, ranks.updates, width, squares=True)
        names = self.losses.term_names or ()
        scale = self._loss_scales()
        if self._scale_changes:  # the next window starts at the latest scale
            self.loss_scale, self._scale_changes = self._scale_changes[-1][1], []
        window = Window(
            optimizer_steps=self._optimizer_steps,
            param_norms=grad_rows.reshape(len(self._optimizer_steps), -1)
            if self._optimizer_steps
            else np.zeros((0, width)),
            batch_steps=self._batch_steps,
            learning_rate=np.asarray(self._learning_rates, dtype=np.float64),
            loss=loss_rows[:, 0] * scale if loss_rows.size else np.zeros(0),
            loss_terms={n: loss_rows[:, 1 + i] for i, n in enumerate(names)} if loss_rows.size else {},
            logged_rows=logged.rows if logged is not None else [],
            logged=_columns(logged.names, logged.matrix(logged_cells)) if logged is not None else {},
            timing_steps=timing_steps,
            phase_ms={p: timing_rows[i] for i, p in enumerate(PHASES)},
            cpu_ms={p.removesuffix("_cpu"): timing_rows[len(PHASES) + i] for i, p in enumerate(CPU_PHASES)},
            section_ms={n: timing_rows[len(timed_rows) + i] for i, n in enumerate(section_names)},
            dead_unit_share=_ratio(dead_rows[-1], width, counts=True) if dead_rows.size else None,
            dead_unit_first=_ratio(dead_rows[0], width, counts=True) if dead_rows.size else None,
            update_ratio=_ratio(update_rows[-1], width, counts=False) if update_rows.size else None,
            unmoved_share=_ratio(unmoved_rows[-1], width, counts=True) if unmoved_rows.size else None,
            sample_step=self._sample_step if (dead_rows.size or update_rows.size) else None,
            leftover_grad_norm=float(leftover_rows.max()) if leftover_rows.size else None,
            leftover_optimizer=_leftover_source(leftover_rows, sources),
            skipped_batches=skipped_batches,
            skipped_read=len(steps),
            skipped_nonfinite=skipped_bad,
            norms_around_step=[(float(a), float(b)) for a, b in step_rows.reshape(-1, 2)],
        )
        if ranks is not None:
            window.ranks = ranks.count
            window.rank_loss = ranks.losses[:, :, 0] * scale if loss_rows.size else None
            window.rank_phase_ms = {p: ranks.timings[:, i] for i, p in enumerate(PHASES)}
            if window.batch_steps or window.timing_steps:
                self.last_ranks = window.rank_tail()
        self._optimizer_steps = []
        self._batch_steps = []
        self._learning_rates = []
        self._sample_step = None
        return window

    def _shard_columns(self) -> list[int]:
        return [i for i, s in enumerate(self.gradients.sharding) if s is not None]

    def _packet(
        self,
        grads: torch.Tensor,
        dead: torch.Tensor,
        updates: torch.Tensor,
        losses: torch.Tensor,
        timing: np.ndarray,
        device: torch.device,
    ) -> torch.Tensor:
        """This rank's part of the gather: its losses and timings, and the sharded columns of its gradient rows and
        of its samples: the first and the latest dead-unit samples, the latest update sample (``NO_GRADIENT`` where
        it took none, so that every rank sends the same size)."""
        columns = self._shard_columns()
        width = len(self.gradients.parameters)
        pieces = [losses.reshape(-1), torch.as_tensor(timing, dtype=torch.float32).reshape(-1)]
        if columns:
            both = columns + [width + i for i in columns]
            pieces.append(grads[:, columns].reshape(-1) if grads.numel() else grads.reshape(-1))
            for sample, rows in ((dead, SAMPLE_ROWS["dead"]), (updates, SAMPLE_ROWS["updates"])):
                if not sample.numel():
                    pieces.append(torch.full((rows * len(both),), NO_GRADIENT))
                    continue
                picked = sample[[0, -1]] if rows == 2 else sample[-1:]
                pieces.append(picked[:, both].reshape(-1))
        return torch.cat([p.to(device=device, dtype=torch.float32) for p in pieces])


class _Ranks:
    """Every rank's part of the gather, on the host, cut back into its pieces (see ``SignalRecorder._packet``)."""

    def __init__(
        self,
        gathered: np.ndarray,
        loss_shape: tuple[int, ...],
        timing_shape: tuple[int, ...],
        columns: list[int],
        grad_rows: int,
    ) -> None:
        self.count = gathered.shape[0]
        self.columns = columns
        sizes = [int(np.prod(loss_shape)), int(np.prod(timing_shape))]
        if columns:
            sizes += [grad_rows * len(columns), SAMPLE_ROWS["dead"] * 2 * len(columns)]
            sizes += [SAMPLE_ROWS["updates"] * 2 * len(columns)]
        pieces = np.split(gathered, np.cumsum(sizes)[:-1], axis=1)
        self.losses = pieces[0].reshape(self.count, *loss_shape)  # [ranks, batches, 1 + terms]
        self.timings = pieces[1].reshape(self.count, *timing_shape)  # [ranks, phases + sections, batches]
        empty = np.zeros((self.count, 0))
        self.grads = pieces[2].reshape(self.count, grad_rows, len(columns)) if columns else empty[:, None]
        self.dead = pieces[3] if columns else empty
        self.updates = pieces[4] if columns else empty

    def combine_norms(self, rows: np.ndarray, sharding: Sequence[Sharding | None]) -> np.ndarray:
        """Each sharded column: the norm of the whole gradient from every rank's local norm. Every rank holds
        ``ranks / ways`` copies of each piece, which count once."""
        if not self.columns or not rows.size:
            return rows
        ways = np.array([s.ways if s is not None else 1 for s in (sharding[i] for i in self.columns)], dtype=float)
        local = self.grads
        present = (local != NO_GRADIENT).any(axis=0)  # a rank whose shard is empty may have no gradient
        squares = np.where(local == NO_GRADIENT, 0.0, local) ** 2  # a NaN shard makes the whole norm NaN
        rows = rows.copy()
        rows[:, self.columns] = np.where(present, np.sqrt(squares.sum(axis=0) * ways / self.count), NO_GRADIENT)
        return rows

    def combine_sample(self, local: np.ndarray, gathered: np.ndarray, width: int, squares: bool) -> np.ndarray:
        """The sharded columns of ``[parts..., wholes...]`` sample rows: summed over the ranks (counts), or their
        squares summed (norms). A column any rank did not sample stays unsampled; copies cancel in the ratio."""
        if not self.columns or not (gathered != NO_GRADIENT).any():
            return local
        sent = gathered.reshape(self.count, -1, 2 * len(self.columns))  # [ranks, rows, sharded parts and wholes]
        out = []
        for j in range(sent.shape[1]):
            row = local[min(j, len(local) - 1), : 2 * width].copy() if local.size else np.full(2 * width, NO_GRADIENT)
            parts = sent[:, j]
            sampled = (parts != NO_GRADIENT).all(axis=0)
            combined = np.sqrt((parts**2).sum(axis=0)) if squares else parts.sum(axis=0)
            row[self.columns + [width + i for i in self.columns]] = np.where(sampled, combined, NO_GRADIENT)
            out.append(row)
        return np.stack(out)


def _ratio(row: np.ndarray, width: int, counts: bool) -> np.ndarray:
    """Per parameter, part / whole from a ``[parts..., wholes...]`` sample row (``NO_GRADIENT`` where unsampled):
    dead rows / rows (``counts``) or update norm / weight norm."""
    part, whole = row[:width], row[width : 2 * width]
    sampled = (part != NO_GRADIENT) & (whole != NO_GRADIENT) & (whole > 0 if counts else True)
    with np.errstate(divide="ignore", invalid="ignore"):  # non-finite weights give a NaN ratio, as they should
        ratio = part / (np.where(whole > 0, whole, 1.0) if counts else np.maximum(whole, 1e-12))
    return np.where(sampled, ratio, NO_GRADIENT)


def _leftover_source(rows: np.ndarray, sources: list[int]) -> int | None:
    """The optimizer index of the largest leftover row (None: unknown, or the check of every optimizer at once)."""
    if not rows.size or len(sources) != len(rows):
        return None
    source = sources[int(np.argmax(rows.reshape(-1)))]
    return source if source >= 0 else None


def _columns(names: list[str], matrix: np.ndarray) -> dict[str, np.ndarray]:
    return {name: matrix[:, j] for j, name in enumerate(names)}
