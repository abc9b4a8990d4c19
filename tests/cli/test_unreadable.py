"""Every input the ``lossguard`` command cannot read gives exit 2 and one clear line: never a traceback, never a hang.

The hostile files are real files on disk (a named pipe, a symbolic link to itself, a sparse 200 MB file);
the command runs in-process through ``main()`` where that is safe, and in a subprocess with a timeout where a
regression would hang the test run (the named pipe).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_lossguard.cli import main
from lightning_lossguard.report.json_report import MAX_REPORT_BYTES, ReportError, read_report, write_report

VALID = {"schema_version": 2, "status": "finished", "global_step": 10, "diagnoses": [], "notes": []}
TOO_LONG = "a number too long to read" if hasattr(sys, "get_int_max_str_digits") else "global_step must be an integer"
DIAGNOSIS = {"code": "loss_plateau", "severity": "warning", "step": 5, "message": "Flat.", "evidence": {}}


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def report_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run" / "lossguard.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *reason: str) -> str:
    for command in (["check"], ["report"], ["report", "--format", "json"]):
        assert main([*command, *argv]) == 2, command
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR "), err
        for part in reason:
            assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            '{"schema_version": 2, "global_step": 1e400}',
            "global_step must be an integer from 0 to 2**63-1, not infinity",
        ),
        # Python refuses to convert so many digits (3.11; 3.10 converts them and the range check refuses).
        ('{"schema_version": 2, "global_step": ' + "9" * 5000 + "}", TOO_LONG),
        ('{"schema_version": 2, "global_step": ' + "9" * 4000 + "}", "global_step must be an integer"),
        ('{"schema_version": 2, "global_step": -3}', "global_step must be an integer"),
        ('{"schema_version": 2, "global_step": 2.5}', "not a fraction"),
        ('{"schema_version": 2, "global_step": NaN}', "not NaN"),
        ('{"schema_version": 2, "global_step": "12"}', "not a string"),
        ('{"schema_version": true}', "invalid schema_version"),
        ('{"schema_version": 2, "status": ["alarm"]}', "status must be a string"),
        ('{"schema_version": 2, "notes": "one"}', "notes must be a list"),
        ('{"schema_version": 2, "notes": [{"x": 1}]}', "notes[0] must be a string"),
        ('{"schema_version": 2, "diagnoses": {}}', "malformed diagnosis entry (diagnoses must be a list"),
        ('{"schema_version": 2, "diagnoses": [7]}', "diagnoses[0] must be an object"),
        ('{"schema_version": 2, "diagnoses": [{"code": "x"}]}', "diagnoses[0] has no 'severity'"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "step": 1e300}]}), "diagnoses[0].step must be an integer"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "severity": "fatal"}]}), "severity must be 'info'"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "severity": ["x"]}]}), "severity must be a string"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "remedies": "Clip."}]}), "remedies must be a list"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "message": None}]}), "message must be a string, not null"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "evidence": {"a": [1]}}]}), "evidence must be a number"),
        (json.dumps({**VALID, "diagnoses": [{**DIAGNOSIS, "evidence": {"a": "lots"}}]}), "evidence must be a number"),
        (
            '{"schema_version": 2, "diagnoses": [{"code": "x", "severity": "info", "step": 1, "message": "m", '
            '"evidence": {"a": ' + "9" * 400 + "}}]}",
            "evidence must be a number",
        ),
        ('{"schema_version": 2, "coverage": []}', "coverage must be an object"),
        ('{"schema_version": 2, "cost": [0.01]}', "cost must be an object"),
        ('{"schema_version": 2, "cost": {"run_share": "low"}}', "cost.run_share must be a number"),
        ('{"schema_version": 2, "coverage": {"gaps": [{"signal": "grads"}]}}', "coverage.gaps[0] has no 'reason'"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        ('{"schema_version": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    ],
)
def test_hostile_content_exits_2_and_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, reason: str
) -> None:
    path = report_with(tmp_path, content)
    exits_2_with_one_line(capsys, [str(tmp_path)], str(path), reason)
    with pytest.raises(ReportError):
        read_report(path)


def test_non_finite_evidence_and_whole_float_steps_still_read(tmp_path: Path) -> None:
    entry = {**DIAGNOSIS, "step": 5.0, "evidence": {"a": "nan", "b": "-inf", "c": 1e400, "d": 3}}
    report = read_report(report_with(tmp_path, json.dumps({**VALID, "diagnoses": [entry]})))
    [d] = report.diagnoses
    assert d.step == 5 and d.evidence["c"] == float("inf") and d.evidence["d"] == 3.0
    assert read_report(report_with(tmp_path, "\ufeff" + json.dumps(VALID))).global_step == 10  # a BOM is fine


def test_bytes_that_are_not_utf8_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run" / "lossguard.json"
    path.parent.mkdir()
    path.write_bytes(b'{"schema_version": 2, "status": "\xff\xfe"}')
    exits_2_with_one_line(capsys, [str(path)], "not UTF-8 text (invalid byte at offset 33)")


def test_a_symbolic_link_to_itself_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "run" / "lossguard.json"
    loop.parent.mkdir()
    loop.symlink_to(loop)
    exits_2_with_one_line(capsys, [str(tmp_path)], str(loop), "a symbolic link loop")
    exits_2_with_one_line(capsys, [str(loop)], "a symbolic link loop")  # named directly, too


def test_a_broken_link_and_a_directory_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "lossguard.json").symlink_to(tmp_path / "gone.json")
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)  # a loop if links were followed
    exits_2_with_one_line(capsys, [str(tmp_path)], "a broken symbolic link")
    # A link to a real report elsewhere is read.
    real = write_report(tmp_path / "elsewhere" / "x.json", [], "finished", 3)
    (tmp_path / "a" / "lossguard.json").unlink()
    (tmp_path / "a" / "lossguard.json").symlink_to(real)
    assert main(["check", str(tmp_path / "a")]) == 0


def test_a_directory_named_like_a_report_is_searched_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lossguard.json").mkdir()
    exits_2_with_one_line(capsys, [str(tmp_path)], "no lossguard.json under")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "run" / "lossguard.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    for argv in (["check", str(tmp_path)], ["check", str(fifo)], ["report", str(tmp_path)]):
        result = subprocess.run(
            [sys.executable, "-m", "lightning_lossguard.cli", *argv], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"ERROR {fifo}: a named pipe (FIFO), not a report file (refused unread)"
    assert "Traceback" not in result.stderr


def test_a_device_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "run" / "lossguard.json"
    link.parent.mkdir()
    link.symlink_to(os.devnull)
    exits_2_with_one_line(capsys, [str(tmp_path)], "a character device, not a report file (refused unread)")


def test_a_huge_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "run" / "lossguard.json"
    huge.parent.mkdir()
    with huge.open("wb") as f:
        f.write(json.dumps(VALID).encode())
        f.truncate(200 * 2**20)  # sparse: 200 MB on paper, nothing on disk
    start = time.perf_counter()
    line = exits_2_with_one_line(capsys, [str(tmp_path)], "200.0 MiB is more than a LossGuard report can be")
    assert time.perf_counter() - start < 5  # three commands; each refuses without reading (measured: milliseconds)
    assert f"at most {MAX_REPORT_BYTES // 2**20} MiB" in line


def test_a_report_at_the_limit_is_still_read(tmp_path: Path) -> None:
    notes = ["x" * 1000] * ((MAX_REPORT_BYTES - 2000) // 1010)
    path = report_with(tmp_path, json.dumps({**VALID, "notes": notes}))
    assert path.stat().st_size <= MAX_REPORT_BYTES
    assert len(read_report(path).notes) == len(notes)


def test_an_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = write_report(tmp_path / "run" / "lossguard.json", [], "finished", 1)
    path.chmod(0)
    exits_2_with_one_line(capsys, [str(tmp_path)], "cannot be read (Permission denied)")


def test_any_other_surprise_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug\nwith \x1b[31mtwo lines")

    monkeypatch.setattr("lightning_lossguard.cli.load", explode)
    assert main(["check", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "lossguard: unexpected error (RuntimeError: a bug with \\x1b[31mtwo lines); please report this\n"
    )
    assert captured.out == ""


def test_no_traceback_from_a_subprocess_for_every_hostile_file_at_once(tmp_path: Path) -> None:
    report_with(tmp_path / "a", '{"schema_version": 2, "global_step": 1e400}')
    report_with(tmp_path / "b", '{"schema_version": 2, "global_step": ' + "1" * 5000 + "}")
    report_with(tmp_path / "c", "[" * 50_000)
    loop = tmp_path / "d" / "lossguard.json"
    loop.parent.mkdir()
    loop.symlink_to(loop)
    result = subprocess.run(
        [sys.executable, "-m", "lightning_lossguard.cli", "check", "--all-runs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 4, result.stderr


def test_an_unwritable_junit_file_exits_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_report(tmp_path / "run" / "lossguard.json", [], "finished", 1)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["check", str(path), "--junit", str(blocker / "junit.xml")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ERROR {blocker / 'junit.xml'}: cannot write the JUnit file")


def test_the_command_imports_no_torch_lightning_or_numpy() -> None:
    heavy = ("torch", "lightning", "numpy", "tensorboard", "tqdm")
    code = f"import sys, lightning_lossguard.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
