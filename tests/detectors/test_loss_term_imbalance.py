import numpy as np

from lightning_lossguard.detectors import LossTermImbalance


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
