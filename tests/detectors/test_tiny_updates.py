import numpy as np

from lightning_lossguard.detectors import TinyUpdates
from lightning_lossguard.detectors.stats import weighted_median
from lightning_lossguard.detectors.tiny_updates import (
    FREEZE_IF_FIXED,
    GIVE_IF_MEANT,
    GIVE_TO_AN_OPTIMIZER,
    LEFT_OUT,
    ROUNDED_AWAY,
    UNUSED,
    WEIGHTS_IN_FLOAT32,
    rate_text,
)
from lightning_lossguard.diagnosis import Severity


def test_tiny_updates_with_a_flat_loss() -> None:
    detector = TinyUpdates()
    found = []
    for step in (9, 19, 29):
        found += detector.update(
            step, np.array([1e-9, 3e-9, -1.0]), loss_level=1.39, learning_rate=1e-8, early_loss=1.4
        )
    assert found and found[0].evidence["update_ratio"] < 1e-5
    assert "learning rate 1e-08" in found[0].message
    assert found[0].remedies[0].startswith("Raise the learning rate")


def test_parameter_groups_at_different_rates_are_quoted_as_their_span() -> None:
    detector = TinyUpdates()
    found = []
    for step in (9, 19, 29):
        found += detector.update(
            step, np.array([1e-9, 3e-9]), loss_level=1.39, learning_rate=1e-8, early_loss=1.4, slowest_lr=3.1e-10
        )
    assert found and "at learning rates 3.1e-10 to 1e-08 (by parameter group)" in found[0].message
    assert rate_text(1e-3, 1e-3) == rate_text(1e-3) == " at learning rate 0.001"  # one rate: quoted alone
    assert rate_text(float("nan")) == ""


def test_healthy_update_ratios_stay_quiet() -> None:
    detector = TinyUpdates()
    for step in range(10):
        assert detector.update(step, np.array([1e-3, 5e-3]), loss_level=1.0, early_loss=1.0) == []


def test_small_updates_of_a_converged_or_improving_run_stay_quiet() -> None:
    converged, improving = TinyUpdates(), TinyUpdates()
    for step, loss in zip((10, 20, 30), (0.01, 0.01, 0.01)):
        assert converged.update(step, np.array([1e-7]), loss_level=loss, early_loss=2.0) == []
    for step, loss in zip((10, 20, 30), (2.0, 1.8, 1.6)):
        assert improving.update(step, np.array([1e-7]), loss_level=loss, early_loss=2.0) == []


def test_steps_still_growing_behind_a_zero_initialised_head_wait_until_they_stop() -> None:
    # A normalizer-free CNN with a zero-initialised head under SGD warm-up: no gradient reaches the body until the
    # head has weights, so the body's steps read 8e-9, 8e-7, 5e-6 of its size over the first three samples while the
    # loss sits at ln 10; per unit of learning rate they grew 53x and 7x. Not judged until the growth slows.
    detector = TinyUpdates()
    samples = [(9, 8.2e-9, 0.055, 2.301), (19, 8.0e-7, 0.1, 2.291), (29, 5.3e-6, 0.0992, 2.266)]
    for step, ratio, lr, loss in samples:
        assert detector.update(step, np.array([ratio]), loss_level=loss, learning_rate=lr, early_loss=2.304) == []
    # Steps that stop growing (1.1x) and stay tiny with a flat loss are judged as before.
    found = []
    for step in (53, 77):
        found += detector.update(step, np.array([6e-6]), loss_level=2.26, learning_rate=0.099, early_loss=2.304)
    assert found[0].step == 53 and found[0].evidence["since_step"] == 19


def test_a_tiny_rate_under_warm_up_is_not_taken_for_a_gradient_still_arriving() -> None:
    # The rate grows 10x per sample (warm-up from 1e-10): the steps grow with it, not per unit of rate.
    detector = TinyUpdates()
    found = []
    for step, lr in zip((9, 19, 29), (1e-10, 1e-9, 1e-8)):
        found += detector.update(step, np.array([lr / 10]), loss_level=2.3, learning_rate=lr, early_loss=2.3)
    assert [d.step for d in found] == [29]


