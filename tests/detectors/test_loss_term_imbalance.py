import numpy as np

from lightning_lossguard.detectors import LossTermImbalance
from lightning_lossguard.detectors.loss_term_imbalance import auxiliary
from lightning_lossguard.diagnosis import Severity


def test_a_term_orders_of_magnitude_larger_is_named() -> None:
    detector = LossTermImbalance()
    terms = {"mse": np.full(30, 1.0), "l2": np.full(30, 380.0)}
    [found] = detector.update(list(range(30)), terms)
    assert found.subject == "l2" and "'mse'" in found.message and found.evidence["ratio"] == 380.0


def test_balanced_and_zero_terms_stay_quiet() -> None:
    terms = {"a": np.full(30, 1.0), "b": np.full(30, -3.0), "off": np.zeros(30)}
    assert LossTermImbalance().update(list(range(30)), terms) == []


def test_state_round_trip_keeps_windows() -> None:
    detector = LossTermImbalance()
    detector.update(list(range(15)), {"a": np.ones(15), "b": np.full(15, 500.0)})
    clone = LossTermImbalance()
    clone.load_state_dict(detector.state_dict())
    assert clone.update(list(range(15, 25)), {"a": np.ones(10), "b": np.full(10, 500.0)})


def test_an_auxiliary_loss_far_below_the_task_is_an_info() -> None:
    # A Switch mixture of experts: load-balancing weighted 0.01, router z-loss 1e-3, both flat from the start.
    terms = {"task": np.full(30, 1.8), "balance": np.full(30, 0.012), "router_z": np.full(30, 0.005)}
    [found] = LossTermImbalance().update(list(range(30)), terms)
    assert found.severity == Severity.INFO and found.evidence["auxiliary"] == 1.0
    assert "'router_z'" in found.message and "auxiliary loss" in found.message


def test_a_task_term_drowned_beside_auxiliary_losses_is_still_a_warning() -> None:
    terms = {"reg": np.full(30, 400.0), "mse": np.full(30, 1.0), "aux_loss": np.full(30, 0.01)}
    [found] = LossTermImbalance().update(list(range(30)), terms)
    assert found.severity == Severity.WARNING and found.subject == "reg" and "'mse'" in found.message
    assert found.evidence["auxiliary"] == 0.0


def test_an_auxiliary_loss_that_dominates_the_task_is_a_warning() -> None:
    terms = {"aux_loss": np.full(30, 300.0), "ce": np.full(30, 1.0)}
    [found] = LossTermImbalance().update(list(range(30)), terms)
    assert found.severity == Severity.WARNING and found.subject == "aux_loss"


def test_an_auxiliary_loss_being_ramped_up_is_not_judged() -> None:
    ramp = np.concatenate([np.full(15, 1e-4), np.full(15, 1e-3)])
    assert LossTermImbalance().update(list(range(30)), {"task": np.full(30, 2.0), "aux_loss": ramp}) == []


def test_auxiliary_names() -> None:
    assert all(auxiliary(n) for n in ["aux_loss", "Balance", "load_balancing_loss", "router_z", "z_loss"])
    assert not any(auxiliary(n) for n in ["mse", "l2", "kl", "reconstruction", "ce"])
