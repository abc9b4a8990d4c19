"""LoggedTerms: which logged series are the loss's terms, from the numbers alone (scripted windows)."""

import numpy as np

from lightning_lossguard.detectors.logged_terms import LoggedTerms

RNG_SEED = 3
RNG = np.random.default_rng(RNG_SEED)  # drawn afresh for every test (conftest)


def _window(n: int = 40, kl_weight: float | np.ndarray = 0.5) -> tuple[np.ndarray, list[int], dict[str, np.ndarray]]:
    recon = 1.0 + 0.1 * RNG.standard_normal(n)
    kl = 0.2 + 0.05 * RNG.random(n)
    loss = (recon + kl_weight * kl).astype(np.float32).astype(np.float64)
    accuracy = 0.5 + 0.01 * np.arange(n)  # moves with training, is no term
    rows = list(range(n))
    logged = {"train_loss": loss.copy(), "recon": recon, "kl": kl, "acc": accuracy, "lr": np.full(n, 1e-3)}
    return loss, rows, logged


def test_the_logged_parts_that_add_up_to_the_loss_are_its_terms() -> None:
    loss, rows, logged = _window()
    terms = LoggedTerms()
    found = terms.terms(loss, rows, logged)
    assert set(found) == {"recon", "kl"}  # the logged total, the accuracy and the constant lr are left out
    assert abs(terms.weights["kl"] - 0.5) < 1e-4 and abs(terms.weights["recon"] - 1.0) < 1e-4
    np.testing.assert_allclose(found["recon"] + found["kl"], loss, rtol=1e-5)


def test_metrics_that_only_move_with_the_loss_are_not_terms() -> None:
    loss, rows, logged = _window()
    del logged["kl"]  # the recon alone does not add up to the loss; nor does it with the accuracy
    terms = LoggedTerms()
    assert terms.terms(loss, rows, logged) == {} and terms.weights == {}


def test_a_weight_that_changes_every_step_is_no_fixed_sum() -> None:
    # A KL warm-up: loss = recon + beta_t * kl with beta_t rising. No constant weights give the loss.
    loss, rows, logged = _window(kl_weight=np.linspace(0.0, 1.0, 40))
    assert LoggedTerms().terms(loss, rows, logged) == {}


def test_terms_that_stop_adding_up_are_dropped_for_good() -> None:
    terms = LoggedTerms()
    loss, rows, logged = _window()
    assert terms.terms(loss, rows, logged)
    loss2, rows2, logged2 = _window(kl_weight=2.0)  # the weight changed: the old sum no longer gives the loss
    assert terms.terms(loss2, rows2, logged2) == {} and terms.given_up
    assert terms.terms(loss, rows, logged) == {}


def test_too_few_logged_batches_decide_nothing_yet() -> None:
    loss, rows, logged = _window(n=5)
    terms = LoggedTerms()
    assert terms.terms(loss, rows, logged) == {} and not terms.given_up
    loss, rows, logged = _window()
    assert terms.terms(loss, rows, logged)


def test_the_decision_survives_a_checkpoint() -> None:
    terms = LoggedTerms()
    terms.terms(*_window())
    restored = LoggedTerms()
    restored.load_state_dict(terms.state_dict())
    assert restored.weights == terms.weights and not restored.given_up


def test_logged_batches_without_a_loss_row_are_left_out() -> None:
    # Manual optimization that returns nothing: the step logs, but the window holds no loss for it.
    loss, rows, logged = _window()
    assert LoggedTerms().terms(np.zeros(0), rows, logged) == {}
    found = LoggedTerms().terms(loss[:30], rows, logged)
    assert set(found) == {"recon", "kl"} and len(found["kl"]) == 30


def test_the_tolerance_is_loss_divergences_overridable_threshold() -> None:
    from lightning_lossguard.diagnostician import Diagnostician

    assert Diagnostician().logged_terms.tolerance == 1e-4
    loose = Diagnostician(thresholds={"loss_divergence": {"term_sum_tolerance": 1e-3}})
    assert loose.logged_terms.tolerance == 1e-3
