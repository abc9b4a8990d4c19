import re

import numpy as np
import pytest

from lightning_lossguard.detectors import LossDivergence
from tests.detectors.curves import decaying, feed, flat


def test_a_loss_that_climbs_with_its_gradients_is_an_error() -> None:
    losses = np.concatenate([decaying(50), np.geomspace(0.5, 500, 50)])
    grads = np.concatenate([np.ones(50), np.geomspace(1, 1e3, 50)])
    found = [
        d for d in feed(LossDivergence(), losses, grad_steps=np.arange(100), grad_norms=grads) if d.severity == "error"
    ]
    assert found, "an info at first, escalated to an error once the gradients corroborate"
    assert found[0].evidence["current_loss"] > 2 * found[0].evidence["start_loss"]
    assert found[0].evidence["grad_growth"] >= 10 and "gradient norm grew" in found[0].message
    assert found[0].remedies[0] == "Lower the learning rate."


def test_a_blow_up_after_a_long_fall_is_corroborated_by_the_latest_gradients() -> None:
    # The quickstart's pattern: loss and gradients fall for 150 steps (the gradients from a large start), then the
    # learning rate jumps and both shoot up. Against the start the gradients only came back (0.7x); against their
    # level at the loss's best they grew ~80x: that corroborates the rise.
    losses = np.concatenate([np.geomspace(0.8, 0.05, 150), np.geomspace(0.05, 20, 50)])
    grads = np.concatenate([np.geomspace(50, 0.5, 150), np.geomspace(0.5, 100, 50)])
    found = feed(LossDivergence(), losses, grad_steps=np.arange(200), grad_norms=grads)
    assert [d.severity for d in found] == ["error"]
    assert found[0].evidence["grad_growth"] >= 10 and "gradient norm grew" in found[0].message
    # Five blocks of climb have no trend to speak of (Mann-Kendall z 2.6): the message quotes what decided it, the
    # level's shift against the run's noise, not "still rising (trend z=0.0)" as the quickstart's output once read.
    assert found[0].evidence["trend_z"] < 3 and "trend z" not in found[0].message
    assert f"level z={found[0].evidence['level_z']:.3g} against" in found[0].message


def test_a_long_climb_is_quoted_by_its_trend() -> None:
    # A noisy loss that climbs 10x over 400 steps after its best: the trend decides, and the message says so.
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.geomspace(1, 0.3, 100), np.geomspace(0.3, 3, 400)]) * 10 ** (
        0.15 * rng.standard_normal(500)
    )
    found = feed(LossDivergence(), losses)
    assert found and found[0].evidence["trend_z"] >= 3
    assert f"(trend z={found[0].evidence['trend_z']:.1f} since its best)" in found[0].message


def test_a_rising_loss_with_steady_gradients_is_not_an_error() -> None:
    # A DQN: the TD loss grows 0.145 -> 1.7 while the Q-values (and the return) grow; gradients stay put.
    losses = 0.145 * np.geomspace(1, 11.7, 300) * 10 ** (0.2 * np.random.default_rng(2).standard_normal(300))
    grads = 0.5 * 10 ** (0.2 * np.random.default_rng(3).standard_normal(300)) * np.geomspace(1, 3, 300)
    found = feed(LossDivergence(), losses, grad_steps=np.arange(300), grad_norms=grads)
    assert found and all(d.severity == "info" for d in found)
    assert "Not judged a divergence" in found[0].message and "changed only" in found[0].message


def test_heavy_tailed_batch_size_one_losses_that_fall_stay_quiet() -> None:
    rng = np.random.default_rng(5)
    for _ in range(8):  # eight seeds of a noisy regression with batch size 1: the median falls 0.66 -> 0.005
        level = 0.66 * np.geomspace(1, 0.0075, 1000)
        losses = level * rng.standard_t(2, 1000) ** 2
        assert [d for d in feed(LossDivergence(), losses) if d.severity != "info"] == []


def test_a_loss_falling_without_bound_is_a_flipped_sign() -> None:
    losses = -np.geomspace(1.5, 500, 80)
    found = feed(LossDivergence(), losses)
    assert found and found[0].subject == "falling"
    assert "sign" in found[0].remedies[0]
    assert found[0].message.startswith("The training loss keeps falling as fast lately as before (-4.36 -> -82.58)")


