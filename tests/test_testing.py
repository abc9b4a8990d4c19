"""``assert_healthy``: for users' own pytest suites, on a LossGuard, a list of diagnoses, or a report path."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import Diagnosis, LossGuard, Severity
from lightning_lossguard.report.json_report import Gap, read_report, write_report
from lightning_lossguard.testing import assert_healthy
from tests.conftest import trainer

PLATEAU = Diagnosis(
    "loss_plateau",
    Severity.WARNING,
    90,
    "The loss never fell.",
    {"drop": 0.01, "odd": math.inf},
    ["Raise the learning rate.", "Check the targets."],
)
SHIFT = Diagnosis("loss_scale_shift", Severity.INFO, 40, "The loss level jumped.", {"factor": 12.0})


def fit(tmp_path: Path, scenario: str, max_steps: int) -> LossGuard:
    run = build(scenario)
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=max_steps).fit(run.module, run.train)
    return guard


def test_an_exploding_run_fails_with_step_message_evidence_and_remedies(tmp_path: Path) -> None:
    guard = fit(tmp_path, "lr_too_high_sgd", max_steps=40)
    with pytest.raises(AssertionError) as raised:
        assert_healthy(guard)
    message = str(raised.value)
    exploding = next(d for d in guard.diagnoses if d.code == "exploding_gradients")
    assert re.search(rf"- step {exploding.step}: error exploding_gradients \(net\.\d\): ", message)
    assert exploding.message in message
    assert "evidence: " in message and "ratio=" in message
    assert f"remedy 1: {exploding.remedies[0]}" in message and "gradient_clip_val" in message
    # The same verdict from the lossguard.json the run left, found by searching the log directory.
    with pytest.raises(AssertionError, match="exploding_gradients"):
        assert_healthy(tmp_path)
    assert guard.report_path is not None
    with pytest.raises(AssertionError, match="exploding_gradients"):
        assert_healthy(read_report(guard.report_path), fail_on="error")


def test_a_healthy_run_passes_from_the_guard_and_from_its_log_dir(tmp_path: Path) -> None:
    guard = fit(tmp_path, "adam_regression", max_steps=30)
    assert not [d for d in guard.diagnoses if d.severity.at_least("warning")]
    assert_healthy(guard)
    assert_healthy(tmp_path)
    assert guard.report_path is not None
    assert_healthy(Path(guard.report_path), fail_on="error")


def test_the_level_decides_what_fails() -> None:
    assert_healthy([SHIFT])
    assert_healthy([SHIFT, PLATEAU], fail_on="error")
    with pytest.raises(AssertionError, match=r"1 diagnosis at or above info:\n- step 40: info loss_scale_shift"):
        assert_healthy([SHIFT], fail_on=Severity.INFO)
    with pytest.raises(AssertionError) as raised:
        assert_healthy([SHIFT, PLATEAU])
    message = str(raised.value)
    assert message.splitlines()[0] == "LossGuard found 1 diagnosis at or above warning:"
    assert "loss_scale_shift" not in message
    assert "evidence: drop=0.01, odd=inf" in message
    assert "remedy 1: Raise the learning rate." in message and "remedy 2: Check the targets." in message
    with pytest.raises(ValueError):
        assert_healthy([PLATEAU], fail_on="fatal")  # type: ignore[arg-type]


def test_several_reports_under_a_directory_name_the_report(tmp_path: Path) -> None:
    write_report(tmp_path / "a" / "lossguard.json", [SHIFT], "finished", 100)
    bad = write_report(tmp_path / "b" / "lossguard.json", [PLATEAU, PLATEAU], "finished", 100)
    with pytest.raises(AssertionError) as raised:
        assert_healthy(tmp_path)
    message = str(raised.value)
    assert message.startswith("LossGuard found 2 diagnoses at or above warning:")
    assert message.count(f"report: {bad}") == 2 and str(tmp_path / "a") not in message


def test_a_missing_or_unreadable_report_fails_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no such file or directory"):
        assert_healthy(tmp_path / "nowhere")
    with pytest.raises(AssertionError, match=r"No lossguard\.json under"):
        assert_healthy(tmp_path)
    corrupt = tmp_path / "run" / "lossguard.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{truncated")
    with pytest.raises(AssertionError, match="not valid JSON"):
        assert_healthy(tmp_path)


def test_a_list_of_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Diagnosis objects"):
        assert_healthy([{"code": "loss_plateau"}])  # type: ignore[list-item]


def test_coverage_gaps_fail_unless_allowed(tmp_path: Path) -> None:
    gap = Gap("gradients", "an internal error stopped the gradient measurements")
    path = write_report(tmp_path / "run" / "lossguard.json", [SHIFT], "finished", 100, [], None, [gap])
    for source in (path, tmp_path, read_report(path)):
        with pytest.raises(AssertionError) as raised:
            assert_healthy(source)
        assert str(raised.value) == (
            "LossGuard could not watch all of the run (coverage gaps; allow_gaps=True accepts them):\n"
            "- not watched: gradients: an internal error stopped the gradient measurements"
        )
        assert_healthy(source, allow_gaps=True)
    # A LossGuard reports its gaps in its ``gaps`` attribute.
    guard = LossGuard(verbose=False)
    assert_healthy(guard)
    guard.coverage.add(gap.signal, gap.reason)
    with pytest.raises(AssertionError, match="not watched: gradients"):
        assert_healthy(guard)
    assert_healthy(guard, allow_gaps=True)


def test_diagnoses_and_gaps_are_both_listed_cause_first(tmp_path: Path) -> None:
    nan = Diagnosis("nonfinite_loss", Severity.ERROR, 50, "NaN.")
    explosion = Diagnosis("exploding_gradients", Severity.ERROR, 50, "Boom.")
    path = write_report(
        tmp_path / "lossguard.json", [nan, PLATEAU, explosion], "alarm", 50, [], "error", [Gap("x", "y")]
    )
    with pytest.raises(AssertionError) as raised:
        assert_healthy(path)
    lines = [line for line in str(raised.value).splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in lines] == ["- step 50", "- step 50", "- step 90", "- not watched"]
    assert "exploding_gradients" in lines[0] and "nonfinite_loss" in lines[1]
