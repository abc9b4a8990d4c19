"""The quickstart example as a newcomer runs it: the bug is diagnosed, and the fix the docs give makes it healthy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _quickstart(tmp_path: Path, *args: str) -> tuple[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [report] = list(tmp_path.glob("lightning_logs/version_*/lossguard.json"))
    return done.stdout, json.loads(report.read_text())


@pytest.mark.slow
def test_the_quickstart_bug_is_diagnosed_as_instability(tmp_path: Path) -> None:
    out, report = _quickstart(tmp_path)
    errors = [d for d in report["diagnoses"] if d["severity"] == "error"]
    assert errors and errors[0]["code"] in {"loss_divergence", "exploding_gradients"}
    assert errors[0]["step"] >= 100  # the learning rate jumps at step 100, not before
    assert "no problems found" not in out


@pytest.mark.slow
def test_the_fix_the_quickstart_gives_makes_the_run_healthy(tmp_path: Path) -> None:
    # docs/quickstart.md, "Next steps": the run without its learning-rate jump.
    assert "python examples/quickstart.py --no-jump" in (ROOT / "docs" / "quickstart.md").read_text()
    out, report = _quickstart(tmp_path, "--no-jump")
    assert [d for d in report["diagnoses"] if d["severity"] in ("warning", "error")] == []
    assert "no problems found" in out