@pytest.mark.parametrize("floor, tau", [(-3.0, 50), (-6.0, 40), (-6.0, 200), (-6.0, 400)])
def test_a_negative_log_likelihood_that_slows_on_its_way_below_zero_stays_quiet(floor: float, tau: int) -> None:
    # From 1.4 towards a floor, at a pace that decays (a learned variance shrinking): over a short window a slow
    # exponential looks like a steady fall, so both the depth below the start and the pace are needed.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        nll = floor + (1.4 - floor) * np.exp(-np.arange(600) / tau) + rng.normal(0, 0.1, 600)
        assert feed(LossDivergence(), nll) == [], seed


@pytest.mark.parametrize("tau", [200, 300, 500])
def test_a_poisson_likelihood_resting_far_below_zero_stays_quiet(tau: int) -> None:
    # A Poisson regression's signed loss (exp(eta) - y * eta) with only its bias learning: 0.64 -> -8.8, slowly. A depth
    # of five times the start (with a stricter pace test) named it a fall without bound on 1-5 of 5 seeds; the corpus
    # run that tried it said so on such a fit. At a depth of ten it rests above the line.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        loss = -8.8 + 9.44 * np.exp(-np.arange(1024) / tau) + rng.normal(0, 0.15, 1024)
        assert feed(LossDivergence(), loss) == [], seed


def test_a_flipped_sign_that_reaches_nan_within_its_first_batches_is_named() -> None:
    # A negated MSE under L-BFGS's line search: -0.07 before any update, -1e30 three steps later, then NaN; not one
    # block of ten finite losses exists when the first report judges it.
    losses = np.array([-0.07, -131.0, -4.8e18, -1.0e30] + [np.nan] * 6)
    found = feed(LossDivergence(), losses)
    assert found and found[0].subject == "falling" and found[0].severity == "error"
    assert found[0].evidence["start_loss"] == -0.07 and "sign" in found[0].remedies[0]
    assert found[0].message.startswith("The training loss fell (-0.07 -> -")
    # The same first batches of a healthy negative log-likelihood stay quiet.
    assert feed(LossDivergence(), np.array([0.9, 0.2, -0.8, -1.5, -2.2] + [np.nan] * 5)) == []


def test_healthy_curves_stay_quiet() -> None:
    assert feed(LossDivergence(), decaying(500, noise=0.3)) == []
    assert feed(LossDivergence(), flat(500, noise=0.3)) == []
    # A legitimately negative loss (e.g. a log-likelihood) that converges.
    assert feed(LossDivergence(), -1.0 - 0.5 * (1 - np.exp(-np.arange(300) / 50))) == []


def test_a_spike_that_recovers_is_not_divergence() -> None:
    losses = decaying(200)
    losses[100:103] = 50.0
    assert feed(LossDivergence(), losses) == []


def _blow_up_on_the_first_updates() -> np.ndarray:
    # A fine-tune with a learning rate far too high: 9.6 before any update, ~1,500 after two, then it comes back.
    jump = np.array([9.6, 230, 1600, 2000, 1500, 2000, 1000, 1400, 1100, 900])
    return np.concatenate([jump, np.geomspace(600, 10, 150)])


def test_a_blow_up_on_the_first_updates_is_measured_from_the_first_batch() -> None:
    found = feed(LossDivergence(), _blow_up_on_the_first_updates(), first_batch_rows=32)[0]
    assert found.severity == "warning" and found.subject == "blow-up"
    assert found.evidence["first_loss"] == 9.6 and found.evidence["factor"] >= 100
    assert "in its first batch to" in found.message


def test_a_single_sample_first_batch_is_no_reference_for_a_blow_up() -> None:
    # With batch size 1 the first loss is one sample's: the reference is the median of the first 8 batches, and
    # against it the same curve rose only ~1.3x; unknown batch size: the median of three, ~7x.
    assert feed(LossDivergence(), _blow_up_on_the_first_updates(), first_batch_rows=1) == []
    assert feed(LossDivergence(), _blow_up_on_the_first_updates()) == []
    # Heavy-tailed single-sample losses whose first two are near 0 by chance (squared Gaussian residuals).
    rng = np.random.default_rng(7)
    healthy = np.concatenate([[0.005], 2 * rng.standard_normal(300) ** 2 * np.geomspace(1, 0.1, 300)])
    assert feed(LossDivergence(), healthy, first_batch_rows=1) == []


def _spike_of_a_few_batches() -> np.ndarray:
    # The corpus' orthogonal RNN at lr x1000 (batches of 64): 1.28 before any update, a spike over five batches (517,
    # 8.3, 276, 456, 40), then back to ~1.2 for good, the model saturated. Its first block's median is only ~6x the
    # start.
    rng = np.random.default_rng(3)
    spike = np.array([1.276, 517.2, 8.264, 275.7, 456.0, 39.97, 6.353, 2.137, 1.135, 1.239])
    return np.concatenate([spike, 1.2 * 10 ** (0.05 * rng.standard_normal(190))])


