import json
import math
from pathlib import Path

import pytest

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.report.json_report import ReportError, find_reports, read_report, write_report

D = Diagnosis(
    "exploding_gradients",
    Severity.ERROR,
    42,
    "It exploded.",
    {"ratio": 1e4, "odd": math.nan},
    ["Clip."],
    "net.0",
)


def test_round_trip_keeps_every_field_and_non_finite_evidence(tmp_path: Path) -> None:
    path = write_report(tmp_path / "run" / "lossguard.json", [D], "finished", 100, ["a note"], "error")
    data = json.loads(path.read_text())  # strict JSON: no NaN literals
    assert (
        data["schema_version"] == 2
        and data["coverage"] == {"complete": True, "gaps": []}
        and data["counts"] == {"info": 0, "warning": 0, "error": 1}
    )
    assert data["diagnoses"][0]["evidence"]["odd"] == "nan"
    report = read_report(path)
    [back] = report.diagnoses
    assert back.code == D.code and back.subject == "net.0" and math.isnan(back.evidence["odd"])
    assert report.status == "finished" and report.notes == ["a note"] and report.worst() == Severity.ERROR


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"diagnoses": []}', "no schema_version"),
        ('{"schema_version": 99}', "newer LossGuard"),
        ('{"schema_version": 1, "diagnoses": [{"code": "x"}]}', "malformed"),
    ],
)
def test_unreadable_reports_say_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "lossguard.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=message):
        read_report(path)
    with pytest.raises(ReportError, match="no such file"):
        read_report(tmp_path / "missing.json")


def test_find_reports_searches_directories_recursively(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a" / "version_0" / "lossguard.json", [], "finished", 1)
    b = write_report(tmp_path / "b" / "lossguard.json", [], "finished", 1)
    assert find_reports(tmp_path) == [a, b]
    assert find_reports(a) == [a]
    assert find_reports(tmp_path / "nowhere") == []
