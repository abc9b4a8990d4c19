"""expensive_loss on scripted timings: the loss's share of the step, checked in CPU time."""

import numpy as np

from lightning_lossguard.detectors import ExpensiveLoss
from tests.detectors.curves import jitter


def feed_pair(detector: ExpensiveLoss, loss: np.ndarray, step: np.ndarray) -> list:
    found = []
    for i in range(0, len(loss), 10):
        found += detector.update(list(range(i, i + 10)), loss[i : i + 10], step[i : i + 10])
    return found


def test_expensive_loss_warning_and_info() -> None:
    warn = feed_pair(ExpensiveLoss(), jitter(np.full(80, 6.0)), jitter(np.full(80, 10.0)))
    info = feed_pair(ExpensiveLoss(), jitter(np.full(80, 2.5), 0.02), jitter(np.full(80, 10.0), 0.02))
    assert warn and warn[0].severity == "warning" and warn[0].evidence["share"] > 0.5
    assert info and info[0].severity == "info"


def test_cheap_or_small_losses_stay_quiet() -> None:
    assert feed_pair(ExpensiveLoss(), jitter(np.full(80, 0.5)), jitter(np.full(80, 10.0))) == []
    assert feed_pair(ExpensiveLoss(), jitter(np.full(80, 0.3)), jitter(np.full(80, 0.4))) == []


def test_expensive_loss_warns_only_when_its_share_holds_in_cpu_time() -> None:
    loss, step = jitter(np.full(80, 6.0)), jitter(np.full(80, 10.0))
    detector, found = ExpensiveLoss(), []
    for i in range(0, 80, 10):
        window = slice(i, i + 10)
        found += detector.update(
            list(range(i, i + 10)), loss[window], step[window], cpu_loss_ms=loss[window] / 4, cpu_step_ms=step[window]
        )
    busy = found[-1]
    assert busy.severity == "info" and busy.evidence["share"] > 0.5 and busy.evidence["cpu_share"] < 0.35
    confirmed = ExpensiveLoss().update(list(range(80)), loss, step, cpu_loss_ms=loss * 0.9, cpu_step_ms=step)
    assert confirmed[0].severity == "warning" and confirmed[0].evidence["cpu_share"] > 0.35