def test_a_blow_up_of_a_few_batches_is_seen_through_its_blocks_median() -> None:
    found = [d for d in feed(LossDivergence(), _spike_of_a_few_batches(), first_batch_rows=64) if d.severity != "info"]
    assert found and {d.subject for d in found} == {"blow-up"} and found[0].severity == "warning"
    assert found[0].evidence["peak_loss"] == 275.7 and found[0].evidence["peak_step"] == 3
    assert "blew up from 1.276 in its first batch to 275.7 (216x) around step 3" in found[0].message


def test_one_or_two_bad_batches_or_single_sample_batches_are_no_blow_up() -> None:
    two = _spike_of_a_few_batches()
    two[3:5] = 1.3  # only 517 and 8.3 left: one bad batch
    assert [d for d in feed(LossDivergence(), two, first_batch_rows=64) if d.severity != "info"] == []
    # An energy-based model's loss, near 0 by design: 0.000111 first, a few batches near 0.02, then ~0.0009. The
    # spike is 200x the first value but only 25x the level it came back to: a drift from a first value near 0.
    rng = np.random.default_rng(4)
    ebm = np.concatenate(
        [[0.000111, 0.0004], rng.uniform(0.002, 0.006, 20), [0.021, 0.0229, 0.024], np.full(175, 9e-4)]
    )
    assert [d for d in feed(LossDivergence(), ebm, first_batch_rows=64) if d.subject == "blow-up"] == []
    # Single-sample losses: three in ten far above the first ones is heavy-tailed noise, not a blow-up.
    assert [
        d for d in feed(LossDivergence(), _spike_of_a_few_batches(), first_batch_rows=1) if d.severity != "info"
    ] == []


def test_a_slow_climb_and_fall_is_no_blow_up() -> None:
    # A sparse-reward TD loss: near 0 while the values are, then 1000x higher as rewards propagate over hundreds of
    # steps, then down again as the values settle. Not a learning rate too high for the start.
    losses = np.concatenate([np.geomspace(1e-4, 1e-1, 400), np.geomspace(1e-1, 1e-2, 200)])
    assert [d for d in feed(LossDivergence(), losses, first_batch_rows=64) if d.subject == "blow-up"] == []


def test_a_climb_whose_latest_block_is_a_new_best_is_judged_without_error() -> None:
    # The corpus' resnet_multistep with lr x1000: the loss climbed 100-fold, then one block fell below everything
    # before it. The latest blocks' median is still far above the start, but nothing after the best level climbs:
    # no rise to report from there (this used to raise StopIteration inside the report).
    losses = np.concatenate([np.ones(50), np.repeat([25.0, 50.0, 100.0], 10), np.full(10, 1e-3)])
    grads = np.ones(losses.size)
    found = feed(LossDivergence(), losses, grad_steps=np.arange(losses.size), grad_norms=grads)
    assert all(d.evidence.get("current_loss", 0) < 1e3 for d in found)
    assert not [d for d in found if d.step >= 89], "the block that is a new best starts no climb"


TRADE_OFF = "the rise is in codebook 0.32 -> 7.19, while reconstruction fell 0.652 -> 0.233: one term trades off"


def _corroborated_rise(trade_off: str | None) -> list:  # type: ignore[type-arg]
    losses = np.concatenate([decaying(50), np.geomspace(0.5, 5000, 50)])  # 5x, 34x, then 225x its start
    grads = np.concatenate([np.ones(50), np.geomspace(1, 1e3, 50)])
    return feed(LossDivergence(), losses, grad_steps=np.arange(100), grad_norms=grads, trade_off=trade_off)


def test_a_corroborated_rise_past_warn_rise_while_a_term_is_learnt_is_a_warning_that_says_which() -> None:
    found = _corroborated_rise(TRADE_OFF)
    assert found and "error" not in {d.severity for d in found}
    assert all(d.severity == "info" for d in found if d.evidence["rise_factor"] < 100)
    warned = [d for d in found if d.severity == "warning"]
    assert warned and warned[0].evidence["rise_factor"] >= 100
    assert warned and f"But {TRADE_OFF}, so it is not judged a divergence." in warned[0].message
    assert warned[0].evidence["grad_growth"] >= 10 and "weight in the total" in warned[0].remedies[0]


