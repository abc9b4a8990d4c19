import re

import numpy as np

from lightning_lossguard.detectors import LossPlateau
from tests.detectors.curves import decaying, feed, flat


def test_a_loss_that_never_falls_with_tiny_steps_needs_a_higher_learning_rate() -> None:
    found = feed(LossPlateau(), flat(300, noise=0.02), update_ratio=1e-7)
    assert found and found[0].evidence["improvement"] < 0.05
    assert found[0].remedies[0] == "Raise the learning rate." and "too small" in found[0].message


def test_tiny_steps_at_a_learning_rate_a_schedule_took_to_zero_point_at_the_schedule() -> None:
    # ExponentialLR(gamma=0.9) meant per epoch, stepped every batch: 1e-3 at first, 1e-13 by step 220.
    detector, found = LossPlateau(), []
    losses = flat(300, level=1.38, noise=0.02)
    for start in range(0, 300, 10):
        learning_rate = 1e-3 * 0.9 ** (start + 9)
        found += detector.update(list(range(start, start + 10)), losses[start : start + 10], None, 1e-9, learning_rate)
    assert found and "a schedule decayed the learning rate away" in found[0].message, found[0].message
    assert found[0].remedies[0].startswith("Check the learning-rate schedule")
    assert "Raise the learning rate." not in found[0].remedies


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


def _settling(n: int, start: float, level: float, rate: float = 0.05) -> np.ndarray:
    """A loss that falls from ``start`` to ``level`` and then is the same on every batch (to float noise)."""
    return (level + (start - level) * np.exp(-rate * np.arange(n))) * (1 + 1e-6 * RNG_UNIFORM.standard_normal(n))


RNG_UNIFORM = np.random.default_rng(5)


def test_a_loss_that_settles_at_ln_2_on_every_batch_means_the_outputs_ignore_the_input() -> None:
    # Logits squashed to >= 0 (an exp on them) under a binary cross entropy: every prediction goes to 1/2.
    found = feed(LossPlateau(), _settling(300, 1.2, np.log(2)), total_steps=300)
    assert found and found[0].severity == "warning" and found[0].evidence["classes"] == 2
    assert "ln 2 = 0.69315" in found[0].message and "1/2 for every target" in found[0].message
    assert found[0].remedies[0].startswith("Check what the last layer hands the loss")


def test_a_loss_stuck_at_ln_10_from_the_start_is_named_as_uniform_predictions() -> None:
    # Tiny steps from the start: the learning rate first. Healthy-sized steps: what the last layer hands the loss.
    tiny = feed(LossPlateau(), _settling(300, np.log(10), np.log(10)), update_ratio=1e-7)
    assert tiny and tiny[0].evidence["classes"] == 10 and "they never did" in tiny[0].message
    assert tiny[0].remedies[0] == "Raise the learning rate."
    healthy = feed(LossPlateau(), _settling(300, np.log(10), np.log(10)), update_ratio=1e-3)
    assert healthy and healthy[0].remedies[0].startswith("Check what the last layer hands the loss")


def test_many_classes_need_a_level_closer_to_ln_k() -> None:
    # ln 500 and ln 501 are 0.002 apart: halfway between them is not "1/500 for every target".
    exact = feed(LossPlateau(), _settling(300, 8.0, np.log(500)), total_steps=300)
    near = feed(LossPlateau(), _settling(300, 8.0, np.log(500) + 0.001), total_steps=300)
    assert exact and exact[0].evidence["classes"] == 500
    assert all("classes" not in d.evidence for d in near)


def test_a_noisy_loss_at_ln_2_is_not_uniform_predictions() -> None:
    # Minibatch noise around ln 2 (a GAN's discriminator, a hard binary task): not the same on every batch.
    noisy = feed(LossPlateau(), flat(300, level=np.log(2), noise=0.02), update_ratio=1e-7)
    still = feed(LossPlateau(), flat(300, level=np.log(2), noise=1e-6), update_ratio=1e-7)
    assert all("classes" not in d.evidence for d in noisy)
    assert still and still[0].evidence["classes"] == 2


