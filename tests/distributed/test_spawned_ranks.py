"""Strategies whose ranks are child processes (``ddp_spawn``, ``ddp_notebook``): the ``LossGuard`` the user holds
in the launching process runs no hook, yet says what rank 0 found; a rank does not abort as it exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parent / "spawn_fit.py"


def fit(tmp_path: Path, strategy: str, nan_at: int) -> dict[str, Any]:
    out = tmp_path / f"{strategy}.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), strategy, str(nan_at), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    seen: dict[str, Any] = json.loads(out.read_text())
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook"])
def test_the_launching_process_reads_what_rank_0_found(tmp_path: Path, strategy: str) -> None:
    seen = fit(tmp_path, strategy, nan_at=25)
    assert "LossGuardAlarm" in seen["raised"] and "nonfinite_loss" in seen["raised"]
    [diagnosis] = seen["diagnoses"]
    assert diagnosis["code"] == "nonfinite_loss" and diagnosis["evidence"]["first_step"] == 25
    report = json.loads(Path(seen["report_path"]).read_text())
    assert report["status"] == "alarm" and report["diagnoses"] == seen["diagnoses"]


@pytest.mark.slow
def test_a_healthy_spawned_run_ends_cleanly_with_its_notes(tmp_path: Path) -> None:
    seen = fit(tmp_path, "ddp_spawn", nan_at=-1)
    assert seen["raised"] == "" and seen["diagnoses"] == []  # no rank aborted as it exited
    assert seen["notes"] and seen["report_path"]
    assert json.loads(Path(seen["report_path"]).read_text())["notes"] == seen["notes"]
