"""Real two-process DDP on CPU (gloo), launching ``examples/ddp.py``: one report, one console line, every
rank stops together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "ddp.py"


def launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Lightning re-launches the script for rank 1; a hang would be a LossGuard bug, hence the timeout.
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_and_is_reported_once(tmp_path: Path) -> None:
    proc = launch(tmp_path, "--nan-on-rank", "1")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert output.count("LossGuard ERROR nonfinite_loss") == 1  # rank 0 prints, rank 1 stays quiet
    assert output.count("LossGuardAlarm: LossGuard stopped") == 2  # both ranks raised, in the same hook
    [report] = list(tmp_path.rglob("lossguard*.json"))
    data = json.loads(report.read_text())
    assert data["status"] == "alarm"
    [diagnosis] = data["diagnoses"]
    assert diagnosis["code"] == "nonfinite_loss" and diagnosis["evidence"]["first_step"] == 25
    assert data["global_step"] < 100


@pytest.mark.slow
def test_healthy_ddp_run_has_no_alarm_and_one_report(tmp_path: Path) -> None:
    proc = launch(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [report] = list(tmp_path.rglob("lossguard*.json"))
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["diagnoses"] == []
    assert (proc.stdout + proc.stderr).count("LossGuard no problems found") == 1
