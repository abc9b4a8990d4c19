import numpy as np

from lightning_lossguard.detectors import VanishingGradients

LAYERS = [f"net.{i}" for i in range(6)]
CHAIN = [(0, 5, 6)]  # one gradient path from net.0 to net.5 through 6 weight layers


def test_depth_ratio_names_the_first_layer() -> None:
    levels = np.array([1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 1.0])
    rows = np.tile(levels, (30, 1)) * np.random.default_rng(0).uniform(0.5, 2, (30, 6))
    [found] = VanishingGradients().update(list(range(30)), rows, LAYERS, CHAIN, rows.max(1))
    assert found.subject == "net.0" and found.severity == "warning"
    assert found.evidence["ratio"] < 1e-3
    assert found.evidence["weight_layers"] == 6
    assert "ReLU" in found.remedies[0]


def test_healthy_depth_profile_stays_quiet() -> None:
    rows = np.tile([0.3, 0.5, 1.0, 0.8, 2.0, 1.0], (100, 1))
    assert VanishingGradients().update(list(range(100)), rows, LAYERS, CHAIN, rows.max(1)) == []


def test_only_the_ends_of_one_gradient_path_are_compared() -> None:
    # An actor (net.0-net.2) and a critic (net.3-net.5) trained side by side: the actor's first layer is tiny
    # next to the critic's last, but they are not on one path; along each path the ratio is healthy.
    rows = np.tile([0.016, 0.02, 0.05, 50.0, 90.0, 147.0], (50, 1))
    paths = [(0, 2, 3), (3, 5, 3)]
    assert VanishingGradients().update(list(range(50)), rows, LAYERS, paths, rows.max(1)) == []
    assert VanishingGradients().update(list(range(50)), rows, LAYERS, [(0, 5, 6)], rows.max(1)) != []


def test_shallow_paths_are_not_judged_by_depth() -> None:
    rows = np.tile([1e-9, 1.0], (50, 1))
    assert VanishingGradients().update(list(range(50)), rows, ["a", "b"], [(0, 1, 2)], rows.max(1)) == []


def test_collapse_while_the_loss_is_flat() -> None:
    detector = VanishingGradients()
    n = 120
    norms = np.concatenate([np.ones(50), np.full(n - 50, 1e-6)])
    rows = np.tile(norms[:, None], (1, 2))
    [found] = detector.update(list(range(n)), rows, ["a", "b"], [(0, 1, 2)], norms, np.full(n, 2.3))
    assert "collapsed" in found.message


OUT = ["net.0", "net.1", "net.2"]  # net.2 is nearest the loss
FLAT = np.concatenate([[3.0], np.full(119, 1.65)])


