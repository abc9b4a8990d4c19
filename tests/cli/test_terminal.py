"""The console and the command for a person in a hurry: nothing cut in 80 columns or in a pipe, and live
diagnosis lines never glued to (or overdrawn by) a progress bar, checked on a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from tqdm import tqdm

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.catalog import CATALOG
from lightning_lossguard.cli import MAX_LISTED, main
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.json_report import write_report
from tests.cli.terminal import run_in_terminal, screen

ROOT = Path(__file__).resolve().parents[2]
CODES = ("exploding_gradients", "val_loss_rising", "output_range_mismatch", "nonfinite_loss", "dead_gradients")


def words(text: str) -> str:
    return " ".join(text.split())


def catalog_report(tmp_path: Path) -> tuple[Path, list[Diagnosis]]:
    """Diagnoses with the catalog's (long) remedies, a long layer name and many evidence numbers."""
    diagnoses = [
        Diagnosis(
            code,
            CATALOG[code].severity,
            10 * i + 7,
            CATALOG[code].meaning,
            {f"evidence_number_{k}": 1234.5678 * k for k in range(6)},
            list(CATALOG[code].remedies),
            "model.encoder.layers.11.self_attention.out_proj",
        )
        for i, code in enumerate(CODES)
    ]
    return write_report(tmp_path / "logs" / "version_0" / "lossguard.json", diagnoses, "finished", 90), diagnoses


def command(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "FORCE_COLOR")}
    env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "lightning_lossguard.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_report_in_80_columns_through_a_pipe_shows_every_remedy_and_evidence_whole(tmp_path: Path) -> None:
    path, diagnoses = catalog_report(tmp_path)
    result = command("report", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines if line.startswith(("│", "┃", "└", "┏"))) and "…" not in result.stdout
    # The text column of the table, its wrapped lines joined: every remedy and the evidence read whole.
    column = words(" ".join(line.split("│")[3] for line in lines if line.startswith("│")))
    for d in diagnoses:
        assert words(d.message) in column
        assert words(d.evidence_text()) in column
        for i, remedy in enumerate(d.remedies, start=1):
            assert f"{i}. {words(remedy)}" in column, remedy


def test_check_in_80_columns_through_a_pipe_keeps_each_line_whole(tmp_path: Path) -> None:
    path, diagnoses = catalog_report(tmp_path)
    result = command("check", str(path), "--fail-on", "warning")
    assert result.returncode == 1, result.stderr
    for d in diagnoses:
        assert f"  {d.severity.value} {d.code} at step {d.step}: {d.message}" in result.stdout.splitlines()
        assert f"    → {d.remedies[0]}" in result.stdout.splitlines()


# -- progress bars ------------------------------------------------------------------------------------------
class FakeTQDMProgressBar:
    """What the reporter looks for in Lightning's TQDMProgressBar (duck typing keeps Lightning out of it)."""

    def init_train_tqdm(self) -> None: ...


NAN = Diagnosis("nonfinite_loss", Severity.ERROR, 109, "The training loss became NaN.", {}, ["Inspect the batch."])


def _live_line_next_to_a_tqdm_bar(progress_bar: object) -> list[str]:
    out = io.StringIO()
    bar = tqdm(total=128, file=out, ncols=60, mininterval=0, miniters=1, desc="Epoch 0")
    bar.update(109)
    reporter = ConsoleReporter(Console(file=out, width=100, color_system=None), progress_bar=progress_bar)
    reporter.new_diagnoses([NAN])
    bar.update(1)
    reporter.summary([NAN], [], None)
    bar.close()
    return screen(out.getvalue())


def test_live_lines_and_the_summary_are_not_glued_to_a_tqdm_bar() -> None:
    lines = _live_line_next_to_a_tqdm_bar(FakeTQDMProgressBar())
    assert "LossGuard ERROR nonfinite_loss at step 109: The training loss became NaN." in lines
    assert "  → Inspect the batch." in lines
    start = lines.index(next(line for line in lines if "LossGuard summary" in line))
    end = lines.index(next(line for line in lines[start:] if line.startswith("└")))
    table = lines[start : end + 1]
    assert len(table) == 7 and not any("it/s" in line or "%|" in line for line in table), table
    assert re.match(r"Epoch 0: +86%\|.* 110/128 ", lines[-1])  # the bar drawn again below the summary
    # Without the bar, the same print continues the bar's line: what the progress_bar argument prevents.
    glued = _live_line_next_to_a_tqdm_bar(None)
    assert not any(line.startswith("LossGuard ERROR") for line in glued)
    assert any(re.match(r"Epoch 0: +85%\|.*LossGuard ERROR nonfinite_loss", line) for line in glued), glued


def _fit_in_a_terminal(tmp_path: Path, bar: str) -> tuple[list[str], list[dict[str, object]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    status, output = run_in_terminal(
        [sys.executable, "-m", "tests.scripts.progress_fit", bar, str(tmp_path)], ROOT, env, columns=400
    )
    assert status == 0, output[-3000:]
    [report] = tmp_path.rglob("lossguard.json")
    diagnoses = json.loads(report.read_text())["diagnoses"]
    assert diagnoses, output[-3000:]
    return screen(output), diagnoses


def _assert_whole_lines(lines: list[str], diagnoses: list[dict[str, object]]) -> None:
    for d in diagnoses:
        live = f"LossGuard {str(d['severity']).upper()} {d['code']} at step {d['step']}: {d['message']}"
        assert live in lines, (live, [line for line in lines if str(d["code"]) in line])
        remedies = d["remedies"]
        assert isinstance(remedies, list)
        assert lines[lines.index(live) + 1] == f"  → {remedies[0]}"
    bar_text = re.compile(r"it/s|%\||Epoch")
    for line in lines:
        if "LossGuard" in line or line.startswith(("│", "┃", "└", "┏", "├", "┡")):
            assert not bar_text.search(line), line
    title = next(line for line in lines if "LossGuard summary:" in line)
    assert title.strip().startswith("LossGuard summary:"), title


@pytest.mark.slow
def test_a_fit_under_tqdm_prints_each_diagnosis_whole_on_its_own_line(tmp_path: Path) -> None:
    lines, diagnoses = _fit_in_a_terminal(tmp_path, "tqdm")
    _assert_whole_lines(lines, diagnoses)


@pytest.mark.slow
def test_a_fit_under_rich_prints_each_diagnosis_whole_on_its_own_line(tmp_path: Path) -> None:
    lines, diagnoses = _fit_in_a_terminal(tmp_path, "rich")
    _assert_whole_lines(lines, diagnoses)


def test_a_report_with_thousands_of_diagnoses_lists_the_first_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    many = [Diagnosis("loss_plateau", Severity.WARNING, step, "Flat.", {}, ["Raise the LR."]) for step in range(3000)]
    path = write_report(tmp_path / "lossguard.json", many[::-1], "finished", 3000)
    assert main(["check", str(path), "--fail-on", "warning"]) == 1
    out = capsys.readouterr().out
    listed = re.findall(r"^  warning loss_plateau at step (\d+):", out, re.M)
    assert listed == [str(step) for step in range(MAX_LISTED)]  # cause first: the earliest
    assert f"... and {3000 - MAX_LISTED} more (lossguard report --format json lists them all)" in out
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3000 warnings" in out and f"... and {3000 - MAX_LISTED} more" in out
    assert main(["report", str(path), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["diagnoses"]) == 3000
