"""Which reports a directory gives: the latest run of each run family by default, every report with --all-runs."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.cli import main
from lightning_lossguard.report.json_report import find_reports, write_report
from lightning_lossguard.report.runs import latest_runs

BAD = Diagnosis("loss_divergence", Severity.ERROR, 30, "The loss rose.", {}, ["Lower the LR."])


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def report(path: Path, bad: bool = False, mtime: float | None = None) -> Path:
    written = write_report(path, [BAD] if bad else [], "finished", 40)
    if mtime is not None:
        os.utime(written, (mtime, mtime))
    return written


def judged(out: str) -> list[str]:
    return re.findall(r"^(?:PASS|FAIL|GAPS) +(\S+)", out, re.M)


def test_the_highest_version_is_the_latest_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "lightning_logs"
    for n in range(12):
        # version_9 sorts after version_11 as text and is the newest on disk: the number still decides.
        report(logs / f"version_{n}" / "lossguard.json", bad=n == 9, mtime=2e9 if n == 9 else 1e9 + n)
    assert main(["check", str(logs)]) == 0
    out = capsys.readouterr().out
    assert judged(out) == [str(logs / "version_11" / "lossguard.json")]
    assert "11 older run(s) not judged (--all-runs judges them)" in out
    assert main(["check", str(logs), "--all-runs"]) == 1
    out = capsys.readouterr().out
    assert len(judged(out)) == 12 and "older run" not in out
    # A report named directly is judged, however old.
    assert main(["check", str(logs / "version_9" / "lossguard.json")]) == 1
    capsys.readouterr()
    # So is each run directory named directly.
    assert main(["check", str(logs / "version_9"), str(logs / "version_3")]) == 1
    assert len(judged(capsys.readouterr().out)) == 2


def test_other_names_go_by_the_time_the_report_was_written(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "exp"
    a = report(logs / "run-a" / "lossguard.json", mtime=2e9)
    b = report(logs / "run-b" / "lossguard.json", mtime=1e9)
    mixed = report(logs / "version_7" / "lossguard.json", mtime=1.5e9)  # not every name is version_N
    assert latest_runs(find_reports(tmp_path)) == [a]
    os.utime(b, (3e9, 3e9))
    assert latest_runs(find_reports(tmp_path)) == [b]
    assert mixed in find_reports(tmp_path)


def test_each_family_and_each_named_report_has_its_own_latest_run(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for family in ("a", "b"):
        for n in range(3):
            report(logs / family / f"version_{n}" / "lossguard.json")
            report(logs / family / f"version_{n}" / "lossguard-val.json")
    chosen = latest_runs(find_reports(logs))
    assert [p.relative_to(logs).as_posix() for p in chosen] == [
        "a/version_2/lossguard-val.json",
        "a/version_2/lossguard.json",
        "b/version_2/lossguard-val.json",
        "b/version_2/lossguard.json",
    ]


def test_report_shows_the_latest_runs_and_says_so_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "lightning_logs"
    for n in range(3):
        report(logs / f"version_{n}" / "lossguard.json", bad=n == 0)
    assert main(["report", str(logs), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert '"path": "' + str(logs / "version_2" / "lossguard.json") in captured.out and "version_0" not in captured.out
    assert "2 older run(s) not shown (--all-runs shows them)" in captured.err
    assert main(["report", str(logs), "--all-runs", "--format", "json"]) == 0
    assert "version_0" in capsys.readouterr().out


def test_check_and_report_on_10000_run_folders_take_well_under_a_few_seconds(tmp_path: Path) -> None:
    logs = tmp_path / "lightning_logs"
    payload = report(tmp_path / "template.json").read_bytes()
    for n in range(10_000):
        run = logs / f"version_{n}"
        run.mkdir(parents=True)
        (run / "lossguard.json").write_bytes(payload)
        (run / "events.out.tfevents.0").write_bytes(b"")
    for command in (["check"], ["report"]):
        start, children = time.perf_counter(), _children_cpu()
        result = subprocess.run(
            [sys.executable, "-m", "lightning_lossguard.cli", *command, str(logs)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed, cpu = time.perf_counter() - start, _children_cpu() - children
        assert result.returncode == 0, result.stderr
        assert "9999 older run(s)" in result.stdout + result.stderr
        # Under a second of CPU for the whole command, interpreter start included (measured ~0.3 s); the wall-clock
        # bound is generous for a busy machine, where CPU time does not move.
        assert cpu < 1.0 and elapsed < 8, (command, cpu, elapsed)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def test_help_explains_the_rule_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--all-runs" in text and "--allow-gaps" in text
    assert "the latest is the highest N when every run folder is named version_N" in text
    assert "Exit 2 when a PATH has no readable report; else 1" in text and "else 3 when a report says" in text
