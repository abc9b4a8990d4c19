import math
import time

import pytest

from lightning_lossguard.signals import step_timer
from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.step_timer import StepTimer, timed


class FakeClock:
    """A patched clock: marks are whatever time the test says it is."""

    def __init__(self) -> None:
        self.now = 0.0
        self.released: list[object] = []

    def mark(self) -> object:
        return self.now

    def elapsed_ms(self, start: object, end: object) -> float:
        return (float(end) - float(start)) * 1e3  # type: ignore[arg-type]

    def release(self, marks: list[object]) -> None:
        self.released.extend(marks)


def test_phases_of_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    timer = StepTimer(clock)
    host = iter([10.0, 10.5, 11.0])
    monkeypatch.setattr(step_timer.time, "perf_counter", lambda: next(host))
    clock.now = 1.000
    timer.batch_start(step=3)
    clock.now = 1.001
    timer.forward_enter()
    timer.forward_enter()  # nested module call: only the outermost counts
    clock.now = 1.003
    timer.forward_exit()
    timer.forward_exit()
    clock.now = 1.004
    timer.backward_start()
    clock.now = 1.007
    timer.backward_end()
    timer.optimizer_start()
    clock.now = 1.010
    timer.batch_end()
    steps, phases, sections = timer.drain()
    assert steps == [3]
    assert phases["training_step"] == [pytest.approx(4.0)]
    assert phases["forward"] == [pytest.approx(2.0)]
    assert phases["loss"] == [pytest.approx(1.0)]  # from the forward's end to backward, not the batch preparation
    assert phases["backward"] == [pytest.approx(3.0)]
    assert phases["optimizer"] == [pytest.approx(3.0)]
    assert phases["step"] == [pytest.approx(10.0)]
    assert math.isnan(phases["data"][0])  # no previous batch
    assert sections == {} and clock.released


def test_data_wait_excludes_validation_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    timer = StepTimer(clock)
    host = iter([0.0, 1.0, 2.0, 3.0, 9.0, 9.5])  # start/end of three batches
    monkeypatch.setattr(step_timer.time, "perf_counter", lambda: next(host))
    for interrupt in (False, False, True):
        if interrupt:
            timer.interrupt()
        timer.batch_start(0)
        timer.batch_end()
    _, phases, _ = timer.drain()
    assert math.isnan(phases["data"][0])
    assert phases["data"][1] == pytest.approx(1000.0)
    assert math.isnan(phases["data"][2])  # the 7 s validation gap is not data loading


def test_timed_sections_override_the_loss_phase_and_are_noops_outside_a_batch() -> None:
    clock = FakeClock()
    timer = StepTimer(clock)
    with timed("loss"):
        pass  # no active timer: nothing happens
    step_timer.activate(timer)
    try:
        timer.batch_start(0)
        clock.now = 0.001
        with timed("loss"):
            clock.now = 0.004
        with timed("augment"):
            clock.now = 0.005
        timer.backward_start()
        timer.batch_end()
    finally:
        step_timer.deactivate(timer)
    _, phases, sections = timer.drain()
    assert phases["loss"] == [pytest.approx(3.0)]
    assert sections["augment"] == [pytest.approx(1.0)]


def test_an_untimed_batch_end_that_starts_the_next_untimed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # untimed_batch_end(step) is batch_end() then batch_untimed(step): the data wait of the timed batch after a run
    # of untimed ones counts from the last one's end, and the watchdog's "where" names the batch under way.
    clock = FakeClock()
    timer = StepTimer(clock)
    host = iter([0.0, 1.0, 2.0, 2.25, 3.0, 3.5])
    monkeypatch.setattr(step_timer.time, "perf_counter", lambda: next(host))
    timer.batch_start(0)
    timer.batch_end()  # 0.0, 1.0
    timer.batch_untimed(1)
    timer.untimed_batch_end(2)  # batch 1 ends at 2.0, batch 2 starts untimed
    assert not timer.in_batch and timer.where()[0] == 2 and timer._last_step == 1
    timer.batch_end()  # batch 2 ends at 2.25
    timer.batch_start(3)  # 3.0
    timer.batch_end()
    steps, phases, _ = timer.drain()
    assert steps == [0, 3]
    assert phases["data"][1] == pytest.approx(750.0)


class FakeCpu:
    """The training thread's CPU time, as the test says it is (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cpu_time_of_the_loss_and_the_step_is_measured_beside_the_wall_time() -> None:
    clock, cpu = FakeClock(), FakeCpu()
    timer = StepTimer(clock, cpu_clock=cpu)
    timer.batch_start(0)
    timer.forward_enter()
    clock.now, cpu.now = 0.002, 0.002
    timer.forward_exit()
    clock.now, cpu.now = 0.010, 0.003  # a long loss in wall time: preempted for 7 of its 8 ms
    timer.backward_start()
    clock.now, cpu.now = 0.012, 0.005
    timer.batch_end()
    _, phases, _ = timer.drain()
    assert phases["loss"] == [pytest.approx(8.0)] and phases["loss_cpu"] == [pytest.approx(1.0)]
    assert phases["training_step_cpu"] == [pytest.approx(3.0)] and phases["step_cpu"] == [pytest.approx(5.0)]


def test_a_timed_loss_section_has_its_own_cpu_time() -> None:
    clock, cpu = FakeClock(), FakeCpu()
    timer = StepTimer(clock, cpu_clock=cpu)
    step_timer.activate(timer)
    try:
        timer.batch_start(0)
        clock.now, cpu.now = 0.001, 0.001
        with timed("loss"):
            clock.now, cpu.now = 0.006, 0.003
        with timed("augment"):  # only the loss is timed in CPU time
            clock.now, cpu.now = 0.007, 0.004
        timer.backward_start()
        timer.batch_end()
    finally:
        step_timer.deactivate(timer)
    _, phases, _ = timer.drain()
    assert phases["loss"] == [pytest.approx(5.0)] and phases["loss_cpu"] == [pytest.approx(2.0)]


def test_cpu_time_is_measured_with_a_host_clock_only() -> None:
    # On a GPU the host only launches the work: its CPU time says nothing of the loss's cost.
    assert StepTimer(HostClock()).cpu_clock is time.thread_time
    timer = StepTimer(FakeClock())
    assert timer.cpu_clock is None
    timer.batch_start(0)
    timer.forward_enter()
    timer.forward_exit()
    timer.backward_start()
    timer.batch_end()
    _, phases, _ = timer.drain()
    assert all(math.isnan(phases[p][0]) for p in step_timer.CPU_PHASES)
