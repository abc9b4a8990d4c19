"""LoggedScalars: what a training step logs, kept on the device until the report."""

import math

import torch

from lightning_lossguard.signals.logged import MAX_NAMES, LoggedScalars


def test_scalars_are_kept_detached_by_row_and_missing_cells_are_nan() -> None:
    logged = LoggedScalars()
    weight = torch.ones((), requires_grad=True)
    term = weight * 2.0
    logged.capture(0, "term", term)
    logged.capture(0, "lr", 0.1)
    logged.capture(1, "term", torch.tensor([3.0]))
    logged.capture(1, "term", torch.tensor(4.0))  # logged twice in one batch: the last value
    rows, names, values = logged.take(torch.device("cpu"))
    assert rows == [0, 1] and names == ["term", "lr"]
    assert values[0].tolist() == [2.0, torch.tensor(0.1).item()] and values[1, 0].item() == 4.0
    assert math.isnan(values[1, 1].item()) and not values.requires_grad
    assert logged.take(torch.device("cpu"))[0] == [], "the buffer starts over"


def test_what_is_not_a_scalar_is_left_alone() -> None:
    logged = LoggedScalars()
    logged.capture(0, "vector", torch.ones(3))
    logged.capture(0, "flag", True)
    logged.capture(0, "metric", object())
    logged.capture(0, 7, 1.0)
    assert logged.take(torch.device("cpu"))[1] == []


def test_a_step_that_logs_many_metrics_keeps_its_first_names() -> None:
    logged = LoggedScalars()
    for i in range(MAX_NAMES + 5):
        logged.capture(0, f"m{i}", float(i))
    _, names, values = logged.take(torch.device("cpu"))
    assert len(names) == MAX_NAMES and values.shape == (1, MAX_NAMES)
