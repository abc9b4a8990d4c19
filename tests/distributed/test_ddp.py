"""Real two-process DDP on CPU (gloo): one report, one console line, every rank stops together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_run.py")


def launch(mode: str, out: Path) -> subprocess.CompletedProcess[str]:
    # Lightning re-launches the script for rank 1; a hang would be a LossGuard bug, hence the timeout.
    return subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out)], capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.slow
def test_nan_on_one_rank_with_fail_on_stops_every_rank_and_is_reported_once(tmp_path: Path) -> None:
    proc = launch("fail", tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert output.count("LossGuard ERROR nonfinite_loss") == 1  # rank 0 prints, rank 1 stays quiet
    assert "[rank0]" in output and "[rank1]" in output and output.count("LossGuardAlarm: LossGuard stopped") == 2
    [report] = list(tmp_path.rglob("lossguard*.json"))
    data = json.loads(report.read_text())
    assert data["status"] == "alarm"
    [diagnosis] = data["diagnoses"]
    assert diagnosis["code"] == "nonfinite_loss" and diagnosis["evidence"]["first_step"] == 25
    assert data["global_step"] < 80


@pytest.mark.slow
def test_healthy_ddp_run_has_no_alarm_and_one_report(tmp_path: Path) -> None:
    proc = launch("healthy", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANK 0 DIAGNOSES []" in proc.stdout and "RANK 1 DIAGNOSES []" in proc.stdout
    [report] = list(tmp_path.rglob("lossguard*.json"))
    assert json.loads(report.read_text())["status"] == "finished"
    assert proc.stdout.count("LossGuard no problems found") == 1
