"""Clocks that mark a point in time now and tell durations later, without waiting for the device."""

from __future__ import annotations

import time
from typing import Protocol

import torch


class Clock(Protocol):
    """``mark()`` on the per-step path; ``elapsed_ms()`` and ``release()`` at report time only."""

    def mark(self) -> object: ...

    def elapsed_ms(self, start: object, end: object) -> float: ...

    def release(self, marks: list[object]) -> None: ...


class HostClock:
    """``time.perf_counter``: right for CPU work, where ops run when they are launched."""

    def mark(self) -> object:
        return time.perf_counter()

    def elapsed_ms(self, start: object, end: object) -> float:
        assert isinstance(start, float) and isinstance(end, float)
        return (end - start) * 1e3

    def release(self, marks: list[object]) -> None:
        pass


class CudaEventClock:
    """CUDA events recorded on the current stream; durations are read at report time.

    ``time.perf_counter`` would only time kernel launches on CUDA. Events are pooled and reused so the
    per-step path allocates nothing.
    """

    def __init__(self) -> None:
        self._pool: list[torch.cuda.Event] = []

    def mark(self) -> object:
        event = self._pool.pop() if self._pool else torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record()
        return event

    def elapsed_ms(self, start: object, end: object) -> float:
        assert isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event)
        end.synchronize()  # report time only: the events are in the past, this waits little
        return float(start.elapsed_time(end))

    def release(self, marks: list[object]) -> None:
        self._pool.extend(m for m in marks if isinstance(m, torch.cuda.Event))


def clock_for(device: torch.device) -> Clock:
    """The right clock for the device that runs the model."""
    if device.type == "cuda":
        return CudaEventClock()
    return HostClock()
