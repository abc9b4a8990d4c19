"""LoggedScalars: what a training step logs, kept on the device until the report."""

import math

import torch

from lightning_lossguard.signals.logged import MAX_NAMES, LoggedScalars

CPU = torch.device("cpu")


def test_scalars_are_kept_detached_by_row_and_missing_cells_are_nan() -> None:
    logged = LoggedScalars()
    weight = torch.ones((), requires_grad=True)
    logged.capture(0, "term", weight * 2.0)
    logged.capture(0, "lr", 0.1)
    logged.capture(1, "term", torch.tensor([3.0]))
    logged.capture(1, "term", torch.tensor(4.0))  # logged twice in one batch: the last value
    taken = logged.take(CPU)
    assert taken.rows == [0, 1] and taken.names == ["term", "lr"]
    assert not taken.on_device.requires_grad and taken.on_device.tolist() == [2.0, 4.0]  # tensors only
    values = taken.matrix(taken.on_device.double().numpy())
    assert values[0].tolist() == [2.0, 0.1] and values[1, 0] == 4.0 and math.isnan(values[1, 1])
    assert logged.take(CPU).rows == [], "the buffer starts over"


def test_numbers_logged_as_floats_never_go_to_the_device() -> None:
    logged = LoggedScalars()
    logged.capture(0, "keep_rate", 0.65)
    taken = logged.take(CPU)
    assert taken.on_device.numel() == 0 and taken.matrix(taken.on_device.numpy()).tolist() == [[0.65]]


def test_what_is_not_a_scalar_is_left_alone() -> None:
    logged = LoggedScalars()
    logged.capture(0, "vector", torch.ones(3))
    logged.capture(0, "flag", True)
    logged.capture(0, "metric", object())
    logged.capture(0, 7, 1.0)
    assert logged.take(CPU).names == []


def test_a_step_that_logs_many_metrics_keeps_its_first_names() -> None:
    logged = LoggedScalars()
    for i in range(MAX_NAMES + 5):
        logged.capture(0, f"m{i}", float(i))
    taken = logged.take(CPU)
    assert len(taken.names) == MAX_NAMES and taken.host.shape == (1, MAX_NAMES)