def _collapsing(output_early: float, output_late: float, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Rows of three layers: the two below the output fall from 1 to 1e-7 at step 50, the output layer from
    ``output_early`` to ``output_late``; and the global norm over them. The first batch's loss is above the rest (a
    noisy batch of one), so the collapse is measured from the first window, not from before any update."""
    below = np.concatenate([np.ones(50), np.full(n - 50, 1e-7)])
    output = np.concatenate([np.full(50, output_early), np.full(n - 50, output_late)])
    rows = np.stack([below, below, output], axis=1)
    return rows, np.sqrt((rows**2).sum(1))


# batch1_heavy_tail_sgd with exp() on its regression head (tuning corpus): the head drove its input so low that
# exp(z) ~ 0 and hands MSE no gradient; every layer fell 1e7-fold and more, the head too, while the loss stayed at
# 1.65. It was told to use ReLU in deep stacks and add normalisation layers: remedies for a gradient lost on its way
# down, which this was not.
def test_a_collapse_that_reached_the_layer_nearest_the_loss_started_at_the_output() -> None:
    rows, norms = _collapsing(output_early=0.5, output_late=4e-7)
    [found] = VanishingGradients().update(list(range(120)), rows, OUT, [(0, 2, 3)], norms, FLAT, output_layers=[2])
    assert "lost at the output" in found.message and "net.2, fell from 0.5 to 4e-07" in found.message
    assert found.subject == "net.2" and found.severity == "warning"
    assert found.evidence["early_output_norm"] == 0.5 and found.evidence["output_norm"] == 4e-7
    assert "output activation" in found.remedies[0]


def test_an_output_layer_without_any_gradient_lately_fell_to_zero() -> None:
    rows, norms = _collapsing(output_early=0.5, output_late=0.0)
    [found] = VanishingGradients().update(list(range(120)), rows, OUT, [(0, 2, 3)], norms, FLAT, output_layers=[2])
    assert "net.2, fell from 0.5 to 0 too" in found.message


def test_a_collapse_the_output_layer_did_not_share_keeps_the_stack_remedies() -> None:
    # The output layer's gradient was small from the start and stays so: the loss still hands gradient back, and
    # it is lost below; the same collapse told without the output layers known reads the same.
    rows, norms = _collapsing(output_early=1e-5, output_late=1e-5)
    for output_layers in ([2], []):
        [found] = VanishingGradients().update(
            list(range(120)), rows, OUT, [(0, 2, 3)], norms, FLAT, output_layers=output_layers
        )
        assert "collapsed" in found.message and "at the output" not in found.message
        assert "ReLU" in found.remedies[0]


def test_a_norm_that_fell_to_exactly_zero_quotes_no_factor() -> None:
    norms = np.concatenate([[0.123], np.zeros(119)])
    losses = np.concatenate([[0.95], np.full(119, 0.98)])
    rows = np.tile(norms[:, None], (1, 2))
    [found] = VanishingGradients().update(list(range(120)), rows, ["a", "b"], [(0, 1, 2)], norms, losses)
    assert "from 0.123 before any update to 0 while" in found.message, found.message
    assert "x smaller" not in found.message


def test_shrinking_gradients_of_a_converging_run_stay_quiet() -> None:
    n = 150
    norms = np.concatenate([np.ones(50), np.full(n - 50, 1e-6)])
    losses = np.concatenate([np.full(50, 2.3), np.full(n - 50, 1e-4)])
    rows = np.tile(norms[:, None], (1, 2))
    assert VanishingGradients().update(list(range(n)), rows, ["a", "b"], [(0, 1, 2)], norms, losses) == []


# A capsule network with a learning rate x1000 (held-out corpus): its first update saturates every capsule. The norm
# before any update is 0.23; after it, 1e-3 to 1e-5 with a few spikes, then ~1.5e-5 for good; the loss 0.76 before
# any update, 3.64 after it and 3.3 at the end. The first window is already after the collapse.
def saturated_by_the_first_update(n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(0)
    norms = 1.5e-5 * rng.uniform(0.7, 1.4, n)
    norms[0] = 0.23
    norms[[2, 5, 12]] = [0.2, 0.04, 0.19]
    return norms


def test_a_model_saturated_by_its_first_update_collapsed_from_before_any_update() -> None:
    norms = saturated_by_the_first_update()
    losses = np.concatenate([[0.76], np.full(70, 3.64), np.full(49, 3.3)])
    rows = np.tile(norms[:, None], (1, 2))
    [found] = VanishingGradients().update(list(range(120)), rows, ["a", "b"], [(0, 1, 2)], norms, losses)
    assert "before any update" in found.message and "learning rate far too high" in found.message
    assert found.evidence["first_grad_norm"] == 0.23 and found.evidence["first_loss"] == 0.76
    assert found.remedies[0].startswith("Lower the learning rate")


def test_gradients_that_fall_from_the_first_update_while_the_loss_falls_stay_quiet() -> None:
    norms = saturated_by_the_first_update()
    losses = np.concatenate([[2.3], np.full(119, 0.5)])  # a model that fit at once: small gradients, low loss
    rows = np.tile(norms[:, None], (1, 2))
    assert VanishingGradients().update(list(range(120)), rows, ["a", "b"], [(0, 1, 2)], norms, losses) == []


def test_column_medians_match_numpy_nanmedian() -> None:
    from lightning_lossguard.detectors.stats import column_medians

    rng = np.random.default_rng(0)
    for rows in (5, 6, 50):
        values = rng.lognormal(size=(rows, 7))
        values[rng.random(values.shape) < 0.3] = np.nan
        values[:, 3] = np.nan  # a column with nothing
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.testing.assert_allclose(column_medians(values), np.nanmedian(values, axis=0))


def _encoder_that_settles(n: int = 300, early_ratio: float = 0.1, late_ratio: float = 1e-4) -> np.ndarray:
    """Six layers whose first layer's share of the gradient falls from ``early_ratio`` to ``late_ratio`` of the last
    layer's after the first 50 steps (a Gumbel-softmax encoder whose codes harden)."""
    first = np.where(np.arange(n) < 50, early_ratio, late_ratio)
    rows = np.tile([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], (n, 1))
    rows[:, 0] = first
    return rows


