"""Real two-process FSDP2 on CPU (gloo): ``ModelParallelStrategy`` with ``fully_shard``, launching
``examples/fsdp2.py``. Gradients are sharded DTensors; the norms LossGuard reports must be the unsharded model's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "fsdp2.py"
RECORD = Path(__file__).parent / "record_norms.py"


def launch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Lightning re-launches the script for rank 1; a hang would be a LossGuard bug, hence the timeout.
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(RECORD), str(EXAMPLE), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240, check=False)


def report(cwd: Path) -> dict[str, Any]:
    [path] = list(cwd.rglob("lossguard*.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def norms(cwd: Path, rank: int = 0) -> dict[int, dict[str, Any]]:
    return {row["step"]: row for row in json.loads((cwd / f"norms-rank{rank}.json").read_text())}


@pytest.mark.slow
def test_exploding_gradients_under_fsdp2_name_the_layer_with_the_unsharded_models_norms(tmp_path: Path) -> None:
    sharded = launch(tmp_path / "fsdp2", "--fault", "exploding")
    reference = launch(tmp_path / "reference", "--fault", "exploding", "--reference")
    output = sharded.stdout + sharded.stderr
    assert sharded.returncode != 0 and reference.returncode != 0  # fail_on="error" stops both runs
    assert output.count("LossGuardAlarm: LossGuard stopped") == 2, output[-3000:]  # both ranks, together
    assert "ModelParallelStrategy" not in output or "not watched" not in output
    got, want = report(tmp_path / "fsdp2"), report(tmp_path / "reference")
    [explosion] = got["diagnoses"]
    [expected] = want["diagnoses"]
    assert explosion["code"] == expected["code"] == "exploding_gradients"
    assert explosion["subject"] == expected["subject"] == "net.2" and "layer net.2 grew most" in explosion["message"]
    assert explosion["step"] == expected["step"] and got["coverage"]["complete"]
    for name, value in expected["evidence"].items():
        assert explosion["evidence"][name] == pytest.approx(value, rel=1e-3), name

    rank0, rank1, single = norms(tmp_path / "fsdp2", 0), norms(tmp_path / "fsdp2", 1), norms(tmp_path / "reference")
    assert rank0 == rank1  # every rank combined the same shards into the same numbers
    assert set(rank0) == set(single) and len(single) >= 100
    layers = sorted(single[0]["layers"])
    assert layers == ["net.0", "net.2", "net.4"]
    steps = sorted(single)
    mine = np.array([[rank0[s]["total"], *(rank0[s]["layers"][n] for n in layers)] for s in steps])
    theirs = np.array([[single[s]["total"], *(single[s]["layers"][n] for n in layers)] for s in steps])
    # float32 reductions in another order; the explosion amplifies them in its last steps (1e-4 relative at most)
    np.testing.assert_allclose(mine, theirs, rtol=1e-4)
    np.testing.assert_allclose(mine[:100], theirs[:100], rtol=2e-6)  # before the learning rate jumps


@pytest.mark.slow
def test_a_healthy_fsdp2_run_is_quiet_and_fully_watched(tmp_path: Path) -> None:
    proc = launch(tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    data = report(tmp_path)
    assert data["status"] == "finished" and data["coverage"] == {"complete": True, "gaps": []}
    assert [d for d in data["diagnoses"] if d["severity"] in ("warning", "error")] == []
    assert output.count("LossGuard no problems found") == 1  # rank 0 prints, rank 1 stays quiet
    assert norms(tmp_path, 0) == norms(tmp_path, 1) and len(norms(tmp_path)) == 150
