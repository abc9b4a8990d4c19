from lightning_lossguard.detectors import ValLossRising


def run(vals: list[float], trains: list[float]) -> list:
    detector = ValLossRising()
    found = []
    for epoch, (v, tr) in enumerate(zip(vals, trains)):
        found += detector.update(step=10 * epoch, epoch=epoch, value=v, train_loss=tr)
    return found


def test_overfitting_names_the_best_epoch() -> None:
    found = run([0.50, 0.40, 0.45, 0.55, 0.60], [1.0, 0.7, 0.5, 0.3, 0.2])
    assert found and "overfitting" in found[0].message
    assert found[0].evidence["best_epoch"] == 1 and "epoch 1" in found[0].message
    assert "ModelCheckpoint" in found[0].remedies[0]


def test_rising_from_the_first_evaluation_with_flat_training_is_forgetting() -> None:
    found = run([0.30, 0.36, 0.42, 0.50], [0.2, 0.2, 0.2, 0.2])
    assert found and "forgetting" in found[0].message
    assert found[0].remedies[0].startswith("When fine-tuning")


def test_both_rising_is_instability() -> None:
    found = run([0.5, 0.4, 0.5, 0.7], [0.5, 0.4, 0.6, 0.9])
    assert found and "unstable" in found[0].message


def test_a_few_percent_of_wobble_stays_quiet() -> None:
    assert run([0.50, 0.48, 0.50, 0.47, 0.49, 0.46, 0.48, 0.47], [1.0, 0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45]) == []


def test_a_single_bad_evaluation_is_not_persistent() -> None:
    assert run([0.5, 0.4, 0.35, 0.6, 0.34, 0.33], [1.0, 0.8, 0.7, 0.6, 0.5, 0.4]) == []