def test_a_tiny_rate_is_seen_past_zero_initialised_biases() -> None:
    # Matrix factorisation at lr 1e-8: the two embedding tables move by ~1e-8 of their size, the two bias tables,
    # initialised to zero, are still the size of their own first updates (ratio ~1). A plain median over the four
    # tensors reads a healthy ~0.5; counting every weight once, the 8,000 table weights say "tiny".
    ratios = np.array([1e-8, 2e-8, 0.9, 1.1])
    sizes = np.array([3200, 4800, 200, 300])
    detector, unweighted = TinyUpdates(), TinyUpdates()
    found = []
    for step, loss in zip((9, 19, 29), (1.49, 1.56, 1.60)):
        found += detector.update(step, ratios, loss_level=loss, learning_rate=1e-8, early_loss=1.5, sizes=sizes)
        assert unweighted.update(step, ratios, loss_level=loss, learning_rate=1e-8, early_loss=1.5) == []
    assert found and found[0].evidence["update_ratio"] < 1e-5
    assert found[0].remedies[0].startswith("Raise the learning rate")


def test_healthy_updates_with_zero_initialised_biases_stay_quiet() -> None:
    # The same model at a healthy rate: tables ~1e-3, biases ~1 (still near zero), the loss flat or not.
    detector = TinyUpdates()
    ratios = np.array([1e-3, 2e-3, 0.9, 1.1])
    sizes = np.array([3200, 4800, 200, 300])
    for step in range(9, 200, 10):
        assert detector.update(step, ratios, loss_level=1.5, early_loss=1.5, sizes=sizes) == []
    # Small biases dominating the tensor count but not the weights: a tiny bias update does not decide either.
    detector, ratios, sizes = TinyUpdates(), np.array([1e-9, 1e-9, 1e-9, 3e-3]), np.array([8, 8, 8, 4096])
    for step in range(9, 200, 10):
        assert detector.update(step, ratios, loss_level=1.5, early_loss=1.5, sizes=sizes) == []


def test_weighted_median_counts_each_value_its_weight() -> None:
    assert weighted_median(np.array([5.0, 1.0, 3.0]), np.array([1.0, 1.0, 1.0])) == 3.0
    assert weighted_median(np.array([1e-8, 1.0]), np.array([100.0, 1.0])) == 1e-8
    assert weighted_median(np.array([np.nan, 2.0]), np.array([100.0, 1.0])) == 2.0
    assert np.isnan(weighted_median(np.array([1.0]), np.array([0.0])))


def test_an_optimizer_that_stops_stepping_at_convergence_stays_quiet() -> None:
    # Full-batch LBFGS fitting a curve: the loss fell from 0.5 to 2e-5, the learning rate is still 0.5, and the
    # optimizer returns without a step once its gradient or change tolerance is met: update ratio exactly 0.
    detector = TinyUpdates()
    for step, loss in zip((150, 190, 230, 270), (2.1e-5, 2.0e-5, 2.0e-5, 2.0e-5)):
        assert detector.update(step, np.array([0.0, 0.0]), loss_level=loss, learning_rate=0.5, early_loss=0.5) == []


def test_a_learning_rate_decayed_away_is_reported_even_after_the_loss_fell() -> None:
    # A StepLR meant per epoch, stepped per batch: 1e-3 at the first sample, 1e-13 later; the weights stop moving
    # (float32 rounds the steps away) after the loss had fallen early on.
    decayed, unknown = TinyUpdates(), TinyUpdates()
    found = []
    for step, lr, ratio in zip((10, 100, 200, 300), (1e-3, 1e-13, 1e-13, 1e-13), (1e-3, 0.0, 0.0, 0.0)):
        found += decayed.update(step, np.array([ratio]), loss_level=0.4, learning_rate=lr, early_loss=2.3)
        unknown.update(step, np.array([ratio]), loss_level=0.4, early_loss=2.3)  # no learning rate known
    assert [d.step for d in found] == [300] and "learning rate 1e-13, 1e+10x below the 0.001" in found[0].message
    assert "a schedule decayed the learning rate away" in found[0].message
    assert found[0].remedies[0].startswith("Check the learning-rate schedule")
    assert not any(remedy.startswith("Raise the learning rate") for remedy in found[0].remedies)
    [without_rate] = unknown.update(400, np.array([0.0]), loss_level=0.4, early_loss=2.3)
    assert without_rate.remedies[0].startswith("Raise the learning rate")  # nothing says a schedule did it


