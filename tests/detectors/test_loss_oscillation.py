import numpy as np
import pytest

from lightning_lossguard.detectors import LossOscillation, loss_oscillation
from tests.detectors.curves import RNG, decaying, feed, flat


def test_slow_momentum_cycles() -> None:
    t = np.arange(300)
    losses = 3.0 * 10 ** (0.5 * np.sin(2 * np.pi * t / 14)) * 10 ** (0.05 * RNG.standard_normal(300))
    found = feed(LossOscillation(), losses)
    assert found and found[0].evidence["autocorrelation"] > 0.5
    assert "cycles" in found[0].message and found[0].severity == "warning"
    assert "momentum" in found[0].remedies[0]


def test_period_two_flip_flop() -> None:
    losses = np.where(np.arange(200) % 2 == 0, 1.0, 8.0) * 10 ** (0.05 * RNG.standard_normal(200))
    found = feed(LossOscillation(), losses)
    assert found and found[0].evidence["autocorrelation"] < -0.5
    assert "period 2" in found[0].message
    # Batch by batch: tasks taking turns make this curve as well as weights that bounce, so an info that says both.
    assert found[0].severity == "info" and "take turns between tasks" in found[0].remedies[0]
    assert "learning rate is too high" in found[0].message


@pytest.mark.parametrize("ratio", [3.0, 100.0])
def test_tasks_taking_turns_are_an_info_whose_first_remedy_is_the_batch_order(ratio: float) -> None:
    t = np.arange(400)
    levels = np.array([1.0, ratio])[t % 2] * 10 ** (-t / 2000)  # two tasks in turn, each learning slowly
    found = feed(LossOscillation(), levels * 10 ** (0.05 * RNG.standard_normal(400)))
    assert found and all(d.severity == "info" for d in found)
    assert found[0].evidence["period"] <= LossOscillation.Thresholds().short_cycle


def test_noisy_minibatch_losses_stay_quiet() -> None:
    # Small batches: the per-batch loss spans two decades, but batches are independent.
    assert feed(LossOscillation(), decaying(800, rate=0.003, noise=0.6)) == []
    assert feed(LossOscillation(), flat(800, noise=0.6)) == []


def test_a_curve_that_falls_while_it_wobbles_is_a_trend() -> None:
    t = np.arange(300)
    losses = 100 * 10 ** (-t / 40) * 10 ** (0.35 * np.sin(2 * np.pi * t / 14))
    assert feed(LossOscillation(), losses) == []


def test_loss_cycles_that_follow_a_cyclic_learning_rate_are_intended() -> None:
    t = np.arange(300)
    losses = 3.0 * 10 ** (0.5 * np.sin(2 * np.pi * t / 14)) * 10 ** (0.05 * RNG.standard_normal(300))
    cyclic = 1e-3 * 10 ** (0.5 * np.sin(2 * np.pi * t / 14))
    assert feed(LossOscillation(), losses, learning_rates=cyclic) == []
    assert feed(LossOscillation(), losses, learning_rates=np.full(300, 1e-3))  # the same loss, a constant rate


def test_a_window_narrower_than_a_swing_is_settled_without_counting_swings(monkeypatch: pytest.MonkeyPatch) -> None:
    def counted(*args: object) -> list[float]:
        raise AssertionError("swings counted on a window whose range is below one swing")

    monkeypatch.setattr(loss_oscillation, "_zigzag", counted)
    assert feed(LossOscillation(), flat(400, noise=0.03)) == []  # ~0.1 decades of noise, swings need 0.3
