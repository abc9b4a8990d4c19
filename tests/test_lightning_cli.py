"""LossGuard configured from YAML through a real ``LightningCLI`` run (jsonargparse reads its signature)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_lossguard import LossGuard, LossGuardAlarm
from tests.scripts.tiny_cli import TinyData, TinyModel

CONFIG = """\
seed_everything: 0
model:
  lr: {lr}
trainer:
  max_steps: {max_steps}
  accelerator: cpu
  devices: 1
  default_root_dir: {root}
  log_every_n_steps: 5
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  callbacks:
    - class_path: lightning_lossguard.LossGuard
      init_args:
        fail_on: {fail_on}
        report_every: 5
        verbose: false
        suppress: [loss_plateau]
        severity: {{loss_oscillation: error}}
        thresholds:
          exploding_gradients:
            spike_factor: 20
"""


def run_cli(tmp_path: Path, lr: float = 0.05, max_steps: int = 20, fail_on: str = "error") -> LightningCLI:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(lr=lr, max_steps=max_steps, root=json.dumps(str(tmp_path)), fail_on=fail_on))
    return LightningCLI(
        TinyModel, TinyData, args=["fit", "--config", str(config)], run=True, save_config_kwargs={"overwrite": True}
    )


def guard_of(cli: LightningCLI) -> LossGuard:
    [guard] = [c for c in cli.trainer.callbacks if isinstance(c, LossGuard)]  # type: ignore[attr-defined]
    return guard


def test_the_yaml_init_args_reach_the_callback_and_the_run_writes_its_report(tmp_path: Path) -> None:
    cli = run_cli(tmp_path)
    guard = guard_of(cli)
    assert guard.fail_on == "error" and guard.report_every == 5 and guard.verbose is False
    assert guard.suppress == ["loss_plateau"] and guard.severity_overrides == {"loss_oscillation": "error"}
    assert guard.thresholds == {"exploding_gradients": {"spike_factor": 20.0}}
    assert cli.trainer.global_step == 20
    assert guard.report_path is not None
    report_path = Path(guard.report_path)
    assert report_path.parent == Path(cli.trainer.log_dir)  # type: ignore[arg-type]
    report = json.loads(report_path.read_text())
    assert report["status"] == "finished" and report["fail_on"] == "error" and report["global_step"] == 20
    # LightningCLI saves the resolved config next to it: the callback round-trips through YAML.
    saved = (report_path.parent / "config.yaml").read_text()
    assert "lightning_lossguard.LossGuard" in saved and "spike_factor: 20" in saved


def test_fail_on_from_yaml_stops_an_exploding_run(tmp_path: Path) -> None:
    with pytest.raises(LossGuardAlarm, match="exploding_gradients") as raised:
        run_cli(tmp_path, lr=0.5, max_steps=100)
    assert raised.value.report_path is not None
    report = json.loads(Path(raised.value.report_path).read_text())
    assert report["status"] == "alarm" and report["global_step"] < 100


def test_an_invalid_init_arg_is_rejected_by_the_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(tmp_path, fail_on="fatal")
    assert exited.value.code != 0
    assert "fail_on" in capsys.readouterr().err
    assert not list(tmp_path.rglob("lossguard.json"))
