"""Real two-process DDP on CPU (gloo), launching ``examples/ddp.py``: one report, one console line, every
rank stops together; the rank a NaN started on, a straggling rank, a stalled step."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    assert diagnosis["evidence"]["first_rank"] == 1 and diagnosis["evidence"]["ranks_affected"] == 1
    assert diagnosis["evidence"]["ranks"] == 2
    assert "on rank 1 only" in diagnosis["message"] and "rank 1's batch of step 25" in diagnosis["message"]
    assert data["global_step"] < 100


@pytest.mark.slow
def test_healthy_ddp_run_has_no_alarm_and_one_report(tmp_path: Path) -> None:
    proc = launch(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [report] = list(tmp_path.rglob("lossguard*.json"))
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["diagnoses"] == []
    assert (proc.stdout + proc.stderr).count("LossGuard no problems found") == 1


@pytest.mark.slow
def test_a_rank_with_a_slow_data_loader_is_named_with_its_phase(tmp_path: Path) -> None:
    proc = launch(tmp_path, "--slow-data-on-rank", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]  # a warning: fail_on="error" lets the run finish
    [report] = list(tmp_path.rglob("lossguard*.json"))
    [diagnosis] = json.loads(report.read_text())["diagnoses"]
    evidence = diagnosis["evidence"]
    assert diagnosis["code"] == "rank_straggler" and diagnosis["severity"] == "warning"
    assert evidence["slow_rank"] == 1 and evidence["ranks_slow"] == 1 and evidence["intervals"] >= 3
    assert evidence["data_ms"] >= 45 and evidence["data_others_ms"] < 20  # 50 ms of sleep per batch on rank 1
    assert diagnosis["message"].startswith("Rank 1 is persistently slower") and "data loading" in diagnosis["message"]


def read(report: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    return data


@pytest.mark.slow
def test_a_step_blocked_on_one_rank_is_reported_while_stuck_and_the_run_then_finishes(tmp_path: Path) -> None:
    args = ["--stall-on-rank", "1", "--stall-seconds", "10", "--stall-timeout", "3", "--fail-on", "none"]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: dict[str, Any] | None = None
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline and seen is None:
            for report in tmp_path.rglob("lossguard.json"):
                data = read(report)
                if data and any(d["code"] == "stalled_training" for d in data["diagnoses"]):
                    seen = data
            time.sleep(0.2)
        running = proc.poll() is None  # the file appeared while the step was still blocked
        output, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert seen is not None and running, output[-3000:]
    [early] = seen["diagnoses"]
    assert seen["status"] == "running" and early["evidence"]["resumed"] == 0
    assert 3 <= early["evidence"]["stalled_s"] < 10 and "still stalled" in early["message"]
    assert "at step 25 in backward" in early["message"]  # rank 0 waits for rank 1 in the gradient all-reduce
    assert "at the last report (step 19) rank 0 loss" in early["message"] and "rank 1 loss" in early["message"]

    assert proc.returncode == 0, output[-3000:]
    [report] = list(tmp_path.rglob("lossguard.json"))
    data = json.loads(report.read_text())
    assert data["status"] == "finished" and data["global_step"] == 100  # the run went on to its end
    [final] = data["diagnoses"]
    assert final["code"] == "stalled_training" and final["evidence"]["resumed"] == 1
    assert final["evidence"]["stalled_s"] >= 9.5 and "Training stalled for" in final["message"]
    assert any("stalled_training at step 25" in note and "backward" in note for note in data["notes"])
    # every rank printed its own stacks: rank 1's show where it really is
    assert "LossGuard rank 0: no training step completed" in output
    assert "LossGuard rank 1: no training step completed" in output and "time.sleep(self.stall_s)" in output