def test_a_learning_rate_that_was_always_tiny_is_not_called_decayed() -> None:
    detector, found = TinyUpdates(), []
    for step in (9, 19, 29):
        found += detector.update(step, np.array([1e-9]), loss_level=1.39, learning_rate=1e-8, early_loss=1.4)
    assert found and "schedule" not in found[0].message and found[0].remedies[0].startswith("Raise the learning rate")


def test_steps_far_too_small_under_a_loss_near_zero_that_changes_sign_are_still_reported() -> None:
    # SimSiam at lr 5e-8: a negative-cosine loss wanders from +0.003 to -0.008; it did not converge.
    detector = TinyUpdates()
    found = []
    for step, loss in zip((9, 19, 29), (0.0007, -0.0075, -0.0075)):
        found += detector.update(step, np.array([5e-9]), loss_level=loss, learning_rate=5e-8, early_loss=0.003)
    assert [d.step for d in found] == [29]


ENCODER = {
    "encoder.0.weight": (1280, True, True),
    "encoder.0.bias": (64, True, True),
    "encoder.2.weight": (4096, True, True),
}


def test_parameters_left_out_of_the_optimizer_are_a_warning_after_min_samples_reports_unmoved() -> None:
    detector = TinyUpdates()
    assert detector.update_unstepped(10, ENCODER, 6000) == []
    assert detector.update_unstepped(20, ENCODER, 6000) == []
    (found,) = detector.update_unstepped(30, ENCODER, 6000)
    assert (found.code, found.severity, found.step) == ("tiny_updates", Severity.WARNING, 30)
    assert found.subject == LEFT_OUT
    assert "3 parameter tensors (5,440 elements, 91% of the model: encoder.0.weight" in found.message
    assert "no optimizer holds them" in found.message and "3 reports in a row, to step 30" in found.message
    assert "trained parameters read their output" in found.message
    assert found.remedies == [GIVE_TO_AN_OPTIMIZER, FREEZE_IF_FIXED]
    assert found.evidence == {"unstepped_tensors": 3, "unstepped_elements": 5440, "unstepped_share": 5440 / 6000}
    assert detector.update_unstepped(40, ENCODER, 6000) == []  # told once


def test_parameters_no_trained_one_reads_in_training_mode_are_an_info_that_puts_freezing_first() -> None:
    detector = TinyUpdates()
    teacher = {"teacher.weight": (50, False, True), "teacher.bias": (5, False, True)}
    for step in (10, 20):
        assert detector.update_unstepped(step, {**teacher, "encoder.weight": (40, True, True)}, 200) == []
    found = detector.update_unstepped(30, {**teacher, "encoder.weight": (40, True, True)}, 200)
    assert [(d.severity, d.subject) for d in found] == [(Severity.WARNING, LEFT_OUT), (Severity.INFO, UNUSED)]
    assert "1 parameter tensor (40 elements, 20% of the model: encoder.weight)" in found[0].message
    assert found[1].message.startswith("2 parameter tensors (55 elements, 28% of the model: teacher.weight, teacher")
    assert "No trained parameter reads their output, or their modules are kept in eval mode" in found[1].message
    assert found[1].remedies == [FREEZE_IF_FIXED, GIVE_IF_MEANT]


def test_a_parameter_that_leaves_the_unmoved_set_starts_its_count_over() -> None:
    detector = TinyUpdates()
    detector.update_unstepped(10, {"w": (5, True, True)}, 0)
    detector.update_unstepped(20, {"w": (5, True, True)}, 0)
    assert detector.update_unstepped(30, {}, 0) == []  # moved, or got no gradient at this report
    assert detector.update_unstepped(40, {"w": (5, True, True)}, 0) == []
    assert detector.update_unstepped(50, {"w": (5, True, True)}, 0) == []
    (found,) = detector.update_unstepped(60, {"w": (5, True, True)}, 0)
    assert found.message.startswith("1 parameter tensor (5 elements: w) got gradients")  # model size unknown