def test_a_first_layer_that_learned_and_settled_is_info() -> None:
    # The real series' shape: the encoder's ratio 0.08 over the first 50 steps, ~1e-4 later, the loss down 88%.
    rows = _encoder_that_settles()
    losses = np.concatenate([np.linspace(240, 30, 50), np.full(250, 25.5)])
    [found] = VanishingGradients().update(list(range(300)), rows, LAYERS, CHAIN, rows.max(1), losses)
    assert found.severity == "info" and found.evidence["early_ratio"] == 0.1
    assert "learned, then settled" in found.message and found.evidence["loss_fall"] > 0.8


def test_a_first_layer_without_gradient_from_the_start_warns_even_when_the_loss_falls() -> None:
    # A deep sigmoid stack: the late layers fit what they can, the first never got a gradient.
    rows = _encoder_that_settles(early_ratio=1e-5, late_ratio=1e-5)
    losses = np.concatenate([np.linspace(240, 30, 50), np.full(250, 25.5)])
    [found] = VanishingGradients().update(list(range(300)), rows, LAYERS, CHAIN, rows.max(1), losses)
    assert found.severity == "warning" and "settled" not in found.message


def test_saturation_that_stalls_the_loss_warns() -> None:
    # The first layer had its share at the start, then saturated while the loss had fallen only 20%.
    rows = _encoder_that_settles()
    losses = np.concatenate([np.linspace(2.3, 1.84, 50), np.full(250, 1.84)])
    [found] = VanishingGradients().update(list(range(300)), rows, LAYERS, CHAIN, rows.max(1), losses)
    assert found.severity == "warning"


