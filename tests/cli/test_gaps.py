"""Coverage gaps in the gate: ``lossguard check`` exits 3 when a judged report could not watch all of its run.

Exit codes, the first that applies: 2 (a PATH without a readable report), 1 (a diagnosis at the level),
3 (a coverage gap, unless ``--allow-gaps``), 0.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.cli import main
from lightning_lossguard.report.json_report import Gap, write_report

GAP = Gap("gradients", "3 parameters hold DTensor gradients, which LossGuard cannot read")
ERROR = Diagnosis("loss_divergence", Severity.ERROR, 30, "The loss rose.", {"ratio": 9.0}, ["Lower the LR."])


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def run(tmp_path: Path, name: str, diagnoses: list[Diagnosis], gaps: list[Gap]) -> Path:
    return write_report(tmp_path / name / "version_0" / "lossguard.json", diagnoses, "finished", 50, [], None, gaps)


def test_a_gap_exits_3_and_says_what_was_not_watched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gapped = run(tmp_path, "a", [], [GAP])
    assert main(["check", str(gapped)]) == 3
    out = capsys.readouterr().out
    assert re.search(rf"^GAPS +{re.escape(str(gapped))} .*could not watch everything: 1 coverage gap", out, re.M)
    assert f"  not watched: gradients: {GAP.reason}" in out
    assert "nothing wrong" not in out and "no problems" not in out

    assert main(["check", str(gapped), "--allow-gaps"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^PASS .*1 coverage gap\(s\) allowed \(--allow-gaps\)", out, re.M)
    assert f"not watched: gradients: {GAP.reason}" in out  # still shown


@pytest.mark.parametrize(
    ("runs", "extra", "code"),
    [
        ({"a": ([ERROR], [GAP])}, [], 1),  # an alarm beats a gap, in one report
        ({"a": ([ERROR], []), "b": ([], [GAP])}, [], 1),  # or across reports
        ({"a": ([], [GAP])}, ["nowhere"], 2),  # no readable report beats a gap
        ({"a": ([ERROR], [GAP])}, ["nowhere"], 2),  # and an alarm, as before
        ({"a": ([], []), "b": ([], [GAP])}, [], 3),
        ({"a": ([], [])}, [], 0),
    ],
)
def test_precedence_2_then_1_then_3(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    runs: dict[str, tuple[list[Diagnosis], list[Gap]]],
    extra: list[str],
    code: int,
) -> None:
    for name, (diagnoses, gaps) in runs.items():
        run(tmp_path / "logs", name, diagnoses, gaps)
    paths = [str(tmp_path / "logs"), *(str(tmp_path / e) for e in extra)]
    assert main(["check", *paths]) == code
    assert main(["check", *paths, "--allow-gaps"]) == (0 if code == 3 else code)


def test_coverage_read_from_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "v1" / "lossguard.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"schema_version": 1, "status": "finished", "global_step": 5, "diagnoses": []}))
    assert main(["check", str(old)]) == 0  # version 1 recorded no coverage: complete
    unnamed = tmp_path / "v2" / "lossguard.json"
    unnamed.parent.mkdir()
    unnamed.write_text(json.dumps({"schema_version": 2, "global_step": 5, "coverage": {"complete": False, "gaps": []}}))
    assert main(["check", str(unnamed)]) == 3
    assert "not watched: unknown: the report says coverage is incomplete" in capsys.readouterr().out


def test_junit_has_a_failing_testcase_per_gap_or_a_skipped_one_when_allowed(tmp_path: Path) -> None:
    gapped = run(tmp_path, "a", [], [GAP, Gap("losses", "the step output had no loss")])
    junit = tmp_path / "junit.xml"
    assert main(["check", str(gapped), "--junit", str(junit)]) == 3
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "2", "0")
    suite = root.find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.findall("./properties/property")}
    assert props["coverage"] == "incomplete"
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == ["no diagnoses", "coverage: gradients", "coverage: losses"]
    failure = suite.find("./testcase[@name='coverage: gradients']/failure")
    assert failure is not None and failure.get("type") == "coverage_gap"
    assert failure.get("message") == f"not watched: gradients: {GAP.reason}" and str(gapped) in (failure.text or "")

    assert main(["check", str(gapped), "--junit", str(junit), "--allow-gaps"]) == 0
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "0", "2")


def test_github_annotations_for_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gapped = run(tmp_path, "a", [], [GAP])
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["check", str(gapped)]) == 3
    expected = f"title=LossGuard coverage::{gapped}: not watched: gradients: {GAP.reason}"
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")] == [f"::error {expected}"]
    assert main(["check", str(gapped), "--allow-gaps"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")] == [f"::warning {expected}"]


def test_report_shows_the_gaps_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gapped = run(tmp_path, "a", [ERROR], [GAP])
    clean_but_gapped = run(tmp_path, "b", [], [GAP])
    assert main(["report", str(gapped), str(clean_but_gapped)]) == 0  # report shows; check gates
    out = capsys.readouterr().out
    assert out.count("coverage incomplete") == 2 and out.count(f"not watched: gradients: {GAP.reason}") == 2
    assert "no diagnoses in what LossGuard watched" in out and "found nothing wrong" not in out

    assert main(["report", str(gapped), "--format", "json"]) == 0
    [data] = json.loads(capsys.readouterr().out)
    assert data["coverage"] == {"complete": False, "gaps": [GAP.to_dict()]}

    assert main(["report", str(clean_but_gapped), "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "## LossGuard: coverage incomplete" in text and f"- **gradients**: {GAP.reason}" in text
    assert "nothing wrong" not in text and "No diagnoses in what LossGuard watched." in text
