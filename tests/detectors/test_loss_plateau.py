import numpy as np

from lightning_lossguard.detectors import LossPlateau
from tests.detectors.curves import decaying, feed, flat


def test_a_loss_that_never_falls() -> None:
    found = feed(LossPlateau(), flat(150, noise=0.02))
    assert found and found[0].evidence["improvement"] < 0.05
    assert found[0].remedies[0] == "Raise the learning rate."


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