# A Set Transformer with a learning rate x1000 (held-out corpus): before any update its embedding got 0.11 of the
# head's gradient; Adam at lr 1 blew the loss up 1.4 -> ~12 (block peak) within a few steps, and from then on the
# embedding got ~1e-11 of it while the loss sat at chance.
def lost_after_the_first_updates(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    first = np.array([[0.11, 0.3, 0.5, 0.8, 1.0, 1.0]])
    later = np.tile([2.6e-11, 1e-6, 1e-3, 0.5, 2.0, 3.5], (n - 1, 1)) * rng.uniform(0.7, 1.4, (n - 1, 6))
    losses = np.concatenate([[1.4], np.full(9, 12.0), np.full(n - 10, 1.386)]) * rng.uniform(0.95, 1.05, n)
    return np.vstack([first, later]), losses


def test_a_first_layer_that_lost_its_gradient_after_a_loss_jump_blames_the_learning_rate() -> None:
    rows, losses = lost_after_the_first_updates()
    n = len(rows)
    [found] = VanishingGradients().update(list(range(n)), rows, LAYERS, CHAIN, rows.max(1), losses)
    assert found.severity == "warning" and "learning rate far too high" in found.message
    assert found.evidence["first_ratio"] > 0.1 and found.evidence["peak_loss"] > 10
    assert found.remedies[0].startswith("Lower the learning rate")


def test_without_a_loss_jump_or_with_a_starved_start_the_cause_stays_the_architecture() -> None:
    rows, losses = lost_after_the_first_updates()
    n = len(rows)
    flat = np.full(n, 1.4)  # the loss never jumped
    [found] = VanishingGradients().update(list(range(n)), rows, LAYERS, CHAIN, rows.max(1), flat)
    assert "learning rate" not in found.message and "ReLU" in found.remedies[0]
    starved = rows.copy()
    starved[0] = [1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 1.0]  # a deep sigmoid stack: starved before any update
    [found] = VanishingGradients().update(list(range(n)), starved, LAYERS, CHAIN, starved.max(1), losses)
    assert "learning rate" not in found.message
    one_noisy_batch = flat.copy()
    one_noisy_batch[3] = 30.0  # one batch is not a jump: the peak is a median of five
    [found] = VanishingGradients().update(list(range(n)), rows, LAYERS, CHAIN, rows.max(1), one_noisy_batch)
    assert "learning rate" not in found.message


def _sampled_like_the_budget(
    rows: np.ndarray, losses: np.ndarray, stride: int, report: int = 20
) -> list[tuple[int, str, str]]:
    """(step, severity, message) of every finding a fresh detector gives when the first report measures every step
    and later ones keep the rows at ``stride`` and each report's last row (the loss on every step), as the cost
    budget samples them."""
    detector, found = VanishingGradients(), []
    for start in range(0, len(rows), report):
        steps = list(range(start, min(start + report, len(rows))))
        keep = [s for s in steps if start < report or s % stride == 0 or s == steps[-1]]
        for d in detector.update(keep, rows[keep], LAYERS, CHAIN, rows[keep].max(1), losses[steps]):
            found.append((d.step, str(d.severity), d.message))
    return found


def test_the_first_window_is_fifty_steps_at_any_stride() -> None:
    # The encoder settles from step 40 on. Counted in rows, the first window of a run sampled on a stride of 8 after
    # its first report reached step ~190, took the settled ratio for the early one and warned (the Gumbel-softmax
    # autoencoder's seed 0 at stride 8, replayed with its start strided too).
    rows = _encoder_that_settles(n=400)
    rows[40:, 0] = 1e-4
    losses = np.concatenate([np.linspace(240, 30, 50), np.full(350, 25.5)])
    for stride in range(1, 9):
        found = _sampled_like_the_budget(rows, losses, stride)
        assert found and all(severity == "info" for _, severity, _ in found), (stride, found)
        assert "In its first 50 steps" in found[-1][2], found[-1][2]


def test_the_early_norm_weighs_each_sampled_step_by_the_steps_it_stands_for() -> None:
    # A zero-initialised head: the norm is 0.01 before any update, 1 for the next 19 steps, then 0.01, and 5e-6 from
    # step 200 on, the loss flat (the shape of a super-resolution net's exp output, replayed). Over the first 50 steps
    # its level is 0.01, so now / early is 5e-4: not a collapse. A plain median of the rows that a whole first report
    # and a stride of 8 keep (19 of 25 at 1) read 5e-6: a collapse that depended on the stride.
    norms = np.concatenate([[0.01], np.ones(19), np.full(180, 0.01), np.full(200, 5e-6)])
    rows = np.tile(norms[:, None], (1, 6))
    losses = np.full(400, 0.0129)
    for stride in range(1, 9):
        assert _sampled_like_the_budget(rows, losses, stride) == [], stride
    collapsed = rows.copy()
    collapsed[200:] = 2e-7  # 5e4x below the early level: a collapse at every stride
    for stride in range(1, 9):
        found = _sampled_like_the_budget(collapsed, losses, stride)
        assert found and "collapsed from 0.01 " in found[0][2], (stride, found)


def test_a_state_saved_before_the_first_window_was_counted_in_steps_still_loads() -> None:
    # A checkpoint from before: its early rows, no early steps and no window end. The window ends where its rows end.
    rows = _encoder_that_settles(n=300)
    losses = np.concatenate([np.linspace(240, 30, 50), np.full(250, 25.5)])
    saved = VanishingGradients()
    saved.update(list(range(60)), rows[:60], LAYERS, CHAIN, rows[:60].max(1), losses[:60])
    state = {k: v for k, v in saved.state_dict().items() if k not in ("early_until", "early_over", "early_steps")}
    resumed = VanishingGradients()
    resumed.load_state_dict(state)
    [found] = resumed.update(list(range(60, 300)), rows[60:], LAYERS, CHAIN, rows[60:].max(1), losses[60:])
    assert found.severity == "info" and found.evidence["early_ratio"] == 0.1
    assert len(resumed.early_rows) == 50 and resumed.early_over