def test_a_rise_under_warn_rise_while_a_term_is_learnt_is_an_info_that_says_which() -> None:
    """The healthy VQ-VAE's pattern: the total rises ~12x while its codebook term climbs and its reconstruction falls;
    the term explains the gradients' growth, so the rise is judged as one with steady gradients (under 100x: info)."""
    losses = np.concatenate([decaying(50), np.geomspace(0.5, 100, 50)])  # 4x, then 12x its start
    grads = np.concatenate([np.ones(50), np.geomspace(1, 1e3, 50)])
    found = feed(LossDivergence(), losses, grad_steps=np.arange(100), grad_norms=grads, trade_off=TRADE_OFF)
    assert found and {d.severity for d in found} == {"info"}
    assert f"But {TRADE_OFF}, so it is not judged a divergence." in found[0].message
    assert "moving targets" not in found[0].message  # the trade-off is the reason given, not the generic one
    assert found[0].evidence["grad_growth"] >= 10 and found[0].evidence["rise_factor"] < 100
    without_terms = feed(LossDivergence(), losses, grad_steps=np.arange(100), grad_norms=grads, trade_off=None)
    assert "error" in {d.severity for d in without_terms}  # guard: the same rise with nothing to explain it


def test_a_corroborated_rise_without_terms_is_an_error_that_says_how_to_hand_them_over() -> None:
    errors = [d for d in _corroborated_rise(None) if d.severity == "error"]
    assert errors and errors[0].remedies[0] == "Lower the learning rate."
    assert '"loss_terms"' in errors[0].remedies[-1]


def test_a_corroborated_rise_of_terms_none_of_which_is_learnt_is_an_error() -> None:
    errors = [d for d in _corroborated_rise("") if d.severity == "error"]
    assert errors and "trades off" not in errors[0].message
    assert not any("loss_terms" in r for r in errors[0].remedies), "the terms were handed over already"


def _climb_and_back(back_to: float, ending: float) -> tuple[np.ndarray, np.ndarray]:
    """A loss at 1 for 50 steps, climbing 30x with its gradients over 50, back down over 50 to ``back_to``, then
    100 steps at ``ending``."""
    losses = np.concatenate(
        [flat(50, 1.0, 0.02), np.geomspace(1, 30, 50), np.geomspace(30, back_to, 50), flat(100, ending, 0.02)]
    )
    grads = np.concatenate([np.ones(50), np.geomspace(1, 100, 50), np.geomspace(100, 1, 50), np.ones(100)])
    return losses, grads


def test_a_climb_the_loss_comes_back_from_gets_a_transient_note_at_the_end() -> None:
    # A VQ-VAE's codebook term: the total climbs with its gradient while the codes catch up, then falls back.
    losses, grads = _climb_and_back(0.9, 0.9)
    detector = LossDivergence()
    found = feed(detector, losses[:100], grad_steps=np.arange(100), grad_norms=grads[:100])
    reported = next(d for d in found if d.severity != "info")
    assert detector.undone_by(reported) is None, "still up at the report: nothing to say yet"
    feed(detector, losses[100:], start=100, grad_steps=np.arange(100, 250), grad_norms=grads[100:])
    note = detector.undone_by(reported)
    assert note is not None and note.startswith(f"loss_divergence at step {reported.step} was a transient")
    line = 2 * reported.evidence["start_loss"]
    blocks = zip(detector.blocks.steps, detector.blocks.values)
    came_back = next(s for s, v in blocks if s > reported.step and v < line)
    assert f"came back under 2x its start ({line:.4g}) at step {came_back}" in note
    assert re.search(r"ended the fit at 0\.[89]\d*\.$", note), note


def test_a_climb_that_is_still_up_at_the_end_gets_no_note() -> None:
    # Back under the line for a while, then up again: the run ended diverged.
    losses, grads = _climb_and_back(0.9, 0.9)
    losses[-40:] *= 20
    detector = LossDivergence()
    found = feed(detector, losses, grad_steps=np.arange(250), grad_norms=grads)
    assert [detector.undone_by(d) for d in found if d.severity != "info"][:1] == [None]
    # Down, but not under twice the start: still a divergence by the rule.
    losses, grads = _climb_and_back(2.5, 2.5)
    detector = LossDivergence()
    found = feed(detector, losses, grad_steps=np.arange(250), grad_norms=grads)
    assert found and all(detector.undone_by(d) is None for d in found)


def test_a_blow_up_or_a_fall_gets_no_transient_note() -> None:
    detector = LossDivergence()
    falling = feed(detector, -np.geomspace(1, 1e4, 200))
    assert falling and detector.undone_by(falling[0]) is None
