import numpy as np

from lightning_lossguard import Severity
from lightning_lossguard.detectors import DeadGradients

NAMES = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
LAYERS = ["net.0", "net.0", "net.2", "net.2"]
DEPTH = [0, 0, 1, 1]
SIZES = [512, 32, 32, 1]


def run(rows: np.ndarray, **kwargs: object) -> list:
    return DeadGradients().update(list(range(len(rows))), rows, NAMES, SIZES, LAYERS, DEPTH, **kwargs)


def test_hidden_layer_with_zero_gradient_is_named_with_the_share() -> None:
    rows = np.tile([0.0, 0.0, 0.5, 0.1], (30, 1))
    [found] = run(rows)
    assert found.subject == "net.0" and found.evidence["dead_params"] == 2
    assert found.evidence["output_layer_dead"] == 0.0
    assert "never activate" in found.message and "initialisation" in found.remedies[0]


def test_no_gradient_reaching_the_output_points_at_the_loss() -> None:
    rows = np.zeros((30, 4))
    [found] = run(rows)
    assert found.evidence["output_layer_dead"] == 1.0
    assert "No gradient reaches the model" in found.message
    assert found.remedies[0].startswith("Smooth the loss")


def test_an_output_layer_cleared_while_the_layers_before_it_learn_is_not_called_a_flat_loss() -> None:
    # DINO-style code that zeroes the last layer's gradient for a while: the hidden layer still gets its own.
    rows = np.tile([0.4, 0.1, 0.0, 0.0], (30, 1))
    [found] = run(rows)
    assert found.subject == "net.2" and found.evidence["flowing_params"] == 2
    assert "No gradient reaches the model" not in found.message
    assert "while 2 other parameters do" in found.message
    assert "p.grad = None" in found.remedies[0]
    # The hidden layer's gradients stop too: nothing reaches the model after all.
    rows[15:, :2] = 0.0
    [flat] = DeadGradients().update(list(range(45)), np.vstack([rows, np.zeros((15, 4))]), NAMES, SIZES, LAYERS, DEPTH)
    assert "No gradient reaches the model" in flat.message


def test_short_zero_streaks_and_parameters_without_gradient_are_not_dead() -> None:
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (60, 1))
    rows[::20, 0] = 0.0  # an occasional exact zero
    rows[:, 1] = -1.0  # never had a gradient (unused/frozen this phase)
    assert run(rows[:40]) == []
    # Not dead, whatever the run's length: over 50 steps the parameter without any gradient is only an info.
    assert [d.severity for d in run(rows)] == [Severity.INFO]


def test_parameters_that_never_get_a_gradient_are_named_once_as_cut_off_from_the_loss() -> None:
    # A backbone whose output is detached (or run under torch.no_grad() without being frozen): grad is None on
    # every step while the head learns.
    rows = np.tile([-1.0, -1.0, 0.5, 0.1], (30, 1))
    detector = DeadGradients()
    assert detector.update(list(range(30)), rows, NAMES, SIZES, LAYERS, DEPTH) == []  # steps 0-29: too soon
    [found] = detector.update(list(range(30, 60)), rows, NAMES, SIZES, LAYERS, DEPTH)
    assert found.severity == Severity.INFO and found.subject == "net.0"
    assert found.evidence["absent_params"] == 2 and found.evidence["absent_steps"] == 60
    assert found.evidence["absent_weight_share"] == (512 + 32) / sum(SIZES)
    assert "from step 0 to 59" in found.message and "net.0.weight, net.0.bias" in found.message
    assert ".detach()" in found.remedies[0] and "requires_grad_(False)" in found.remedies[1]
    assert detector.update(list(range(60, 90)), rows, NAMES, SIZES, LAYERS, DEPTH) == []  # once
    # Sampled on a stride: the steps spanned count, not the rows measured.
    assert [d.code for d in DeadGradients().update(list(range(0, 60, 6)), rows[:10], NAMES, SIZES, LAYERS, DEPTH)] == [
        "dead_gradients"
    ]


