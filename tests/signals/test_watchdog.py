"""The watchdog thread: it notices a loop that stopped completing steps, reports once, and the next step ends it."""

import threading
import time
import traceback

import pytest

from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.step_timer import StepTimer
from lightning_lossguard.signals.watchdog import Stall, ThreadStack, Watchdog


def wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def blocked_in_backward(seen: list[Stall]) -> None:
    assert wait_for(lambda: bool(seen))  # the main thread sits here until the watchdog reported ...
    time.sleep(0.2)  # ... and a few polls more: it reports once


def test_a_stall_is_reported_once_with_the_phase_and_every_stack_and_the_next_beat_ends_it() -> None:
    timer = StepTimer(HostClock())
    seen: list[Stall] = []
    dog = Watchdog(0.2, timer.where, seen.append, poll_s=0.02)
    dog.start()
    try:
        timer.batch_start(7)
        timer.backward_start()
        blocked_in_backward(seen)
        assert len(seen) == 1  # once, not once per poll
        stall = seen[0]
        assert stall.step == 7 and stall.phase == "backward" and stall.stalled_s >= 0.2
        main = stall.main
        assert main is not None and main.name == "MainThread" and stall.stacks[0] is main
        assert "blocked_in_backward" in main.innermost or "blocked_in_backward" in main.text()
        assert all(s.name != "lossguard-watchdog" for s in stall.stacks)  # its own stack is not news
        assert "test_watchdog.py" in main.short() and " < " in main.short()
        ended = dog.beat()
        assert ended is not None and ended[0] is stall and ended[1] >= stall.stalled_s + 0.2
        assert dog.beat() is None
    finally:
        assert dog.stop() is None
    assert not dog.running


def test_steady_beats_never_fire() -> None:
    seen: list[Stall] = []
    dog = Watchdog(0.15, lambda: (None, "x"), seen.append, poll_s=0.01)
    dog.start()
    for _ in range(40):
        time.sleep(0.01)
        dog.beat()
    dog.stop()
    assert seen == []


def test_a_stall_that_never_ends_is_returned_by_stop_and_a_failing_report_is_swallowed() -> None:
    def broken(stall: Stall) -> None:
        raise RuntimeError("the report could not be written")

    dog = Watchdog(0.05, lambda: (3, "the optimizer step"), broken, poll_s=0.01)
    dog.start()
    assert wait_for(lambda: dog.errors == 1)
    assert dog.running  # the thread survived the failing report
    stall = dog.stop()
    assert stall is not None and stall.step == 3 and stall.phase == "the optimizer step"


def test_the_thread_is_a_daemon_and_stops_quickly() -> None:
    dog = Watchdog(60, lambda: (None, "x"), lambda s: None)
    dog.start()
    [thread] = [t for t in threading.enumerate() if t.name == "lossguard-watchdog"]
    assert thread.daemon
    start = time.monotonic()
    dog.stop()
    assert time.monotonic() - start < 2.5 and not thread.is_alive()


@pytest.mark.parametrize(
    ("marks", "phase"),
    [
        ([], "training_step (forward/loss)"),
        (["forward_enter"], "forward"),
        (["backward_start"], "backward"),
        (["backward_start", "backward_end"], "after backward, before the optimizer step"),
        (["backward_start", "backward_end", "optimizer_start"], "the optimizer step"),
    ],
)
def test_the_step_timer_says_where_the_loop_is(marks: list[str], phase: str) -> None:
    timer = StepTimer(HostClock())
    assert timer.where() == (None, "outside training batches (validation, checkpointing, epoch start)")
    timer.batch_start(4)
    for mark in marks:
        getattr(timer, mark)()
    assert timer.where() == (4, phase)
    timer.batch_end()
    assert timer.where() == (4, "between batches after step 4: data loading")
    timer.interrupt()
    assert timer.where()[1].startswith("outside training batches after step 4")


def test_a_stalls_note_names_where_it_was_the_rank_and_each_stack_innermost_frame_first() -> None:
    frames = (traceback.FrameSummary("train.py", 10, "fit"), traceback.FrameSummary("loader.py", 42, "next_batch"))
    stack = ThreadStack("MainThread", frames, main=True)
    at_step = Stall(since=0.0, stalled_s=31.0, step=25, phase="backward", stacks=(stack,)).note(rank=1)
    assert at_step.startswith("stalled_training at step 25: the Python stacks of rank 1, innermost frame first: ")
    assert at_step.index("next_batch") < at_step.index("fit")
    before_first = Stall(since=0.0, stalled_s=31.0, step=None, phase="data", stacks=(stack,)).note(rank=0)
    assert before_first.startswith("stalled_training at the start: the Python stacks of rank 0")
