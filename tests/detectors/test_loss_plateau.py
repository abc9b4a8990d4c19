import numpy as np

from lightning_lossguard.detectors import LossPlateau
from tests.detectors.curves import decaying, feed, flat


def test_a_loss_that_never_falls_with_tiny_steps_needs_a_higher_learning_rate() -> None:
    found = feed(LossPlateau(), flat(300, noise=0.02), update_ratio=1e-7)
    assert found and found[0].evidence["improvement"] < 0.05
    assert found[0].remedies[0] == "Raise the learning rate." and "too small" in found[0].message


def test_a_stuck_loss_with_huge_steps_is_instability_not_a_small_learning_rate() -> None:
    found = feed(LossPlateau(), flat(300, level=4.2, noise=0.15), update_ratio=0.2, learning_rate=20.0)
    assert found and "unstable" in found[0].message and "learning rate 20" in found[0].message
    assert found[0].remedies[0].startswith("Lower the learning rate") and found[0].severity == "warning"


def test_a_loss_that_jumped_in_its_first_steps_blames_the_learning_rate_even_with_tiny_updates() -> None:
    # An LSTM language model with lr 20 and no clipping: ln V at first, ~10x that a few steps later, for good;
    # its saturated units make the updates look tiny.
    losses = np.concatenate([[5.3, 5.3, 5.2], flat(297, level=55.0, noise=0.1)])
    found = feed(LossPlateau(), losses, update_ratio=1e-9, learning_rate=20.0)
    assert found and "jumped from 5.3" in found[0].message and found[0].remedies[0].startswith("Lower the learning")


def test_a_loss_that_does_not_fall_with_healthy_updates_is_only_an_info() -> None:
    # An actor-critic: the returns grow, the value loss with them; updates are of a healthy size.
    found = feed(LossPlateau(), flat(300, level=12.0, noise=0.15), update_ratio=0.01)
    assert found and found[0].severity == "info" and "moving targets" in found[0].message


def test_a_slow_steady_decline_is_progress_not_a_plateau() -> None:
    # 2.26 -> 2.16 in 100 steps (4.5%) on the way to 1.08: small, but significant against the noise.
    noise = 10 ** (0.04 * np.random.default_rng(1).standard_normal(1000))
    losses = 2.26 * np.exp(-0.00074 * np.arange(1000)) * noise
    assert feed(LossPlateau(), losses, total_steps=1000) == []


def test_a_run_that_converges_in_ten_steps_stays_quiet() -> None:
    losses = np.concatenate([np.geomspace(2.0, 0.0114, 10), flat(490, level=0.0114, noise=0.05)])
    assert feed(LossPlateau(), losses, total_steps=500) == []


def test_a_converged_run_that_flattens_stays_quiet() -> None:
    assert feed(LossPlateau(), decaying(1000, rate=0.05, noise=0.3)) == []


def test_noisy_small_batch_losses_that_learn_stay_quiet() -> None:
    assert feed(LossPlateau(), decaying(600, rate=0.005, noise=0.5)) == []


def test_judged_only_after_a_share_of_the_planned_run() -> None:
    # A slow warm-up: nothing moves during the first 10% of a 5000-step run.
    losses = np.concatenate([flat(300, noise=0.02), decaying(300, start=2.3)])
    assert feed(LossPlateau(), losses, total_steps=5000) == []
    assert LossPlateau().unjudged() is not None


def test_block_history_stays_bounded_on_long_runs() -> None:
    from lightning_lossguard.detectors.stats import BlockMedians

    blocks = BlockMedians(10, max_blocks=100)
    blocks.extend(list(range(100_000)), np.arange(100_000, dtype=float))
    assert len(blocks.values) <= 100 and blocks.size >= 10 * 2**6
    assert blocks.values == sorted(blocks.values) and blocks.steps == sorted(blocks.steps)
