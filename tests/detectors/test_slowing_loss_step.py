"""slowing_loss_step on scripted timings: a loss step that gets slower, and what is not that."""

import numpy as np

from lightning_lossguard.detectors import SlowingLossStep
from lightning_lossguard.detectors.slowing_loss_step import SUBNORMAL_REMEDY
from tests.detectors.curves import feed, jitter


def test_linear_growth_is_slowing() -> None:
    times = jitter(1.0 + 0.01 * np.arange(400))
    found = feed(SlowingLossStep(), times, total_steps=1000)
    assert found and found[0].code == "slowing_loss_step"
    ev = found[0].evidence
    assert ev["now_ms"] > 1.5 * ev["start_ms"] and ev["growth_ms_per_1000_steps"] > 5
    assert ev["projected_extra_s"] > 0 and "remaining" in found[0].message


def test_the_extra_time_of_a_short_remainder_is_told_in_milliseconds() -> None:
    times = jitter(1.0 + 0.01 * np.arange(400))
    found = feed(SlowingLossStep(), times, total_steps=420)
    assert found and found[0].evidence["projected_extra_s"] < 1
    assert found[0].message.endswith(" ms extra.") and " 0 s " not in found[0].message


def test_flat_with_jitter_and_one_long_pause_stay_quiet() -> None:
    times = jitter(np.full(600, 2.0), 0.3)
    times[300] = 5000.0  # a checkpoint or GC pause
    assert feed(SlowingLossStep(), times) == []


def test_slow_first_steps_are_warmup() -> None:
    times = np.concatenate([np.full(15, 50.0), jitter(np.full(300, 1.0))])  # compilation, allocation
    assert feed(SlowingLossStep(), times) == []


def test_tiny_absolute_growth_is_ignored() -> None:
    times = jitter(0.05 + 0.0005 * np.arange(400), 0.05)  # 0.05 ms -> 0.25 ms: not worth a warning
    assert feed(SlowingLossStep(), times) == []


def feed_with_control(loss: np.ndarray, control: np.ndarray, cpu: np.ndarray | None = None) -> list:
    """Ten batches at a time, with the forward pass as the control and, when given, the loss's CPU time."""
    detector, found = SlowingLossStep(), []
    for i in range(0, len(loss), 10):
        window = slice(i, i + 10)
        cpu_ms = None if cpu is None else cpu[window]
        found += detector.update(list(range(i, i + 10)), loss[window], control_ms=control[window], cpu_ms=cpu_ms)
    return found


def test_a_machine_that_slows_everything_down_is_not_a_slowing_loss() -> None:
    busier = np.concatenate([np.ones(150), np.linspace(1, 3, 250)])  # other jobs start at step 150
    assert feed_with_control(jitter(1.0 * busier), jitter(0.3 * busier)) == []


def test_a_loss_that_slows_while_the_forward_stays_flat() -> None:
    found = feed_with_control(jitter(1.0 + 0.01 * np.arange(400)), jitter(np.full(400, 0.3)))
    assert found and "forward pass changed only" in found[0].message
    assert found[0].evidence["control_ratio"] < 1.3


def test_a_jump_to_a_busier_machine_is_not_a_steady_climb() -> None:
    times = jitter(np.concatenate([np.full(60, 1.0), np.full(340, 15.0)]), 0.05)  # step change, then flat
    assert feed(SlowingLossStep(), times) == []


def test_a_long_loss_stretched_by_preemption_is_not_a_slowing_loss() -> None:
    # A 4 ms loss and a 0.1 ms forward on a machine that gets busier: preemptions land on the long loss, so its
    # median climbs and the forward's does not; the thread's CPU time in the loss stays at 4 ms.
    busier = np.concatenate([np.zeros(100), np.linspace(0, 4, 300)])
    wall, cpu = jitter(4.0 + busier, 0.05), jitter(np.full(400, 4.0), 0.05)
    forward = jitter(np.full(400, 0.1), 0.05)
    assert feed_with_control(wall, forward), "without the CPU time the control is fooled (the case this guards)"
    assert feed_with_control(wall, forward, cpu) == []


def test_a_loss_whose_work_grows_shows_it_in_cpu_time() -> None:
    wall = jitter(1.0 + 0.01 * np.arange(400))
    found = feed_with_control(wall, jitter(np.full(400, 0.3)), 0.9 * wall)
    evidence = found[0].evidence
    assert evidence["cpu_growth_ms"] > 0.7 * (evidence["now_ms"] - evidence["start_ms"])
    assert "is CPU time: the training thread spent it" in found[0].message
    # On a CPU run the same work can also have got slower: subnormal floats come second, after state that grows.
    assert found[0].remedies[0].startswith("Look for lists or tensors kept across steps")
    assert found[0].remedies[1] == SUBNORMAL_REMEDY


def test_subnormal_floats_are_named_only_where_cpu_time_is_measured() -> None:
    # A GPU run measures no CPU time: subnormal arithmetic is not slow there.
    wall = jitter(1.0 + 0.01 * np.arange(400))
    found = feed_with_control(wall, jitter(np.full(400, 0.3)))
    assert found and all(SUBNORMAL_REMEDY not in d.remedies and "cpu_growth_ms" not in d.evidence for d in found)