def test_more_than_three_unstepped_parameters_are_counted_not_all_listed() -> None:
    detector = TinyUpdates(TinyUpdates.Thresholds(min_samples=1))
    (found,) = detector.update_unstepped(7, {f"layer{i}.weight": (1, True, True) for i in range(5)}, 10)
    assert "layer0.weight, layer1.weight, layer2.weight and 2 more" in found.message


def test_parameters_whose_readers_are_unknown_are_an_info_that_says_the_graph_was_not_read() -> None:
    detector = TinyUpdates(TinyUpdates.Thresholds(min_samples=1))
    (found,) = detector.update_unstepped(
        5, {"encoder.weight": (40, None, True), "teacher.weight": (10, False, True)}, 100
    )
    assert (found.severity, found.subject) == (Severity.INFO, UNUSED)
    assert "could not be read from the graph (a compiled step" in found.message
    assert found.evidence["unstepped_tensors"] == 2


def test_parameters_read_by_trained_ones_but_kept_in_eval_mode_are_an_info() -> None:
    detector = TinyUpdates(TinyUpdates.Thresholds(min_samples=1))
    (found,) = detector.update_unstepped(
        5, {"backbone.weight": (40, True, False), "probe.weight": (8, None, False)}, 60
    )
    assert (found.severity, found.subject) == (Severity.INFO, UNUSED)
    assert "or their modules are kept in eval mode" in found.message  # eval mode says it was fixed on purpose


def _rounded_run(shares: list[float], ratio: float = 2.4e-5, losses: tuple[float, ...] = (54.0, 53.75, 53.75)) -> list:
    # A causal Transformer in bfloat16 at lr 1e-5: the median change is not tiny (the weights that move jump by a
    # whole spacing), but most never move.
    detector = TinyUpdates()
    found = []
    sizes = np.array([3072, 64, 16384])
    for step, share, loss in zip((35, 67, 99), shares, losses):
        unmoved = np.array([share, 1.0, share])
        found += detector.update(
            step,
            np.array([ratio, 0.0, ratio]),
            loss_level=loss,
            learning_rate=1e-5,
            early_loss=54.25,
            sizes=sizes,
            unmoved=unmoved,
            weight_dtype="bfloat16",
        )
    return found


def test_16_bit_weights_that_most_steps_leave_unchanged_are_updates_rounding_away() -> None:
    found = _rounded_run([0.96, 0.97, 0.97])
    assert len(found) == 1 and found[0].subject == ROUNDED_AWAY and found[0].severity == Severity.WARNING
    assert "leaves 96% to 97% of the weights exactly as they were" in found[0].message
    assert "stored in bfloat16" in found[0].message
    assert found[0].remedies[0] == WEIGHTS_IN_FLOAT32
    # Every weight counts once: the small all-unchanged norm weight moves the share only a little.
    assert found[0].evidence["unchanged_share"] == (0.96 * (3072 + 16384) + 64) / (3072 + 64 + 16384)


def test_a_rate_that_would_starve_float32_too_is_raised_first() -> None:
    found = _rounded_run([0.99, 0.99, 0.99], ratio=0.0)
    assert found and found[0].remedies[0].startswith("Raise the learning rate")
    assert found[0].remedies[1] == WEIGHTS_IN_FLOAT32
    assert "leaves 99% of the weights" in found[0].message and "(healthy training" in found[0].message


def test_healthy_bfloat16_training_and_a_learning_one_stay_quiet() -> None:
    # Measured on the same Transformer at 3e-3: 60-72% of the weights unchanged a step while it learned.
    assert _rounded_run([0.70, 0.72, 0.71]) == []
    # Most weights unchanged but the loss still falls: it learns.
    assert _rounded_run([0.95, 0.96, 0.96], losses=(54.0, 50.0, 46.0)) == []
    # One sample under the share breaks the run of samples.
    assert _rounded_run([0.96, 0.85, 0.97]) == []


def test_samples_from_a_checkpoint_without_the_unchanged_share_still_load_and_judge() -> None:
    detector = TinyUpdates()
    detector.load_state_dict({"samples": [[9.0, 1e-9, 1.39], [19.0, 1e-9, 1.39]]})
    found = detector.update(29, np.array([1e-9]), loss_level=1.39, learning_rate=1e-8, early_loss=1.4)
    assert found and found[0].subject == ""
