import numpy as np

from lightning_lossguard.detectors import TinyUpdates


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
