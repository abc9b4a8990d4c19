"""Where the time of a training batch goes: data wait, forward, loss, backward, optimizer.

The per-step path only takes marks (a float on CPU, a recorded CUDA event on GPU); durations are
computed in :meth:`StepTimer.drain`, at report time.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from lightning_lossguard.signals.clock import Clock, HostClock

PHASES = ("data", "training_step", "forward", "loss", "backward", "optimizer", "step")
"""Phases reported per batch, in milliseconds (NaN where a phase did not happen or was not measured).

- ``data``: host wait between the end of one batch and the start of the next (validation, checkpoint and
  epoch-start gaps excluded).
- ``training_step``: forward plus loss (batch start to the start of backward).
- ``forward``: time inside the model's outermost forward calls.
- ``loss``: time in ``lossguard.timed("loss")`` sections when used, else the time from the end of the last
  outermost forward call to the start of backward (NaN when no forward call was seen in the batch).
- ``backward``, ``optimizer`` (hook before the optimizer step to batch end: clipping and the step), ``step``
  (the whole batch).
"""

CPU_PHASES = ("training_step_cpu", "loss_cpu", "step_cpu")
"""The same batches' ``training_step``, ``loss`` and ``step`` in CPU time of the training thread (ms; CPU runs only,
NaN on a GPU, where the host only launches the work). A busy machine preempts the training thread: its wall times
grow, the longest phases most (a preemption lands on a phase in proportion to its length), while its CPU time
does not count the time it was preempted. Time claims are checked against it (the loss inside ``self.log`` and
metric sections is not taken out here: detectors compare its changes, not its level)."""


@dataclass
class _BatchMarks:
    step: int
    start: object
    data_ms: float
    backward_start: object | None = None
    backward_end: object | None = None
    optimizer_start: object | None = None
    end: object | None = None
    forward: list[tuple[object, object]] = field(default_factory=list)
    sections: dict[str, list[tuple[object, object]]] = field(default_factory=dict)
    # CPU time of the training thread (s) at the start, the last forward's end, backward's start, the end, and
    # around ``timed("loss")`` sections; NaN/empty when not measured.
    cpu_start: float = math.nan
    cpu_forward_end: float = math.nan
    cpu_backward_start: float = math.nan
    cpu_end: float = math.nan
    cpu_loss: list[tuple[float, float]] = field(default_factory=list)


class StepTimer:
    """Collects marks for each training batch and turns them into per-phase durations on demand."""

    def __init__(self, clock: Clock, cpu_clock: Callable[[], float] | None = None) -> None:
        """``cpu_clock``: the training thread's CPU time in seconds; by default ``time.thread_time`` with a host
        clock (CPU runs) and none on a GPU."""
        self.clock = clock
        if cpu_clock is None and isinstance(clock, HostClock):
            cpu_clock = time.thread_time
        self.cpu_clock = cpu_clock
        self._batches: list[_BatchMarks] = []
        self._current: _BatchMarks | None = None
        self._last_end_host: float | None = None
        self._forward_depth = 0
        self._forward_start: object | None = None
        self._last_step: int | None = None
        self._untimed: int | None = None  # the step of a batch under way whose phases are not timed

    # -- per-step path: marks only -------------------------------------------------------------
    def batch_start(self, step: int) -> None:
        now = time.perf_counter()
        wait = (now - self._last_end_host) * 1e3 if self._last_end_host is not None else math.nan
        self._current = _BatchMarks(step=step, start=self.clock.mark(), data_ms=wait)
        if self.cpu_clock is not None:
            self._current.cpu_start = self.cpu_clock()
        self._forward_depth = 0
        self._untimed = None

    def forward_enter(self) -> bool:
        """A watched module's forward starts; True when it is the outermost call of a training batch."""
        if self._current is None:
            return False
        outermost = self._forward_depth == 0
        if outermost:
            self._forward_start = self.clock.mark()
        self._forward_depth += 1
        return outermost

    def forward_exit(self) -> None:
        if self._current is not None and self._forward_depth > 0:
            self._forward_depth -= 1
            if self._forward_depth == 0 and self._forward_start is not None:
                self._current.forward.append((self._forward_start, self.clock.mark()))
                if self.cpu_clock is not None:
                    self._current.cpu_forward_end = self.cpu_clock()

    def backward_start(self) -> None:
        if self._current is not None and self._current.backward_start is None:
            self._current.backward_start = self.clock.mark()
            if self.cpu_clock is not None:
                self._current.cpu_backward_start = self.cpu_clock()

    def backward_end(self) -> None:
        if self._current is not None and self._current.backward_end is None:
            self._current.backward_end = self.clock.mark()

    def optimizer_start(self) -> None:
        if self._current is not None and self._current.optimizer_start is None:
            self._current.optimizer_start = self.clock.mark()

    def section(self, name: str, start: object, end: object, cpu: tuple[float, float] | None = None) -> None:
        if self._current is not None:
            self._current.sections.setdefault(name, []).append((start, end))
            if cpu is not None and name == "loss":
                self._current.cpu_loss.append(cpu)

    def batch_untimed(self, step: int) -> None:
        """A batch whose phases are not timed (the cost budget times every k-th batch): the end of the last
        batch, the step and "in a batch" are still known, for the data wait and the stall watchdog."""
        self._current = None
        self._untimed = step

    def untimed_batch_end(self, next_step: int) -> None:
        """An untimed batch ended and the next one, at ``next_step``, is untimed too: :meth:`batch_end` and
        :meth:`batch_untimed` in one call (most batches' only work here)."""
        self._last_step, self._untimed = self._untimed, next_step
        self._last_end_host = time.perf_counter()

    def batch_end(self) -> None:
        if self._current is None:
            if self._untimed is not None:
                self._last_step, self._untimed = self._untimed, None
                self._last_end_host = time.perf_counter()
            return
        self._current.end = self.clock.mark()
        if self.cpu_clock is not None:
            self._current.cpu_end = self.cpu_clock()
        self._batches.append(self._current)
        self._last_step = self._current.step
        self._current = None
        self._last_end_host = time.perf_counter()

    def interrupt(self) -> None:
        """A pause that is not data loading (validation, checkpoint, epoch start) happened."""
        self._last_end_host = None

    @property
    def in_batch(self) -> bool:
        return self._current is not None

    def where(self) -> tuple[int | None, str]:
        """The step the training loop is at and the phase it is in, in words. Safe to call from another thread (a
        watchdog): it reads plain attributes the loop replaces, never the marks' values."""
        current = self._current
        untimed = self._untimed
        if current is None and untimed is not None:
            return untimed, "a training batch (its phases are timed on every few batches only, not this one)"
        if current is None:
            after = f" after step {self._last_step}" if self._last_step is not None else ""
            if self._last_end_host is not None:
                return self._last_step, f"between batches{after}: data loading"
            return self._last_step, f"outside training batches{after} (validation, checkpointing, epoch start)"
        if current.optimizer_start is not None:
            phase = "the optimizer step"
        elif current.backward_end is not None:
            phase = "after backward, before the optimizer step"
        elif current.backward_start is not None:
            phase = "backward"
        elif self._forward_depth > 0:
            phase = "forward"
        else:
            phase = "training_step (forward/loss)"
        return current.step, phase

    # -- report time ----------------------------------------------------------------------------
    def drain(self) -> tuple[list[int], dict[str, list[float]], dict[str, list[float]]]:
        """Every finished batch since the last drain: its step, phase durations (ms), named sections (ms)."""
        steps = [b.step for b in self._batches]
        phases: dict[str, list[float]] = {p: [] for p in PHASES + CPU_PHASES}
        names = sorted({name for b in self._batches for name in b.sections})
        sections: dict[str, list[float]] = {n: [] for n in names}
        durations = self._host_durations if isinstance(self.clock, HostClock) else self._durations
        for batch in self._batches:
            values = durations(batch)
            for phase in PHASES:
                phases[phase].append(values[phase])
            for phase, value in zip(CPU_PHASES, self._cpu_durations(batch), strict=True):
                phases[phase].append(value)
            for name in names:
                sections[name].append(self._sum(batch.sections.get(name, [])))
        if isinstance(self.clock, HostClock):  # host marks are plain floats: nothing to give back
            self._batches = []
            return steps, phases, sections
        for batch in self._batches:
            marks: list[object] = [batch.start, batch.backward_start, batch.backward_end]
            marks += [batch.optimizer_start, batch.end]
            marks += [m for pair in batch.forward for m in pair]
            marks += [m for pairs in batch.sections.values() for pair in pairs for m in pair]
            self.clock.release([m for m in marks if m is not None])
        self._batches = []
        return steps, phases, sections

    @staticmethod
    def _cpu_durations(batch: _BatchMarks) -> tuple[float, float, float]:
        """``CPU_PHASES`` of one batch (ms): NaN where a mark is missing (NaN arithmetic carries it)."""
        if batch.cpu_loss:
            loss = sum(b - a for a, b in batch.cpu_loss) * 1e3
        elif batch.forward:
            loss = (batch.cpu_backward_start - batch.cpu_forward_end) * 1e3
        else:
            loss = math.nan
        training_step = (batch.cpu_backward_start - batch.cpu_start) * 1e3
        return training_step, loss, (batch.cpu_end - batch.cpu_start) * 1e3

    def _sum(self, pairs: list[tuple[object, object]]) -> float:
        if not pairs:
            return math.nan
        return sum(self.clock.elapsed_ms(a, b) for a, b in pairs)

    def _span(self, start: object | None, end: object | None) -> float:
        if start is None or end is None:
            return math.nan
        return self.clock.elapsed_ms(start, end)

    @staticmethod
    def _host_durations(batch: _BatchMarks) -> dict[str, float]:
        """:meth:`_durations` for host marks (``perf_counter`` floats): plain arithmetic, about a microsecond a
        batch (reports judge hundreds of batches)."""
        start, back, back_end, opt, end = (
            batch.start,
            batch.backward_start,
            batch.backward_end,
            batch.optimizer_start,
            batch.end,
        )
        assert isinstance(start, float)
        nan = math.nan
        forward = sum(b - a for a, b in batch.forward) * 1e3 if batch.forward else nan  # type: ignore[operator]
        if "loss" in batch.sections:
            loss = sum(b - a for a, b in batch.sections["loss"]) * 1e3  # type: ignore[operator]
        elif batch.forward and back is not None:
            forward_end: float = batch.forward[-1][1]  # type: ignore[assignment]
            bookkeeping = sum(
                b - a  # type: ignore[operator]
                for name in ("log", "metrics")
                for a, b in batch.sections.get(name, [])
                if a >= forward_end and b <= back  # type: ignore[operator]
            )
            loss = max((back - forward_end - bookkeeping) * 1e3, 0.0)  # type: ignore[operator]
        else:
            loss = nan
        return {
            "data": batch.data_ms,
            "training_step": (back - start) * 1e3 if back is not None else nan,  # type: ignore[operator]
            "forward": forward,
            "loss": loss,
            "backward": (back_end - back) * 1e3 if back is not None and back_end is not None else nan,  # type: ignore[operator]
            "optimizer": (end - opt) * 1e3 if opt is not None and end is not None else nan,  # type: ignore[operator]
            "step": (end - start) * 1e3 if end is not None else nan,  # type: ignore[operator]
        }

    def _durations(self, batch: _BatchMarks) -> dict[str, float]:
        training_step = self._span(batch.start, batch.backward_start)
        forward = self._sum(batch.forward)
        if "loss" in batch.sections:
            loss = self._sum(batch.sections["loss"])
        elif batch.forward and batch.backward_start is not None:
            # The loss follows the forward: from the end of the last outermost forward to the backward, less the
            # logging and metric updates in between.
            forward_end = batch.forward[-1][1]
            tail = self._span(forward_end, batch.backward_start)
            bookkeeping = sum(
                self.clock.elapsed_ms(start, end)
                for name in ("log", "metrics")
                for start, end in batch.sections.get(name, [])
                if self.clock.elapsed_ms(forward_end, start) >= 0
                and self.clock.elapsed_ms(end, batch.backward_start) >= 0
            )
            loss = max(tail - bookkeeping, 0.0)
        else:
            loss = math.nan  # no forward was seen: the split is not measured, so it is not claimed
        return {
            "data": batch.data_ms,
            "training_step": training_step,
            "forward": forward,
            "loss": loss,
            "backward": self._span(batch.backward_start, batch.backward_end),
            "optimizer": self._span(batch.optimizer_start, batch.end),
            "step": self._span(batch.start, batch.end),
        }


