"""The CI gate: the ``lossguard`` command and the ``examples/ci_smoke.py`` training it gates.

Real scripts run in subprocesses (``sys.executable``, no PATH lookup); the detailed output formats are
checked in-process through ``main()`` on reports written with ``write_report``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lightning_lossguard import Diagnosis, Severity, __version__
from lightning_lossguard.cli import main
from lightning_lossguard.report.cost import OVER_BUDGET_OPENING
from lightning_lossguard.report.json_report import write_report
from tests.conftest import events, text_of

ROOT = Path(__file__).resolve().parents[1]
ANNOTATION = re.compile(r"^::(error|warning) title=LossGuard [A-Za-z0-9_%]+::[^\r\n]* \(step \d+\)$")

Smoke = dict[str, tuple[subprocess.CompletedProcess[str], Path]]
"""The smoke runs by name: the finished process and its log directory."""

EXPLODING = Diagnosis(
    "exploding_gradients",
    Severity.ERROR,
    9,
    "The gradient norm jumped 100% past its ceiling.\nThen it\rwent NaN.",
    {"ratio": 8.5e4},
    ["Clip gradients: Trainer(gradient_clip_val=1.0).", "Lower the learning rate."],
    "net.0",
)
PLATEAU = Diagnosis("loss_plateau", Severity.WARNING, 120, "The loss never fell.", {"drop": 0.01}, ["Raise the LR."])
SHIFT = Diagnosis("loss_scale_shift", Severity.INFO, 50, "The loss level jumped.", {"factor": 12.0}, ["Re-tune."])


def run_all(
    commands: Sequence[Sequence[str]], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands concurrently (each is mostly interpreter start-up) and wait for all."""
    environment = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    environment.update(env or {})

    def one(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300)

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(one, commands))


