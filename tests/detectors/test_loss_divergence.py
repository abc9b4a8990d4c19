import numpy as np

from lightning_lossguard.detectors import LossDivergence
from tests.detectors.curves import decaying, feed, flat


def test_a_loss_that_climbs_far_above_its_start() -> None:
    losses = np.concatenate([decaying(50), np.geomspace(0.5, 500, 50)])
    found = feed(LossDivergence(), losses)
    assert found and found[0].severity == "error"
    assert found[0].evidence["current_loss"] > 2 * found[0].evidence["start_loss"]
    assert found[0].remedies[0] == "Lower the learning rate."


def test_a_loss_falling_without_bound_is_a_flipped_sign() -> None:
    losses = -np.geomspace(1.5, 500, 80)
    found = feed(LossDivergence(), losses)
    assert found and found[0].subject == "falling"
    assert "sign" in found[0].remedies[0]


def test_healthy_curves_stay_quiet() -> None:
    assert feed(LossDivergence(), decaying(500, noise=0.3)) == []
    assert feed(LossDivergence(), flat(500, noise=0.3)) == []
    # A legitimately negative loss (e.g. a log-likelihood) that converges.
    assert feed(LossDivergence(), -1.0 - 0.5 * (1 - np.exp(-np.arange(300) / 50))) == []


def test_a_spike_that_recovers_is_not_divergence() -> None:
    losses = decaying(200)
    losses[100:103] = 50.0
    assert feed(LossDivergence(), losses) == []