def test_a_parameter_with_a_gradient_on_one_step_pruned_weights_and_an_all_absent_model_are_not_cut_off() -> None:
    rows = np.tile([-1.0, -1.0, 0.5, 0.1], (60, 1))
    rows[45, 0] = rows[45, 1] = 0.0  # a zero gradient is a gradient: the parameter is on the graph
    assert run(rows) == []
    rows[45, :2] = -1.0
    assert run(rows, pruned=[True, True, False, False]) == []
    assert run(np.full((60, 4), -1.0)) == []  # nothing had a gradient (every loss exactly zero): not this rule's


def test_the_cut_off_rule_starts_after_a_state_saved_before_it() -> None:
    rows = np.tile([-1.0, -1.0, 0.5, 0.1], (60, 1))
    detector = DeadGradients()
    state = detector.state_dict()
    for key in ("had_any", "any_since", "absent_told"):
        state.pop(key)
    old = DeadGradients()
    old.load_state_dict({**state, "first_step": 0, "rows_seen": 500})
    assert old.update(list(range(500, 530)), rows[:30], NAMES, SIZES, LAYERS, DEPTH) == []  # counted from step 500
    [found] = old.update(list(range(530, 550)), rows[:20], NAMES, SIZES, LAYERS, DEPTH)
    assert "from step 500 to 549" in found.message


def test_a_bias_whose_gradient_cancels_beside_a_live_weight_is_not_dead() -> None:
    # SN-GAN's hinge loss at equilibrium: every sample inside the margin on both sides gives the discriminator's output
    # bias -1 + 1 = 0 exactly, step after step, while its weight keeps a gradient. It had one before (step 0-9).
    rows = np.tile([0.4, 0.1, 0.5, 0.2], (40, 1))
    rows[10:, 3] = 0.0
    assert run(rows) == []
    # A dead unit zeroes the weight's gradient too: the layer is named.
    rows[10:, 2] = 0.0
    [found] = run(rows)
    assert found.subject == "net.2" and found.evidence["dead_params"] == 2


def test_dead_units_sampled_on_report_steps() -> None:
    detector = DeadGradients()
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (10, 1))
    share = np.array([0.9, -1.0, 0.0, -1.0])
    units = [32, 0, 1, 0]
    assert detector.update(list(range(10)), rows, NAMES, SIZES, LAYERS, DEPTH, share, units) == []
    [found] = detector.update(list(range(10, 20)), rows, NAMES, SIZES, LAYERS, DEPTH, share, units)
    assert found.evidence["dead_unit_share"] == 0.9 and found.subject == "net.0"


def test_a_few_dead_units_in_a_small_layer_are_tolerated() -> None:
    detector = DeadGradients()
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (10, 1))
    for start in (0, 10, 20):
        out = detector.update(
            list(range(start, start + 10)),
            rows,
            NAMES,
            SIZES,
            LAYERS,
            DEPTH,
            np.array([0.5, -1, 0.0, -1]),
            [32, 0, 1, 0],
        )
        assert out == []


def test_the_gradient_stops_at_the_deepest_dead_layer() -> None:
    names = ["a.weight", "b.weight", "c.weight", "c.bias"]
    layers, depth = ["a", "b", "c", "c"], [0, 1, 2, 2]
    rows = np.tile([0.0, 0.0, 0.5, 0.1], (30, 1))  # a and b dead, the output layer c alive
    [found] = DeadGradients().update(list(range(30)), rows, names, [64, 64, 8, 1], layers, depth)
    assert found.subject == "b"
    assert "stops at b" in found.message and "(a) get nothing either" in found.message


def test_a_dead_layer_on_another_gradient_path_is_not_said_to_starve_behind_it() -> None:
    # Actor and critic heads: the critic's hidden layer dies, the actor (run first, another path) gets nothing of its
    # own accord. Only the critic's first layer is upstream of the dead one.
    names = ["actor.0.weight", "critic.0.weight", "critic.2.weight", "critic.4.weight"]
    layers, depth = ["actor.0", "critic.0", "critic.2", "critic.4"], [0, 1, 2, 3]
    upstream = [0b0000, 0b0000, 0b0010, 0b0110]  # critic.0 -> critic.2 -> critic.4; actor.0 alone
    rows = np.tile([0.0, 0.0, 0.0, 0.5], (30, 1))
    [found] = DeadGradients().update(list(range(30)), rows, names, [64] * 4, layers, depth, upstream=upstream)
    assert "stops at critic.2" in found.message
    assert "(critic.0) get nothing either" in found.message
    assert "off its gradient path, actor.0 get none either" in found.message


