"""Every constructor argument, checked at construction: a wrong value fails at once with the allowed values
named, instead of being accepted or failing obscurely at the first report."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from lightning_lossguard import LossGuard
from lightning_lossguard.detectors import DETECTORS

WINDOW = "baseline_window must be an integer"
BAD = [
    # (kwargs, exception, what the message must say)
    ({"fail_on": "fatal"}, ValueError, "fail_on must be one of None, 'warning', 'error'; got 'fatal'"),
    ({"fail_on": True}, ValueError, "fail_on must be one of"),
    ({"report_every": 0}, ValueError, "report_every must be an integer between 1 and"),
    ({"report_every": True}, ValueError, "report_every must be an integer"),
    ({"report_every": 2.5}, ValueError, "report_every must be an integer"),
    (
        {"suppress": "loss_plateau"},
        TypeError,
        "suppress must be a list of diagnosis codes, e.g. suppress=['loss_plateau']",
    ),
    ({"suppress": ["exploding"]}, ValueError, "unknown diagnosis code 'exploding'. Known codes: nonfinite_loss"),
    ({"suppress": [5]}, ValueError, "unknown diagnosis code 5"),
    ({"severity": {"loss_plateau": "critical"}}, ValueError, "must be one of 'info', 'warning', 'error'"),
    ({"severity": {"nope": "error"}}, ValueError, "unknown diagnosis code 'nope'"),
    ({"severity": ["loss_plateau"]}, TypeError, "severity must be a dict"),
    ({"thresholds": {"code": 5}}, ValueError, "unknown diagnosis code 'code'"),
    ({"thresholds": {"exploding_gradients": 5}}, TypeError, "thresholds['exploding_gradients'] must be a dict"),
    ({"thresholds": {"exploding_gradients": {"spike": 3}}}, ValueError, "Allowed: spike_factor, z,"),
    ({"thresholds": {"exploding_gradients": {"spike_factor": "x"}}}, ValueError, "must be a number in"),
    ({"thresholds": {"exploding_gradients": {"spike_factor": -5}}}, ValueError, "spike_factor must be a number in"),
    ({"thresholds": {"exploding_gradients": {"spike_factor": math.nan}}}, ValueError, "spike_factor must be a number"),
    (
        {"thresholds": {"exploding_gradients": {"baseline_window": -3}}},
        ValueError,
        "baseline_window must be an integer",
    ),
    (
        {"thresholds": {"exploding_gradients": {"baseline_window": 1e30}}},
        ValueError,
        "baseline_window must be an integer",
    ),
    (
        {"thresholds": {"exploding_gradients": {"baseline_window": 2.5}}},
        ValueError,
        "baseline_window must be an integer",
    ),
    ({"thresholds": {"loss_plateau": {"block": True}}}, ValueError, "block must be an integer"),
    ({"val_metric": ""}, ValueError, "val_metric must be a non-empty string"),
    ({"val_metric": 3}, ValueError, "val_metric must be a non-empty string"),
    ({"verbose": "no"}, TypeError, "verbose must be True or False; got 'no'"),
    ({"time_forward": 1}, TypeError, "time_forward must be True or False"),
    ({"max_update_elements": -1}, ValueError, "max_update_elements must be an integer"),
    ({"max_update_elements": 1.5}, ValueError, "max_update_elements must be an integer"),
    ({"name": 5}, ValueError, "name must be 1-64 letters, digits, '-' or '_'; got 5"),
    ({"name": "my guard"}, ValueError, "name must be 1-64 letters"),
    ({"name": "../x"}, ValueError, "name must be 1-64 letters"),
    ({"monitors": "OutputMonitor"}, TypeError, "monitors must be a list"),
    ({"monitors": [object()]}, TypeError, "monitors must be lightning_lossguard.Monitor instances"),
    ({"stall_timeout": 0}, ValueError, "stall_timeout must be a number of seconds above 0, or None (off); got 0"),
    ({"stall_timeout": -5}, ValueError, "stall_timeout must be a number of seconds above 0"),
    ({"stall_timeout": math.inf}, ValueError, "stall_timeout must be a number of seconds above 0"),
    ({"stall_timeout": math.nan}, ValueError, "stall_timeout must be a number of seconds above 0"),
    ({"stall_timeout": True}, ValueError, "stall_timeout must be a number of seconds above 0"),
    ({"stall_timeout": "600"}, ValueError, "stall_timeout must be a number of seconds above 0"),
    ({"thresholds": {"stalled_training": {"x": 1}}}, ValueError, "its timeout is LossGuard(stall_timeout=...)"),
    ({"budget": 0}, ValueError, "budget must be a number in (0, 1] or None; got 0."),
    ({"budget": 2}, ValueError, "budget must be a number in (0, 1]"),
    ({"budget": math.nan}, ValueError, "budget must be a number in (0, 1]"),
    ({"budget": True}, ValueError, "budget must be a number in (0, 1]"),
    ({"budget": "1%"}, ValueError, "budget must be a number in (0, 1]"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=lambda v: str(v)[:40])
def test_a_bad_argument_fails_at_construction_naming_what_is_allowed(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        LossGuard(**kwargs)
    assert message in str(raised.value)


def test_good_arguments_are_kept_as_given() -> None:
    guard = LossGuard(
        fail_on="warning",
        report_every=7,
        suppress=("loss_plateau",),
        severity={"expensive_loss": "error"},
        thresholds={"exploding_gradients": {"spike_factor": 20, "baseline_window": 50.0}},
        val_metric="val/loss",
        verbose=False,
        name="second-guard",
        stall_timeout=600,
        budget=0.05,
    )
    assert guard.budget == 0.05 and LossGuard().budget == 0.01 and LossGuard(budget=None).budget is None
    assert guard.stall_timeout == 600.0 and LossGuard().stall_timeout is None
    assert guard.report_every == 7 and guard.suppress == ["loss_plateau"] and guard.fail_on == "warning"
    exploding = guard._diagnostician.detectors["exploding_gradients"].thresholds
    assert exploding.spike_factor == 20.0 and exploding.baseline_window == 50 and type(exploding.baseline_window) is int


@pytest.mark.parametrize("code", sorted(DETECTORS))
def test_every_threshold_declares_a_range_that_its_default_satisfies_and_refuses_nan(code: str) -> None:
    thresholds = DETECTORS[code].Thresholds()
    for field in dataclasses.fields(thresholds):
        assert {"low", "high"} <= set(field.metadata), f"{code}.{field.name} declares no range"
        with pytest.raises(ValueError, match=f"{code}.{field.name} must be"):
            LossGuard(thresholds={code: {field.name: math.nan}})
        with pytest.raises(ValueError, match=f"{code}.{field.name} must be"):
            LossGuard(thresholds={code: {field.name: field.metadata["low"] - 1}})
        LossGuard(thresholds={code: {field.name: getattr(thresholds, field.name)}})  # the default is valid
