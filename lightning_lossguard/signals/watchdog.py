"""A watchdog thread that notices when no training step completes for ``timeout_s`` seconds.

The training loop calls :meth:`Watchdog.beat` when a batch completes (a clock read and a lock held for two
assignments). A daemon thread wakes a few times per timeout; when the last beat is older than the timeout it
takes every thread's Python stack (``sys._current_frames``) and the place the loop is at, and hands a
:class:`Stall` to ``on_stall`` once. The next beat ends the stall and returns how long it lasted.

The thread never touches a tensor, never runs a collective (another rank may be the one that hangs) and never
stops the process: it only reports. It needs the GIL to run, which a loop blocked in a collective, in
``time.sleep`` or waiting for a data-loader worker releases; a C extension that blocks while holding the GIL
also blocks this thread, and then nothing is reported.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

MAX_FRAMES = 12
"""Frames kept per thread in the short form of a stack (innermost first)."""


@dataclass(frozen=True)
class ThreadStack:
    """One thread's Python stack, outermost frame first."""

    name: str
    frames: tuple[traceback.FrameSummary, ...]
    main: bool = False

    def text(self) -> str:
        """The stack as Python prints a traceback."""
        return f'Thread "{self.name}"{" (main)" if self.main else ""}:\n' + "".join(traceback.format_list(self.frames))

    def short(self) -> str:
        """One line: innermost frame first, ``file:line in function`` each."""
        inner = list(reversed(self.frames))[:MAX_FRAMES]
        more = f" < ... {len(self.frames) - MAX_FRAMES} more" if len(self.frames) > MAX_FRAMES else ""
        return f'thread "{self.name}": ' + " < ".join(_frame(f) for f in inner) + more

    @property
    def innermost(self) -> str:
        """The innermost frame, its file named by its folder and name (``autograd/graph.py:979 in f``)."""
        if not self.frames:
            return "(no Python frame)"
        frame = self.frames[-1]
        path = frame.filename.replace("\\", "/").split("/")
        return _frame(frame, "/".join(path[-2:]))


@dataclass(frozen=True)
class Stall:
    """What the watchdog saw when no step had completed for the timeout.

    Attributes:
        since: ``time.monotonic()`` of the last completed step (or of the start).
        stalled_s: seconds since then, when it was noticed.
        step: the step the loop was at (None before the first batch).
        phase: where in the step it was, in words (:meth:`StepTimer.where`).
        stacks: every other thread's stack and the main thread's, the main thread first.
    """

    since: float
    stalled_s: float
    step: int | None
    phase: str
    stacks: tuple[ThreadStack, ...]

    @property
    def main(self) -> ThreadStack | None:
        return next((s for s in self.stacks if s.main), None)

    def stacks_text(self) -> str:
        return "\n".join(s.text() for s in self.stacks)

    def note(self, rank: int) -> str:
        """The report's note on this stall: where it was, and the stacks in one line each, innermost frame first."""
        where = f"step {self.step}" if self.step is not None else "the start"
        stacks = " | ".join(s.short() for s in self.stacks)
        return f"stalled_training at {where}: the Python stacks of rank {rank}, innermost frame first: {stacks}"


class Watchdog:
    """Reports a training loop that stopped completing steps, from its own daemon thread.

    Args:
        timeout_s: seconds without a completed step that count as a stall.
        where: returns the step and the phase the loop is in (called from the watchdog thread).
        on_stall: called once per stall, from the watchdog thread; its exceptions are swallowed.
        poll_s: how often the thread wakes (default: a quarter of the timeout, at most 1 s).
    """

    def __init__(
        self,
        timeout_s: float,
        where: Callable[[], tuple[int | None, str]],
        on_stall: Callable[[Stall], None],
        poll_s: float | None = None,
    ) -> None:
        self.timeout_s = float(timeout_s)
        self._where = where
        self._on_stall = on_stall
        self._poll_s = poll_s if poll_s is not None else min(1.0, self.timeout_s / 4)
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._stalled: Stall | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_ident = threading.main_thread().ident
        self.errors = 0  # exceptions raised by on_stall (swallowed)

    def start(self) -> None:
        with self._lock:
            self._last = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lossguard-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> tuple[Stall, float] | None:
        """A step completed. Returns the stall it ends and its whole duration (seconds), if there was one."""
        now = time.monotonic()
        with self._lock:
            self._last = now
            stalled, self._stalled = self._stalled, None
        return (stalled, now - stalled.since) if stalled is not None else None

    def stop(self) -> Stall | None:
        """Stop the thread (waits at most a poll interval); returns a stall that never ended, if any."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._poll_s + 1.0)
        with self._lock:
            stalled, self._stalled = self._stalled, None
        return stalled

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            with self._lock:
                last, stalled = self._last, self._stalled
            idle = time.monotonic() - last
            if stalled is not None or idle < self.timeout_s:
                continue
            stall = self._capture(last, idle)
            with self._lock:
                if self._last != last or self._stalled is not None:
                    continue  # a step completed meanwhile
                self._stalled = stall
            try:
                self._on_stall(stall)
            except Exception:
                self.errors += 1  # a report that failed must not kill the thread, nor the training

    def _capture(self, since: float, idle: float) -> Stall:
        step, phase = self._where()
        names = {t.ident: t.name for t in threading.enumerate()}
        own = threading.get_ident()
        stacks = [
            ThreadStack(names.get(i, f"thread {i}"), tuple(traceback.extract_stack(frame)), i == self._main_ident)
            for i, frame in sys._current_frames().items()
            if i != own
        ]
        stacks.sort(key=lambda s: not s.main)
        return Stall(since, idle, step, phase, tuple(stacks))


def _frame(frame: traceback.FrameSummary, filename: str | None = None) -> str:
    return f"{filename or frame.filename}:{frame.lineno} in {frame.name}"