def test_vectorized_streaks_match_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        count, width = int(rng.integers(1, 30)), 5
        rows = rng.choice([0.0, -1.0, 0.5], size=(count, width), p=[0.5, 0.2, 0.3])
        detector = DeadGradients()
        detector.streak = [int(v) for v in rng.integers(0, 3, width)]
        detector.streak_start, detector.unit_streak = [7] * width, [0] * width
        streak, start = list(detector.streak), list(detector.streak_start)
        for s, row in enumerate(rows):  # the obviously-correct reference
            for i, value in enumerate(row):
                if value == -1.0:
                    continue
                if value == 0.0:
                    start[i] = 100 + s if streak[i] == 0 else start[i]
                    streak[i] += 1
                else:
                    streak[i] = 0
        detector.update(list(range(100, 100 + count)), rows, ["p"] * width, [1] * width, ["l"] * width, [0] * width)
        assert detector.streak == streak
        assert [b for a, b in zip(streak, detector.streak_start) if a] == [b for a, b in zip(streak, start) if a]


def test_output_units_silent_under_a_fitted_loss_cleared_its_margin() -> None:
    # A hinge loss: once a class's samples clear their margins its output row gets exactly zero gradient. With the loss
    # at 0.5% of its first level that is a fitted classifier; the same silence with the loss as high as at first is not.
    share = np.array([0.3, -1.0, 0.75, -1.0])  # net.2 is the output layer (8 classes)
    units = [32, 0, 8, 0]
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (10, 1))

    def judge(loss_jump: float) -> list:
        detector = DeadGradients()
        found = []
        for start in (0, 10):
            steps = list(range(start, start + 10))
            found = detector.update(steps, rows, NAMES, SIZES, LAYERS, DEPTH, share, units, loss_jump=loss_jump)
        return found

    assert judge(0.005) == []
    [found] = judge(1.0)
    assert found.subject == "net.2" and found.evidence["dead_unit_share"] == 0.75


def test_a_whole_model_silent_under_a_fitted_loss_is_converged_not_cut_off() -> None:
    rows = np.zeros((30, 4))  # every batch's loss exactly zero: a hinge with every margin met
    assert run(rows, loss_jump=0.0) == []
    [found] = run(rows, loss_jump=0.9)
    assert "No gradient reaches the model" in found.message
    [found] = run(rows)  # the level not known yet (NaN): judged as before
    assert "No gradient reaches the model" in found.message
    [found] = run(rows, loss_jump=-0.5)  # a loss that fell through zero (negated) has no floor it could have reached
    assert "No gradient reaches the model" in found.message


def test_a_dead_hidden_layer_is_named_even_when_the_loss_is_fitted() -> None:
    rows = np.tile([0.0, 0.0, 0.5, 0.1], (30, 1))
    [found] = run(rows, loss_jump=0.01)
    assert found.subject == "net.0"


def test_a_layer_held_without_gradient_through_the_first_epoch_is_not_cut_off_in_a_run_of_known_length() -> None:
    # SwAV and DINO set the last layer's grad to None through the first epoch (60 of 200 planned steps here).
    rows = np.tile([0.4, 0.1, -1.0, -1.0], (60, 1))
    later = np.tile([0.4, 0.1, 0.5, 0.1], (140, 1))
    detector = DeadGradients()
    assert detector.update(list(range(60)), rows, NAMES, SIZES, LAYERS, DEPTH, planned_steps=200) == []
    assert detector.update(list(range(60, 200)), later, NAMES, SIZES, LAYERS, DEPTH, planned_steps=200) == []
    # Held through more than half of the run, or in a run of unknown length past absent_steps: said.
    [found] = DeadGradients().update(
        list(range(101)), np.vstack([rows, rows[:41]]), NAMES, SIZES, LAYERS, DEPTH, planned_steps=200
    )
    assert "on any of the 101 measured steps from step 0 to 100" in found.message
    assert found.evidence["measured_steps"] == 101 and "router" in found.remedies[2]
    assert [d.severity for d in DeadGradients().update(list(range(60)), rows, NAMES, SIZES, LAYERS, DEPTH)] == [
        Severity.INFO
    ]