_ACTIVE: list[StepTimer] = []


class timed(contextlib.ContextDecorator):
    """Time a named section of your training step, e.g. a custom loss.

    ``with lossguard.timed("loss"): loss = my_loss(pred, y)`` makes the ``loss`` phase exact (instead of
    the time after the last forward call); any other name is reported as its own ``lossguard/time/<name>_ms``.
    Outside a LossGuard-watched training batch it does nothing. Also usable as a decorator.
    """

    def __init__(self, name: str = "loss") -> None:
        self.name = name
        self._timer: StepTimer | None = None
        self._start: object | None = None
        self._cpu_start: float | None = None

    def __enter__(self) -> timed:
        self._timer = _ACTIVE[-1] if _ACTIVE and _ACTIVE[-1].in_batch else None
        if self._timer is not None:
            cpu_clock = self._timer.cpu_clock
            self._cpu_start = cpu_clock() if cpu_clock is not None and self.name == "loss" else None
            self._start = self._timer.clock.mark()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._timer is not None and self._start is not None:
            end = self._timer.clock.mark()
            cpu_clock = self._timer.cpu_clock
            cpu = (self._cpu_start, cpu_clock()) if cpu_clock is not None and self._cpu_start is not None else None
            self._timer.section(self.name, self._start, end, cpu)
        self._timer = None
        self._start = None
        self._cpu_start = None


def activate(timer: StepTimer) -> None:
    """Make ``timer`` the one :class:`timed` sections report to (called by LossGuard at fit start)."""
    if timer not in _ACTIVE:
        _ACTIVE.append(timer)


def deactivate(timer: StepTimer) -> None:
    if timer in _ACTIVE:
        _ACTIVE.remove(timer)
