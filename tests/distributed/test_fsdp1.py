"""FSDP1: each rank holds a slice of every flattened parameter. LossGuard combines the slices' norms into the
unsharded model's. Lightning's ``FSDPStrategy`` needs CUDA, so the end-to-end test needs two GPUs; on CPU the same
combination is checked on torch's ``FullyShardedDataParallel`` directly (gloo, two processes, no Lightning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.distributed.test_fsdp2 import EXAMPLE, launch, norms, report

PROBE = Path(__file__).parent / "fsdp1_probe.py"


def probe(tmp_path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(out), *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict = json.loads(out.read_text())  # type: ignore[type-arg]
    return data


@pytest.mark.slow
def test_original_parameters_sliced_by_fsdp1_get_the_norms_of_the_whole_parameters(tmp_path: Path) -> None:
    data = probe(tmp_path)
    names = data["names"]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]  # no FSDP wrapper segment
    assert all(len(shape) == 1 for shape in data["shapes"]) and [0] in data["shapes"]  # 1-D slices, some empty here
    expected = [[step[n] for n in names] for step in data["expected"]]
    np.testing.assert_allclose(data["measured"], expected, rtol=1e-5)
    np.testing.assert_allclose(data["total"], [step["total"] for step in data["expected"]], rtol=1e-5)
    assert all(r > 0 for r in data["update_ratio"])  # every parameter sampled, also where a rank holds none of it


@pytest.mark.slow
def test_flat_parameters_of_fsdp1_get_the_norm_of_everything_they_hold(tmp_path: Path) -> None:
    data = probe(tmp_path, "--flat")
    assert data["names"] == ["_flat_param"]
    np.testing.assert_allclose(data["total"], [step["total"] for step in data["expected"]], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="Lightning's FSDPStrategy needs two CUDA devices")
def test_lightning_fsdp_strategy_reports_the_unsharded_models_norms(tmp_path: Path) -> None:
    sharded = launch(tmp_path / "fsdp1", "--fault", "exploding", "--fsdp1", "--accelerator", "gpu")
    reference = launch(tmp_path / "reference", "--fault", "exploding", "--reference", "--accelerator", "gpu")
    assert sharded.returncode != 0 and reference.returncode != 0, (sharded.stdout + sharded.stderr)[-3000:]
    [explosion] = report(tmp_path / "fsdp1")["diagnoses"]
    [expected] = report(tmp_path / "reference")["diagnoses"]
    assert explosion["code"] == expected["code"] == "exploding_gradients" and explosion["step"] == expected["step"]
    mine, single = norms(tmp_path / "fsdp1"), norms(tmp_path / "reference")
    assert set(mine) == set(single) and EXAMPLE.exists()
    for step, row in single.items():
        assert mine[step]["total"] == pytest.approx(row["total"], rel=1e-3)
        for layer, value in row["layers"].items():
            assert mine[step]["layers"][layer] == pytest.approx(value, rel=1e-3), (step, layer)