def test_parameters_cut_off_are_named_even_when_the_fitted_outputs_are_not() -> None:
    # A hinge loss fitted to zero gradient at the head (not dead: the margins are met) beside a detached backbone.
    rows = np.tile([-1.0, -1.0, 0.0, 0.0], (60, 1))
    [found] = run(rows, loss_jump=0.05)
    assert found.evidence["absent_params"] == 2 and found.severity == Severity.INFO


def _unit_samples(first: float, later: float, loss_jump: float, samples: int = 3) -> list:
    """A hidden layer (net.0, 32 units) with ``first`` of its units dead at the run's first sample and ``later`` at the
    next ones; every parameter keeps a non-zero gradient norm (the live units carry it)."""
    units = [32, 0, 8, 0]
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (10, 1))
    detector = DeadGradients()
    found: list = []
    for sample in range(samples):
        share = np.array([first if sample == 0 else later, -1.0, 0.0, -1.0])
        steps = list(range(10 * sample, 10 * sample + 10))
        first_share = share if sample == 0 else None
        found = detector.update(
            steps, rows, NAMES, SIZES, LAYERS, DEPTH, share, units, loss_jump=loss_jump, first_share=first_share
        )
    return found


def test_hidden_units_dead_from_the_start_under_a_fitted_loss_are_an_info_on_spare_capacity() -> None:
    # An Instant-NGP-style field: near-zero hash features leave most of a ReLU layer off from the first batch, and
    # the loss falls to 7.5% of its first level through the live units.
    [found] = _unit_samples(first=0.58, later=0.72, loss_jump=0.075)
    assert found.severity == Severity.INFO and found.subject == "net.0"
    assert found.evidence["dead_unit_share_at_start"] == 0.58 and found.evidence["loss_vs_first"] == 0.075
    assert "58% dead at the first sample" in found.message and "7.5% of its first batches' level" in found.message
    assert "capacity, not learning" in found.message and "LeakyReLU" in found.remedies[0]


def test_dead_hidden_units_stay_a_warning_where_the_loss_is_not_fitted_or_they_died_or_all_of_them_did() -> None:
    [high] = _unit_samples(first=0.58, later=0.72, loss_jump=0.5)  # the loss has not come down: they may matter
    assert high.severity == Severity.WARNING and "never activate" in high.message
    [unknown] = _unit_samples(first=0.58, later=0.72, loss_jump=float("nan"))
    assert unknown.severity == Severity.WARNING
    [died] = _unit_samples(first=0.1, later=0.8, loss_jump=0.05)  # alive at the start, knocked out in training
    assert died.severity == Severity.WARNING and "learning rate far too high" in died.message
    [whole] = _unit_samples(first=0.6, later=1.0, loss_jump=0.05)  # no unit of the layer lives: the gradient stops
    assert whole.severity == Severity.WARNING
    [negated] = _unit_samples(first=0.58, later=0.72, loss_jump=-0.5)  # a loss through zero reached no floor
    assert negated.severity == Severity.WARNING


def test_spare_units_in_one_layer_do_not_hide_units_knocked_out_in_another() -> None:
    # net.2 (8 units) dead from the start beside net.0 (32 units) alive at first and knocked out later: a warning.
    units = [32, 0, 8, 0]
    rows = np.tile([0.3, 0.1, 0.5, 0.1], (10, 1))
    outputs = [4]  # a head beyond both (not watched here), so net.2 is a hidden layer too
    names, sizes, layers, depth = [*NAMES, "head.weight"], [*SIZES, 8], [*LAYERS, "head"], [*DEPTH, 2]
    rows = np.hstack([rows, np.full((10, 1), 0.2)])
    detector = DeadGradients()
    found: list = []
    for sample in range(3):
        share = np.array([0.1 if sample == 0 else 0.8, -1.0, 0.75, -1.0, -1.0])
        found = detector.update(
            list(range(10 * sample, 10 * sample + 10)),
            rows,
            names,
            sizes,
            layers,
            depth,
            share,
            [*units, 0],
            outputs=outputs,
            loss_jump=0.05,
            first_share=share if sample == 0 else None,
        )
    [warned] = found
    assert warned.severity == Severity.WARNING
