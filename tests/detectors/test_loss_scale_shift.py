import numpy as np

from lightning_lossguard.detectors import LossScaleShift
from tests.detectors.curves import decaying, feed, flat


def test_a_jump_between_two_steady_phases_is_an_info() -> None:
    found = feed(LossScaleShift(), np.concatenate([flat(60, 0.5, 0.02), flat(60, 40.0, 0.02)]))
    assert found and found[0].severity == "info" and found[0].subject == "loss"
    assert 50 < found[0].evidence["factor"] < 120


def test_a_fast_healthy_decay_is_not_a_shift() -> None:
    assert feed(LossScaleShift(), decaying(400, rate=0.05, floor=0.001, noise=0.1)) == []


def test_a_new_fit_at_another_scale_than_the_last() -> None:
    detector = LossScaleShift()
    detector.remember_previous_fit(loss_level=np.log10(0.05), grad_level=0.0)
    found = feed(detector, flat(40, 30.0, 0.02))
    assert found and "previous fit" in found[0].message