def test_a_smooth_full_batch_fall_through_ln_k_levels_is_not_uniform_predictions() -> None:
    # A full-batch fit has no batch noise: on its way down it passes ln 3, ln 2 and others, and then rests at a level
    # that is no ln K; it is quiet throughout, and its resting level with a constant loss is not claimed either.
    assert feed(LossPlateau(), _settling(600, 1.5, 0.55, rate=0.01), total_steps=600) == []
    assert feed(LossPlateau(), _settling(300, 2.0, 0.8), total_steps=300) == []


def test_full_batch_training_at_ln_k_is_not_judged_as_uniform_predictions() -> None:
    # One batch an epoch: every step sees the same data, so a loss that is the same on every step is expected there.
    same_data = feed(LossPlateau(), _settling(300, 1.2, np.log(2)), total_steps=300, batches_differ=False)
    assert all("classes" not in d.evidence for d in same_data)


def test_uniform_predictions_with_huge_steps_blame_the_learning_rate_first() -> None:
    # A contrastive model with its learning rate x1000: its embeddings collapse, every pair scores alike, and its loss
    # is ln (batch size) on every batch while each step moves the weights by a fifth of their size.
    found = feed(LossPlateau(), _settling(300, np.log(128), np.log(128)), update_ratio=0.2)
    assert found and found[0].evidence["classes"] == 128 and "collapsed it" in found[0].message
    assert found[0].remedies[0].startswith("Lower the learning rate")


def test_ln_of_a_power_of_two_also_reads_as_summed_binary_terms() -> None:
    # A skip-gram's loss sums one positive and five negative binary cross entropies: all at 1/2 it is 6 ln 2 = ln 64.
    summed = feed(LossPlateau(), _settling(300, np.log(64), np.log(64)), update_ratio=1e-7)
    assert summed and "1/64 for every target (or of 1/2 on each of 6 binary targets" in summed[0].message
    ten = feed(LossPlateau(), _settling(300, np.log(10), np.log(10)), update_ratio=1e-7)
    two = feed(LossPlateau(), _settling(300, 1.2, np.log(2)), total_steps=300)
    assert ten and two and all("binary targets" not in d.message for d in ten + two)


def test_a_plateau_that_ends_gets_a_note_at_the_end() -> None:
    # Stuck at 2.3 for 300 steps with tiny updates, then the learning rate is raised and the loss falls to 0.5.
    detector = LossPlateau()
    found = feed(detector, flat(300, noise=0.02), update_ratio=1e-7)
    assert found and detector.undone_by(found[0]) is None, "still on it at the report"
    feed(detector, np.concatenate([np.geomspace(2.3, 0.5, 100), flat(100, 0.5, 0.02)]), start=300, update_ratio=1e-3)
    note = detector.undone_by(found[0])
    assert note is not None and note.startswith(f"loss_plateau at step {found[0].step} did not last")
    assert re.search(r"ended the fit at 0\.[45]\d* \(7\d% below the level reported\)\.$", note), note


def test_a_loss_that_moves_while_the_steps_stay_tiny_or_the_model_frozen_gets_no_note() -> None:
    # PPO with its learning rate /1e6: the loss moves with the data the policy collects, not with learning.
    later = np.concatenate([np.geomspace(2.3, 1.8, 100), flat(100, 1.8, 0.02)])
    detector = LossPlateau()
    found = feed(detector, flat(300, noise=0.02), update_ratio=1e-7)
    feed(detector, later, start=300, update_ratio=1e-7)
    assert found and detector.undone_by(found[0]) is None
    # Almost nothing trainable: a fall of 22% is what a bias can do (30% is needed, as for the plateau).
    detector = LossPlateau()
    found = feed(detector, flat(300, noise=0.02), trainable_share=1e-3)
    feed(detector, later, start=300, trainable_share=1e-3)
    assert found and detector.undone_by(found[0]) is None
    feed(detector, flat(100, 1.2, 0.02), start=500, trainable_share=1e-3)
    assert detector.undone_by(found[0]) is not None