def lossguard(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_lossguard.cli", *args]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    """``examples/ci_smoke.py`` run twice, with and without ``--fault``, each in its own log directory."""
    root = tmp_path_factory.mktemp("smoke")
    script = str(ROOT / "examples" / "ci_smoke.py")
    faulty, healthy = run_all(
        [
            [sys.executable, script, "--fault", "--log-dir", str(root / "faulty")],
            [sys.executable, script, "--max-steps", "40", "--log-dir", str(root / "healthy")],
        ]
    )
    return {"faulty": (faulty, root / "faulty"), "healthy": (healthy, root / "healthy")}


@pytest.fixture(autouse=True)
def _not_in_github_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite itself may run in GitHub Actions: annotations only where a test asks for them.
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at a width that keeps remedies on one line


def reports(tmp_path: Path) -> dict[str, Path]:
    """Three runs under ``tmp_path/logs``: one with an error, one with a warning, one clean."""
    logs = tmp_path / "logs"
    return {
        "error": write_report(logs / "a" / "version_0" / "lossguard.json", [EXPLODING, SHIFT], "alarm", 9, [], "error"),
        "warning": write_report(logs / "b" / "version_0" / "lossguard.json", [PLATEAU, SHIFT], "finished", 300),
        "clean": write_report(logs / "c" / "version_0" / "lossguard.json", [], "finished", 300, ["too short"]),
    }


# -- the smoke training and the command, as CI runs them ----------------------------------------------------
def test_a_faulty_smoke_run_exits_non_zero_and_still_leaves_its_reports(smoke: Smoke) -> None:
    result, log_dir = smoke["faulty"]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "LossGuard stopped training" in result.stderr and "exploding_gradients" in result.stderr
    [report_file] = log_dir.rglob("lossguard.json")
    report = json.loads(report_file.read_text())
    assert report["status"] == "alarm" and report["fail_on"] == "error"
    assert "exploding_gradients" in [d["code"] for d in report["diagnoses"]]
    assert report["global_step"] < 80  # stopped early, not run to max_steps
    markdown = text_of(events(report_file.parent), "lossguard/diagnoses/text_summary")
    assert markdown and "exploding_gradients" in markdown[-1] and "gradient_clip_val" in markdown[-1]


def test_a_healthy_smoke_run_exits_zero(smoke: Smoke) -> None:
    result, log_dir = smoke["healthy"]
    assert result.returncode == 0, result.stderr[-3000:]
    [report_file] = log_dir.rglob("lossguard.json")
    report = json.loads(report_file.read_text())
    assert report["status"] == "finished" and report["global_step"] == 40 and report["counts"]["error"] == 0


def test_check_in_a_subprocess_exits_1_0_and_2_and_annotates_in_github_actions(smoke: Smoke, tmp_path: Path) -> None:
    faulty, healthy = smoke["faulty"][1], smoke["healthy"][1]
    junit = tmp_path / "junit.xml"
    failing, passing, missing = run_all(
        [
            lossguard("check", str(faulty), "--junit", str(junit)),
            lossguard("check", str(healthy)),
            lossguard("check", str(tmp_path / "nowhere")),
        ],
        env={"GITHUB_ACTIONS": "true"},
    )
    assert failing.returncode == 1, failing.stderr[-3000:]
    assert re.search(r"^FAIL .*lossguard\.json", failing.stdout, re.M)
    annotations = [line for line in failing.stdout.splitlines() if line.startswith("::")]
    assert annotations and all(ANNOTATION.match(line) for line in annotations)
    assert any(line.startswith("::error title=LossGuard exploding_gradients::") for line in annotations)
    failures = ET.parse(junit).getroot().findall("./testsuite/testcase/failure")
    assert "exploding_gradients" in [f.get("type") for f in failures]

    assert passing.returncode == 0, passing.stderr[-3000:]
    assert re.search(r"^PASS .*lossguard\.json", passing.stdout, re.M) and "::" not in passing.stdout

    assert missing.returncode == 2
    assert f"{tmp_path / 'nowhere'}: no such file or directory" in missing.stderr


# -- check --------------------------------------------------------------------------------------------------
def test_check_gives_a_verdict_per_run_and_exit_1_when_any_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = reports(tmp_path)
    assert main(["check", str(tmp_path / "logs")]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"^FAIL +{re.escape(str(files['error']))} +\(alarm at step 9\)", out, re.M)
    assert re.search(rf"^PASS +{re.escape(str(files['warning']))} .*\(0 errors, 1 warning, 1 info\)", out, re.M)
    assert re.search(rf"^PASS +{re.escape(str(files['clean']))} ", out, re.M)
    assert "error exploding_gradients at step 9" in out and "→ Clip gradients" in out
    assert "loss_plateau" not in out  # below the level: counted, not listed
    assert "1 of 3 report(s) at or above error" in out


def test_fail_on_warning_fails_what_fail_on_error_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = reports(tmp_path)
    assert main(["check", str(files["warning"])]) == 0
    assert main(["check", str(files["warning"]), "--fail-on", "error"]) == 0
    assert main(["check", "--fail-on", "warning", str(files["warning"])]) == 1
    assert "warning loss_plateau at step 120" in capsys.readouterr().out
    assert main(["check", str(files["clean"]), "--fail-on", "warning"]) == 0
    # An info diagnosis never fails the check.
    info_only = write_report(tmp_path / "info" / "lossguard.json", [SHIFT], "finished", 10)
    assert main(["check", str(info_only), "--fail-on", "warning"]) == 0


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{truncated", "not valid JSON"),
        ('{"diagnoses": []}', "not a LossGuard report (no schema_version)"),
        ('{"schema_version": 3, "diagnoses": []}', "schema_version 3 was written by a newer LossGuard"),
        ('{"schema_version": 1, "diagnoses": [{"code": "x"}]}', "malformed diagnosis entry"),
    ],
)
def test_an_unreadable_report_exits_2_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, reason: str
) -> None:
    bad = tmp_path / "run" / "lossguard.json"
    bad.parent.mkdir()
    bad.write_text(content)
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and reason in err
    assert main(["report", str(bad)]) == 2


def test_no_report_exits_2_even_next_to_a_failing_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) == 2
    assert f"no lossguard.json under {empty}" in capsys.readouterr().err
    files = reports(tmp_path)
    assert main(["check", str(files["error"]), str(empty)]) == 2
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and f"no lossguard.json under {empty}" in captured.err


def test_a_report_given_twice_is_judged_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = reports(tmp_path)
    assert main(["check", str(files["error"]), str(files["error"].parent)]) == 1
    assert capsys.readouterr().out.count("FAIL") == 1


# -- GitHub annotations -------------------------------------------------------------------------------------
def test_github_actions_annotations_are_escaped_workflow_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = reports(tmp_path)
    odd = Diagnosis("odd:code,x", Severity.WARNING, 3, "50% off", {}, [])
    odd_file = write_report(tmp_path / "logs" / "d" / "lossguard.json", [odd], "finished", 3)
    assert main(["check", str(tmp_path / "logs")]) == 1
    assert "::" not in capsys.readouterr().out  # only inside GitHub Actions

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["check", str(tmp_path / "logs"), "--fail-on", "warning"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")]
    assert all(ANNOTATION.match(line) for line in lines), lines
    assert lines == [
        "::error title=LossGuard exploding_gradients::The gradient norm jumped 100%25 past its ceiling.%0A"
        "Then it%0Dwent NaN. (step 9)",
        "::warning title=LossGuard loss_plateau::The loss never fell. (step 120)",
        "::warning title=LossGuard odd%3Acode%2Cx::50%25 off (step 3)",
    ]
    assert main(["check", str(files["error"]), str(odd_file)]) == 1  # default level: the warning is not annotated
    assert [line.split("::")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("::")] == [
        "error title=LossGuard exploding_gradients"
    ]
    # A path without a report is annotated too: the job page says why the gate failed.
    assert main(["check", str(tmp_path / "no%where")]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"::error title=LossGuard report::{tmp_path / 'no%25where'}: no such file or directory"
    ]


# -- JUnit --------------------------------------------------------------------------------------------------
def test_junit_has_a_suite_per_report_a_failure_per_diagnosis_at_the_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = reports(tmp_path)
    junit = tmp_path / "out" / "lossguard-junit.xml"
    assert main(["check", str(tmp_path / "logs"), str(tmp_path / "nowhere"), "--junit", str(junit)]) == 2
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [str(files["error"]), str(files["warning"]), str(files["clean"]), str(tmp_path / "nowhere")]

    error = suites[str(files["error"])]
    assert (error.get("tests"), error.get("failures"), error.get("errors")) == ("2", "1", "0")
    props = {p.get("name"): p.get("value") for p in error.findall("./properties/property")}
    assert props["status"] == "alarm" and props["fail_on"] == "error"
    exploding, shift = error.findall("testcase")
    assert exploding.get("name") == "exploding_gradients (net.0)" and exploding.get("classname") == (
        "lossguard." + re.sub(r"[^A-Za-z0-9_]+", "_", str(files["error"].parent)).strip("_")
    )
    failure = exploding.find("failure")
    assert failure is not None and failure.get("type") == "exploding_gradients"
    assert failure.get("message") == EXPLODING.message
    text = failure.text or ""
    assert "at step 9" in text and "ratio=85000" in text
    assert "1. Clip gradients: Trainer(gradient_clip_val=1.0)." in text and "2. Lower the learning rate." in text
    assert shift.find("failure") is None and "loss_scale_shift" in (shift.findtext("system-out") or "")

    warning = suites[str(files["warning"])]
    assert warning.get("failures") == "0" and len(warning.findall("testcase")) == 2  # warnings pass at error
    [clean] = suites[str(files["clean"])].findall("testcase")
    assert clean.get("name") == "no diagnoses" and list(clean) == []
    [missing] = suites[str(tmp_path / "nowhere")].findall("testcase")
    missing_error = missing.find("error")
    assert missing_error is not None and "no such file or directory" in (missing_error.get("message") or "")

    assert main(["check", str(tmp_path / "logs"), "--fail-on", "warning", "--junit", str(junit)]) == 1
    assert ET.parse(junit).getroot().get("failures") == "2"


# -- report -------------------------------------------------------------------------------------------------
def test_report_as_a_table_shows_every_remedy_and_the_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = reports(tmp_path)
    assert main(["report", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    for path in files.values():
        assert str(path) in out
    assert "1 error, 0 warnings, 1 info" in out
    for text in ("exploding_gradients", "1. Clip gradients", "2. Lower the learning rate.", "ratio=85000"):
        assert text in out
    assert "about: net.0" in out and "no diagnoses" in out and "note: too short" in out


def test_report_as_json_is_a_list_of_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = reports(tmp_path)
    assert main(["report", str(tmp_path / "logs"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in data] == [str(p) for p in files.values()]
    first = data[0]
    assert (first["schema_version"], first["status"], first["global_step"]) == (2, "alarm", 9)
    assert first["counts"] == {"info": 1, "warning": 0, "error": 1}
    assert first["diagnoses"][0] == EXPLODING.to_dict()
    assert main(["report", str(tmp_path / "nowhere"), "--format", "json"]) == 2
    assert json.loads(capsys.readouterr().out) == []  # stdout stays valid JSON


def test_report_as_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = reports(tmp_path)
    assert main(["report", str(files["error"]), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# LossGuard: `{files['error']}`")
    assert "Status **alarm** at step 9." in out and "exploding_gradients" in out
    assert "| step | severity | code |" in out and "**What to do**" in out and "2. Lower the learning rate." in out


COST = {
    "budget": 0.01,
    "share": 0.008,
    "gradient_stride": 6.0,
    "report_every_batches": 300.0,
    "run_share": 0.0083,
    "own_seconds": 0.215,
    "batches": 1500.0,
    "step_ms": 18.9,
}


def test_report_says_what_lossguard_cost_the_run_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    within = write_report(tmp_path / "within" / "lossguard.json", [], "finished", 1500, cost=COST)
    over_cost = {**COST, "run_share": 0.05, "report_floor": 10.0, "planned_steps": 1500.0}
    why = f"{OVER_BUDGET_OPENING}5% of the training step time, over its 1% budget: the why, in detail."
    over = write_report(
        tmp_path / "over" / "lossguard.json", [], "finished", 1500, ["Another note.", why], cost=over_cost
    )
    line = "0.83% of the training step time (budget 1%; 215 ms in all over 1,500 training batches of 18.9 ms)"
    assert main(["report", str(within)]) == 0
    assert line in " ".join(capsys.readouterr().out.split())
    assert main(["report", str(over)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # Over budget: one cost line with the knob, the note's detail left in the report.
    assert (
        "cost: 5% of the training step time, over its 1% budget (215 ms in all over 1,500 training batches of "
        "18.9 ms): a run this short keeps 10 reports; LossGuard(report_every=375) pays less with 4" in out
    )
    assert "note: Another note." in out and "in detail" not in out
    assert main(["report", str(over), "--format", "markdown"]) == 0
    assert "the why, in detail" in capsys.readouterr().out  # the full report keeps it
    assert main(["report", str(within), "--format", "markdown"]) == 0
    assert "LossGuard's own time: 0\\.83% of the training step time (budget 1%;" in capsys.readouterr().out
    assert main(["report", str(within), str(over), "--format", "json"]) == 0
    assert [r["cost"] for r in json.loads(capsys.readouterr().out)] == [COST, over_cost]


# -- usage --------------------------------------------------------------------------------------------------
def test_version_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"lossguard {__version__}"
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "check" in out and "report" in out and "exit codes" in out
    with pytest.raises(SystemExit) as exited:
        main(["check", "--help"])
    assert "--fail-on {warning,error}" in capsys.readouterr().out
    for argv in ([], ["check"], ["check", "x", "--fail-on", "info"], ["check", "x", "--bogus"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv


def test_report_as_json_lists_the_cause_first_whatever_the_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nan = Diagnosis("nonfinite_loss", Severity.ERROR, 9, "The loss became NaN.", {"first_bad_step": 9.0}, ["Fix it."])
    # Written newest first and the symptom before its cause at the same step, as an older writer could have.
    write_report(tmp_path / "run" / "lossguard.json", [PLATEAU, nan, SHIFT, EXPLODING], "alarm", 120)
    assert main(["report", str(tmp_path / "run"), "--format", "json"]) == 0
    [data] = json.loads(capsys.readouterr().out)
    assert [d["code"] for d in data["diagnoses"]] == [
        "exploding_gradients",  # step 9: the explosion caused the NaN
        "nonfinite_loss",
        "loss_scale_shift",  # step 50
        "loss_plateau",  # step 120
    ]


def test_report_of_a_failed_fit_with_nothing_diagnosed_never_says_nothing_was_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = "The fit stopped at step 35 on RuntimeError: user bug."
    failed = write_report(tmp_path / "a" / "version_0" / "lossguard.json", [], "failed", 35, [note])
    assert main(["report", str(failed)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "failed at step 35" in out and "no diagnoses before the fit failed" in out and note in out
    assert "found nothing wrong" not in out
    assert main(["report", str(failed), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "## LossGuard: the fit failed" in markdown and "found nothing wrong" not in markdown