def test_a_plateau_that_falls_only_a_little_or_stays_gets_no_note() -> None:
    for later in (flat(200, noise=0.02), flat(200, level=2.25, noise=0.02)):  # the same level; 2% lower
        detector = LossPlateau()
        found = feed(detector, flat(300, noise=0.02), update_ratio=1e-7)
        feed(detector, later, start=300)
        assert found and detector.undone_by(found[0]) is None


def test_a_loss_that_leaves_ln_k_gets_a_note_too() -> None:
    detector = LossPlateau()
    found = feed(detector, np.full(300, np.log(10)))
    assert found and found[0].evidence["classes"] == 10
    feed(detector, np.concatenate([np.geomspace(np.log(10), 0.3, 100), flat(100, 0.3, 0.05)]), start=300)
    note = detector.undone_by(found[0])
    assert note is not None and "did not last" in note


def test_a_share_of_a_few_parameters_and_a_loss_no_better_are_told_with_the_digits_they_need() -> None:
    # Every layer frozen but one bias: 3 of 100,000 parameters, never written "0.00%" (which reads as none).
    found = feed(LossPlateau(), flat(300, noise=0.02), trainable_share=3e-5)
    assert found and "only 0.003% of the model's parameters are being trained" in found[0].message
    # A loss whose best is its start is "no better", not "-0.0% better".
    losses = np.concatenate([np.full(20, 2.0), flat(280, level=2.2, noise=0.01)])
    found = feed(LossPlateau(), losses, update_ratio=1e-7)
    assert found and "(best 2, no better than the start)" in found[0].message, found[0].message


def test_a_loss_that_jumped_and_only_creeps_back_as_the_rate_decays_is_judged_against_its_start() -> None:
    # A decoder at a learning rate x1000 under clipping: ln V at first, ~7x that within a few steps, then a slow fall
    # as a cosine schedule decays the rate (a significant downward trend), still 3-6x the start at the end.
    rng = np.random.default_rng(3)
    jump = 33.0 * np.exp(-np.arange(297) / 400) * 10 ** (0.02 * rng.standard_normal(297))
    losses = np.concatenate([[4.8, 4.8, 4.9], jump])
    found = feed(LossPlateau(), losses, update_ratio=0.1, learning_rate=2.0)
    assert found and found[0].severity == "warning", found
    assert "has not come back to where it started" in found[0].message and "jumped from 4.8" in found[0].message
    assert found[0].remedies[0].startswith("Lower the learning rate")


def test_an_early_jump_the_loss_comes_back_from_is_not_judged_against_its_start() -> None:
    # A warm-up spike: 2.3 at first, 3x that for a few dozen steps, then a fall well under twice the start.
    rng = np.random.default_rng(4)
    after = 2.3 * (0.4 + 2.6 * np.exp(-np.arange(297) / 40)) * 10 ** (0.02 * rng.standard_normal(297))
    losses = np.concatenate([[2.3, 2.3, 2.3], after])
    assert feed(LossPlateau(), losses, update_ratio=0.01, learning_rate=1e-3) == []


def test_a_jump_that_never_came_back_is_not_undone_by_a_fall_that_stays_far_above_the_start() -> None:
    # The same decoder: after the warning the loss keeps creeping down, 33 -> 16, still 3x the 4.8 it started at.
    rng = np.random.default_rng(3)
    jump = 33.0 * np.exp(-np.arange(297) / 400) * 10 ** (0.02 * rng.standard_normal(297))
    detector = LossPlateau()
    found = feed(detector, np.concatenate([[4.8, 4.8, 4.9], jump]), update_ratio=0.1, learning_rate=2.0)
    assert found and found[0].evidence["first_loss"] == 4.8
    assert detector.undone_by(found[0]) is None
    # Back under twice its start by the end of the fit: by the rule's own terms no longer stuck above it.
    detector = LossPlateau()
    back = np.concatenate([jump[:150], np.geomspace(jump[150], 6.0, 147)])
    found = feed(detector, np.concatenate([[4.8, 4.8, 4.9], back]), update_ratio=0.1, learning_rate=2.0)
    note = detector.undone_by(found[0])
    assert note is not None and "(4.8 in its first batches, 2x that 9.6)" in note, note
