"""LossGuard in real ``Trainer.fit`` runs on tiny models: diagnoses, reports, TensorBoard, failure paths."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.fault_zoo.run import run_scenario
from benchmarks.fault_zoo.scenarios import ZooModule, build, loader, mlp, regression_data
from lightning_lossguard import LossGuard, LossGuardAlarm
from lightning_lossguard.diagnostician import Diagnostician
from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.recorder import SignalRecorder
from tests.conftest import events, text_of, trainer


def report_of(log_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(log_dir) / "lossguard.json").read_text())


def test_exploding_gradients_reach_the_report_tensorboard_and_console(tmp_path: Path, capsys: Any) -> None:
    result = run_scenario("lr_too_high_sgd", str(tmp_path), quiet=False)
    codes = [d.code for d in result.diagnoses]
    assert "exploding_gradients" in codes
    exploding = result.diagnoses[codes.index("exploding_gradients")]
    assert exploding.subject == "net.0" and exploding.evidence["ratio"] > 10
    assert "gradient_clip_val" in exploding.remedies[0]

    report = report_of(result.log_dir)
    assert report["schema_version"] == 2 and report["status"] == "finished"
    assert [d["code"] for d in report["diagnoses"]] == codes

    acc = events(result.log_dir)
    [markdown, *_] = text_of(acc, "lossguard/diagnoses/text_summary")[-1:]
    assert "exploding_gradients" in markdown and "gradient_clip_val" in markdown and "| step |" in markdown
    assert "lossguard/diagnoses/exploding_gradients/text_summary" in acc.Tags()["tensors"]
    scalars = acc.Tags()["scalars"]
    for tag in ("lossguard/grad_norm", "lossguard/train_loss", "lossguard/loss_step_ms"):
        assert tag in scalars
    assert len(acc.Scalars("lossguard/grad_norm")) >= 3  # one point per report interval while finite
    assert "custom_scalars__config__" in acc.Tags()["tensors"]

    out = capsys.readouterr().out
    assert "ERROR exploding_gradients" in out and "LossGuard summary" in out


def test_nan_in_one_batch_is_nonfinite_loss_at_that_step(tmp_path: Path) -> None:
    result = run_scenario("nan_in_batch", str(tmp_path))
    [first, *_] = result.diagnoses
    assert first.code == "nonfinite_loss" and first.evidence["first_step"] == 60
    assert first.step <= 60 + 10  # decided within one report interval
    assert first.remedies[0].startswith("Inspect the batch") and "blew up" not in first.message


@pytest.mark.parametrize("name", ["adam_regression", "noisy_sgd"])
def test_healthy_regression_and_classification_stay_quiet(tmp_path: Path, name: str) -> None:
    result = run_scenario(name, str(tmp_path))
    assert result.alarms == [] and result.error == ""
    assert report_of(result.log_dir)["counts"] == {"info": len(result.diagnoses), "warning": 0, "error": 0}


def test_fail_on_error_stops_the_fit_after_writing_the_reports(tmp_path: Path) -> None:
    run = build("lr_too_high_sgd")
    guard = LossGuard(fail_on="error", report_every=10, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=200)
    with pytest.raises(LossGuardAlarm) as raised:
        t.fit(run.module, run.train)
    assert raised.value.diagnoses[0].severity == "error"
    assert "exploding_gradients" in str(raised.value) and "Report:" in str(raised.value)
    assert t.global_step < 200
    report = report_of(t.logger.log_dir)  # type: ignore[union-attr]
    assert report["status"] == "alarm" and report["fail_on"] == "error"
    assert text_of(events(t.logger.log_dir), "lossguard/diagnoses/text_summary")  # type: ignore[union-attr]


def test_fail_on_warning_includes_warnings_but_not_infos(tmp_path: Path) -> None:
    run = build("l2_weight_10")
    with pytest.raises(LossGuardAlarm, match="loss_term_imbalance"):
        trainer(tmp_path, [LossGuard(fail_on="warning", report_every=10, verbose=False)], max_steps=60).fit(
            run.module, run.train
        )
    run = build("l2_weight_10")
    trainer(tmp_path, [LossGuard(fail_on="error", report_every=10, verbose=False)], max_steps=60).fit(
        run.module, run.train
    )


class Crashes(ZooModule):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if batch_idx == 35:
            raise RuntimeError("user bug")
        return super().training_step(batch, batch_idx)


def test_the_report_is_written_when_training_crashes(tmp_path: Path) -> None:
    module = Crashes(mlp([16, 8, 1]), optimizer=lambda p: torch.optim.SGD(p, lr=1e-9))
    module.nan_at_batch = 12
    guard = LossGuard(report_every=20, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=100)
    with pytest.raises(RuntimeError, match="user bug"):
        t.fit(module, loader(regression_data()))
    report = report_of(t.logger.log_dir)  # type: ignore[union-attr]
    assert report["status"] == "failed"
    assert [d["code"] for d in report["diagnoses"]] == ["nonfinite_loss"]  # judged from the unreported batches


def test_a_crashed_run_without_a_diagnosis_is_not_called_problem_free(tmp_path: Path, capsys: Any) -> None:
    # It printed "no problems found." in green over a fit that had just raised.
    module = Crashes(mlp([16, 8, 1]), optimizer=lambda p: torch.optim.SGD(p, lr=1e-3))
    guard = LossGuard(report_every=20)
    t = trainer(tmp_path, [guard], max_steps=100)
    with pytest.raises(RuntimeError, match="user bug"):
        t.fit(module, loader(regression_data()))
    out = " ".join(capsys.readouterr().out.split())
    assert "no problems found" not in out and "the fit failed" in out
    note = "The fit stopped at step 35 on RuntimeError: user bug. LossGuard judged the 35 batches that ended before it."
    assert guard.notes[0] == note and note in report_of(t.logger.log_dir)["notes"]  # type: ignore[union-attr]
    [markdown] = text_of(events(t.logger.log_dir), "lossguard/diagnoses/text_summary")[-1:]  # type: ignore[union-attr]
    assert markdown.startswith("## LossGuard: the fit failed") and "nothing wrong" not in markdown, markdown


class NanInputUnderAnomalyMode(ZooModule):
    """A NaN in one input at batch 30: under Trainer(detect_anomaly=True) the backward raises before the batch ends."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if batch_idx == 30:
            x, y = batch
            batch = (x.clone().index_fill_(1, torch.tensor([0]), float("nan")), y)
        return super().training_step(batch, batch_idx)


def test_a_nan_loss_that_anomaly_mode_stops_in_its_backward_is_still_judged(tmp_path: Path) -> None:
    # The batch that raised never ended, so its loss never reached LossGuard, which judged the 30 finite batches
    # before it and said "no problems found." Under anomaly mode every batch's loss is kept until the batch ends.
    module = NanInputUnderAnomalyMode(mlp([16, 8, 1]), optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    guard = LossGuard(report_every=20, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=100, detect_anomaly=True)
    with pytest.raises(RuntimeError, match="returned nan values"):
        t.fit(module, loader(regression_data()))
    [found] = guard.diagnoses
    assert found.code == "nonfinite_loss" and found.step == 30
    assert "the 30 batches that ended before it and the loss of the one that raised" in guard.notes[0]
    assert "anomaly mode stopped the backward of that batch's non-finite loss" in guard.notes[0]
    assert report_of(t.logger.log_dir)["diagnoses"][0]["code"] == "nonfinite_loss"  # type: ignore[union-attr]


def test_suppress_and_severity_overrides_in_a_real_run(tmp_path: Path) -> None:
    run = build("l2_weight_10")
    guard = LossGuard(report_every=10, verbose=False, severity={"loss_term_imbalance": "error"})
    trainer(tmp_path, [guard], max_steps=40).fit(run.module, run.train)
    assert [d.severity.value for d in guard.diagnoses if d.code == "loss_term_imbalance"] == ["error"]
    run = build("l2_weight_10")
    guard = LossGuard(report_every=10, verbose=False, suppress=["loss_term_imbalance"])
    trainer(tmp_path, [guard], max_steps=40).fit(run.module, run.train)
    assert "loss_term_imbalance" not in [d.code for d in guard.diagnoses]


def test_thresholds_are_overridable(tmp_path: Path) -> None:
    run = build("l2_weight_10")
    guard = LossGuard(report_every=10, verbose=False, thresholds={"loss_term_imbalance": {"max_ratio": 1e4}})
    trainer(tmp_path, [guard], max_steps=40).fit(run.module, run.train)
    assert "loss_term_imbalance" not in [d.code for d in guard.diagnoses]


class ScriptedValidation(L.LightningModule):
    """A linear regression that learns, validated on a scripted curve: one logged ``val_loss`` per epoch."""

    def __init__(self, curve: list[float]) -> None:
        super().__init__()
        self.net = nn.Linear(16, 1)
        self.curve = curve

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", torch.tensor(self.curve[self.current_epoch]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


# Measured: an MLP on 512 samples under SGD (0.05, momentum 0.9), validated on 128: the validation loss bounces by
# ~25% from epoch to epoch. Up 52% at the fifth evaluation (a warning), below that minimum at the sixth.
BOUNCING = [0.6016, 0.2732, 0.1994, 0.2198, 0.3037, 0.1887, 0.2344, 0.1593]
LASTING = [0.6016, 0.2732, 0.1994, 0.2198, 0.3037, 0.3300, 0.3600, 0.4000]


@pytest.mark.parametrize(("curve", "transient"), [(BOUNCING, True), (LASTING, False)], ids=["bouncing", "lasting"])
def test_a_validation_rise_undone_later_is_noted_as_a_transient_and_still_reported(
    tmp_path: Path, curve: list[float], transient: bool
) -> None:
    guard = LossGuard(verbose=False)
    run = trainer(tmp_path, [guard], max_epochs=len(curve), num_sanity_val_steps=0)
    run.fit(ScriptedValidation(curve), loader(regression_data(n=256)), loader(regression_data(n=64, seed=1), 64))
    [rise] = [d for d in guard.diagnoses if d.code == "val_loss_rising"]
    assert rise.severity == "warning" and rise.evidence["evaluations"] == 5  # reported when it was seen, as before
    noted = [n for n in guard.notes if n.startswith("val_loss_rising at step")]
    if not transient:
        assert noted == []
        return
    epoch = run.num_training_batches
    assert noted == [
        f"val_loss_rising at step {rise.step} was a transient: val_loss came back to 0.1887 at step {6 * epoch}, at "
        "or below the minimum 0.1994 it had risen +52% from (latest evaluation 0.1593)."
    ]
    assert noted[0] in report_of(run.logger.log_dir)["notes"]  # type: ignore[union-attr]


class NoModuleCalls(L.LightningModule):
    """A regression computed on the module's own parameters: no submodule's forward runs in training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(x @ self.weight, y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize(
    ("module", "time_forward", "why"),
    [
        ("zoo", True, None),  # the forward ran: a short run says it is short, nothing about the forward
        ("no_module_calls", True, "the model's forward was not called from training_step"),
        ("zoo", False, "LossGuard(time_forward=False) does not time the forward pass"),
    ],
)
def test_a_loss_time_not_separated_from_the_forward_is_noted_with_its_real_reason(
    tmp_path: Path, module: str, time_forward: bool, why: str | None
) -> None:
    # The note once read whether the forward was seen after the hooks were removed: every short run got it.
    model = build("adam_regression").module if module == "zoo" else NoModuleCalls()
    guard = LossGuard(verbose=False, time_forward=time_forward)
    trainer(tmp_path, [guard], max_steps=15).fit(model, loader(regression_data()))
    noted = [n for n in guard.notes if n.startswith("The loss time could not be separated")]
    if why is None:
        assert noted == []
    else:
        assert len(noted) == 1 and why in noted[0]
    assert any(n.startswith("Run too short") and "expensive_loss" in n for n in guard.notes)


def test_fast_dev_run_works_and_says_why_no_report(tmp_path: Path, capsys: Any) -> None:
    run = build("nan_in_batch")
    run.module.nan_at_batch = 0
    guard = LossGuard()
    trainer(tmp_path, [guard], fast_dev_run=True).fit(run.module, run.train)
    assert [d.code for d in guard.diagnoses] == ["nonfinite_loss"]
    assert any("fast_dev_run" in n for n in guard.notes)
    assert not list(tmp_path.rglob("lossguard.json"))
    assert "fast_dev_run" in capsys.readouterr().out


def test_without_a_logger_no_report_lands_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = build("nan_in_batch")
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], logger=False, max_steps=80).fit(run.module, run.train)
    assert guard.diagnoses[0].code == "nonfinite_loss" and guard.report_path is None
    assert not list(tmp_path.rglob("lossguard*.json"))
    assert any("No logger" in n for n in guard.notes)


class ManualExploding(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = mlp([16, 64, 64, 1], act=nn.Tanh)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        opt.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        opt.step()  # type: ignore[union-attr]
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_manual_optimization_is_watched(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=100).fit(ManualExploding(), loader(regression_data()))
    assert "exploding_gradients" in [d.code for d in guard.diagnoses]
    assert any("Manual optimization" in n for n in guard.notes)


class NoParameters(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return batch[0].mean()

    def configure_optimizers(self) -> None:
        return None


def test_a_module_without_parameters_says_gradients_are_unavailable(tmp_path: Path) -> None:
    guard = LossGuard(report_every=5, verbose=False)
    # Without an optimizer global_step never moves: bound the run by batches.
    trainer(tmp_path, [guard], max_epochs=1, limit_train_batches=20).fit(NoParameters(), loader(regression_data(n=640)))
    assert any("no trainable parameters" in n for n in guard.notes)


def test_a_run_without_validation_says_val_loss_rising_was_not_judged(tmp_path: Path) -> None:
    run = build("adam_regression")
    guard = LossGuard(report_every=10, verbose=False)
    trainer(tmp_path, [guard], max_steps=30).fit(run.module, run.train)
    assert any("val_loss_rising was not judged" in n for n in guard.notes)
    assert any("Run too short to judge" in n and "loss_plateau" in n for n in guard.notes)


class SkipsNonFinite(ZooModule):
    """The guard users write: a batch whose loss is not finite is skipped by returning None (Lightning then runs no
    backward for it: the optimizer steps without gradients). Every ``nan_every``-th batch gets a NaN input."""

    def __init__(self, nan_every: int, logs: bool = False) -> None:
        super().__init__(mlp([16, 8, 1]))
        self.nan_every = nan_every
        self.logs = logs

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        if self.nan_every and batch_idx % self.nan_every == self.nan_every - 1:
            x = x.clone()
            x[0, 0] = float("nan")
        loss = super().training_step((x, y), batch_idx)
        if self.logs:  # logged before the guard, as most steps do: the skipped batch's NaN is in its log
            self.log("train_loss", loss)
        return loss if torch.isfinite(loss) else None


@pytest.mark.parametrize(("nan_every", "logs"), [(10, False), (10, True), (0, True)])
def test_batches_skipped_by_returning_none_are_counted_and_said(tmp_path: Path, nan_every: int, logs: bool) -> None:
    guard = LossGuard(report_every=10, verbose=False, budget=None)  # every batch timed: every log read
    t = trainer(tmp_path, [guard], max_epochs=1, limit_train_batches=40)
    t.fit(SkipsNonFinite(nan_every, logs), loader(regression_data()))
    said = [n for n in report_of(t.logger.log_dir)["notes"] if "returned None" in n]  # type: ignore[union-attr]
    assert not [g for g in guard.gaps if "internal error" in g.reason]
    assert [d.code for d in guard.diagnoses if d.severity != "info"] == []  # steps without gradients are no alarm
    if not nan_every:
        assert said == []
        return
    assert len(said) == 1 and "on 4 of 40 training batches (10.0%)" in said[0], said
    infos = [d for d in guard.diagnoses if d.code == "nonfinite_loss"]
    if logs:
        told = "4 of the 4 whose logged values LossGuard read logged a value that is not finite (first train_loss at "
        told += "step 9; nonfinite_loss, an info)"
        assert told in said[0], said
        [info] = infos  # reported once, at the report after step 9
        assert info.severity == "info" and info.step == 9 and info.evidence["skipped_nonfinite_batches"] == 1
        assert info.message.startswith("train_loss was not finite at step 9 in a batch that training_step skipped")
    else:
        assert "If they are skipped because the loss is NaN or inf" in said[0], said
        assert infos == []


def test_a_run_that_skips_most_batches_as_not_finite_is_an_error_and_fail_on_stops_it(tmp_path: Path) -> None:
    # A NaN in every batch's input, and the skip idiom: nothing trains. Found by trying it as a user: the run ended
    # "0 errors, 0 warnings, 1 info", and the note asked to return a loss that the step skips on purpose.
    guard = LossGuard(report_every=10, verbose=False, budget=None)
    t = trainer(tmp_path, [guard], max_epochs=1, limit_train_batches=40)
    t.fit(SkipsNonFinite(nan_every=1, logs=True), loader(regression_data()))
    [error] = [d for d in guard.diagnoses if d.severity == "error"]
    assert error.code == "nonfinite_loss" and error.step == 0 and error.evidence["skipped_batches"] >= 20
    assert error.message.startswith("training_step skipped 20 of the 20 batches so far (100%) by returning None")
    notes = report_of(t.logger.log_dir)["notes"]  # type: ignore[union-attr]
    assert notes[0].startswith("training_step returned None on 40 of 40 training batches (100.0%)"), notes
    assert "(first train_loss at step 0; nonfinite_loss, an error)" in notes[0]
    assert not [n for n in notes if "returned no loss in any" in n]  # the skip is on purpose: say why, not that
    with pytest.raises(LossGuardAlarm, match="nonfinite_loss"):
        trainer(tmp_path / "gated", [LossGuard(fail_on="error", report_every=10, verbose=False)], max_steps=40).fit(
            SkipsNonFinite(nan_every=1, logs=True), loader(regression_data())
        )


def test_what_a_skipped_batch_logged_is_not_taken_for_the_next_batchs_log() -> None:
    recorder = SignalRecorder([], HostClock())
    recorder.capture_logged("train_loss", torch.tensor(float("nan")))  # a batch that returns None after logging
    recorder.skip_batch(7)
    recorder.capture_logged("accuracy", torch.tensor(0.5))  # the next batch logs another name, and its loss
    recorder.record_loss(8, torch.tensor(1.0), None)
    window = recorder.drain()
    assert window.logged_rows == [0] and np.isnan(window.logged["train_loss"][0])  # not logged by step 8: missing
    assert window.logged["accuracy"].tolist() == [0.5]
    assert (window.skipped_read, len(window.skipped_nonfinite)) == (1, 1)
    assert window.skipped_nonfinite[0] == (7, ("train_loss",))


def test_gradient_accumulation_logs_undivided_losses_once_per_optimizer_step(tmp_path: Path) -> None:
    losses: list[float] = []

    class Recording(ZooModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = super().training_step(batch, batch_idx)
            losses.append(float(loss.detach()))
            return loss

    module = Recording(mlp([16, 8, 1]))
    guard = LossGuard(report_every=5, verbose=False, budget=None)  # gradients measured on every step
    t = trainer(tmp_path, [guard], max_steps=10, accumulate_grad_batches=4, log_every_n_steps=5)
    t.fit(module, loader(regression_data()))
    acc = events(t.logger.log_dir)  # type: ignore[union-attr]
    logged = [e.value for e in acc.Scalars("lossguard/train_loss")]
    # Each report (5 optimizer steps = 20 micro-batches) logs the median of its undivided batch losses.
    expected = [float(np.median(losses[i : i + 20])) for i in (0, 20)]
    assert logged == pytest.approx(expected, rel=1e-5)
    assert [e.step for e in acc.Scalars("lossguard/grad_norm")] == [4, 9]
    assert guard._diagnostician.steps_judged == 10  # one gradient row per optimizer step, not per micro-batch


def test_an_internal_error_never_breaks_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSGUARD_STRICT", "0")
    run = build("adam_regression")
    guard = LossGuard(report_every=10, verbose=False)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(Diagnostician, "judge", broken)
    t = trainer(tmp_path, [guard], max_steps=50)
    t.fit(run.module, run.train)
    assert t.global_step == 50
    [gap] = guard.gaps
    assert gap.signal == "monitoring" and "internal error in report" in gap.reason and "KeyError" in gap.reason
    report = report_of(t.logger.log_dir)  # type: ignore[union-attr]
    assert report["status"] == "finished" and report["coverage"]["complete"] is False
    assert not any(n.startswith("Run too short") or "forward was not called" in n for n in guard.notes)


def test_bf16_mixed_on_cpu_is_quiet_and_measured(tmp_path: Path) -> None:
    result = run_scenario("bf16_mixed", str(tmp_path))
    assert result.alarms == [] and result.steps == 300
    assert len(events(result.log_dir).Scalars("lossguard/grad_norm")) == 30  # one point per report


def test_the_verbose_console_is_silent_when_asked(tmp_path: Path, capsys: Any) -> None:
    run = build("nan_in_batch")
    trainer(tmp_path, [LossGuard(report_every=10, verbose=False)], max_steps=80).fit(run.module, run.train)
    assert "LossGuard" not in capsys.readouterr().out


class TwoOptimizers(L.LightningModule):
    """A GAN-shaped module: two parameter groups, two optimizers, both stepping every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(16, 16)
        self.critic = nn.Linear(16, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        g_opt, c_opt = self.optimizers()  # type: ignore[misc]
        c_loss = self.critic(self.generator(x).detach()).pow(2).mean()
        c_opt.zero_grad()
        self.manual_backward(c_loss)
        c_opt.step()
        g_loss = (self.critic(self.generator(x)) - 1).pow(2).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        return g_loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.generator.parameters()), torch.optim.Adam(self.critic.parameters())]


def test_several_optimizers_share_one_gradient_row_per_batch(tmp_path: Path) -> None:
    guard = LossGuard(report_every=5, verbose=False)
    t = trainer(tmp_path, [guard], max_epochs=1, limit_train_batches=30)
    t.fit(TwoOptimizers(), loader(regression_data()))
    acc = events(t.logger.log_dir)  # type: ignore[union-attr]
    assert guard._diagnostician.steps_judged == 30  # one gradient row per batch, not one per optimizer step
    assert len(acc.Scalars("lossguard/grad/first_layer_norm")) == 6  # the generator's part is filled too
    assert [d for d in guard.diagnoses if d.severity != "info"] == []


def test_pre_and_post_clip_norms_are_logged(tmp_path: Path) -> None:
    run = build("accumulate_and_clip")
    t = trainer(tmp_path, [LossGuard(report_every=5, verbose=False)], **run.trainer)
    t.fit(run.module, run.train)
    acc = events(t.logger.log_dir)  # type: ignore[union-attr]
    pre = [e.value for e in acc.Scalars("lossguard/grad_norm")]
    post = [e.value for e in acc.Scalars("lossguard/grad_norm_clipped")]
    assert len(pre) == len(post) == 30  # one point per report: the median of 5 optimizer steps
    assert all(b == pytest.approx(min(a, 1.0)) for a, b in zip(pre, post))
    assert any(a > 1.0 for a in pre)  # clipping fired: the two series differ


def test_validation_loss_reaches_tensorboard_without_monitors(tmp_path: Path) -> None:
    result = run_scenario("adam_regression", str(tmp_path))  # 6 epochs, validation after each
    points = events(result.log_dir).Scalars("lossguard/val/val_loss")
    assert len(points) == 6 and all(p.value > 0 for p in points)


class TwoValidationSets(ZooModule):
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), add_dataloader_idx=True)


def test_each_validation_dataloader_is_watched_on_its_own(tmp_path: Path) -> None:
    from benchmarks.fault_zoo.scenarios import regression_data as data

    module = TwoValidationSets(mlp([16, 64, 64, 1]))
    guard = LossGuard(report_every=10, verbose=False)
    t = trainer(tmp_path, [guard], max_epochs=4)
    t.fit(module, loader(data(n=640)), [loader(data(n=128, seed=5), 64, False), loader(data(n=128, seed=6), 64, False)])
    assert set(guard._diagnostician.val_detectors) == {"val_loss/dataloader_idx_0", "val_loss/dataloader_idx_1"}
    scalars = events(t.logger.log_dir).Tags()["scalars"]  # type: ignore[union-attr]
    assert {"lossguard/val/val_loss/dataloader_idx_0", "lossguard/val/val_loss/dataloader_idx_1"} <= set(scalars)


class Spelled(ZooModule):
    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(mlp([16, 32, 1]))
        self.names = names

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        for name in self.names:
            self.log(name, F.mse_loss(self(x), y))


@pytest.mark.parametrize(
    ("logged", "val_metric", "watched"),
    [
        (("val/loss",), None, {"val/loss"}),  # lightning-hydra-template's spelling
        (("val/loss",), "val_loss", {"val/loss"}),
        (("validation_loss",), None, {"validation_loss"}),
        (("val/loss", "val_loss"), None, {"val/loss"}),  # one spelling per run: the first one judged
        (("val/loss",), "val/acc", set()),  # a name given is watched alone
    ],
)
def test_the_default_validation_metric_takes_the_usual_spellings(
    tmp_path: Path, logged: tuple[str, ...], val_metric: str | None, watched: set[str]
) -> None:
    from benchmarks.fault_zoo.scenarios import regression_data as data

    guard = LossGuard(report_every=10, verbose=False, **({"val_metric": val_metric} if val_metric else {}))
    t = trainer(tmp_path, [guard], max_epochs=3)
    t.fit(Spelled(logged), loader(data(n=320)), loader(data(n=64, seed=5), 64, False))
    assert set(guard._diagnostician.val_detectors) == watched
    scalars = events(t.logger.log_dir).Tags()["scalars"]  # type: ignore[union-attr]
    assert {t for t in scalars if t.startswith("lossguard/val/")} == {f"lossguard/val/{n}" for n in watched}
    blind = [n for n in guard.notes if "was logged in validation" in n]
    assert bool(blind) == (not watched), guard.notes


# -- stall_timeout: the watchdog thread --------------------------------------------------------------------------
class Stalls(ZooModule):
    """Blocks in one training_step (a hang that ends), reads the report while still blocked, then optionally fails."""

    def __init__(self, stall_s: float, at: int = 15, then_raise: bool = False) -> None:
        super().__init__(mlp([16, 8, 1]))
        self.stall_s, self.at, self.then_raise = stall_s, at, then_raise
        self.seen_while_stalled: dict[str, Any] | None = None

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if batch_idx == self.at:
            stuck_in_user_code(self.stall_s)
            path = Path(self.trainer.log_dir or ".") / "lossguard.json"  # type: ignore[union-attr]
            self.seen_while_stalled = json.loads(path.read_text()) if path.exists() else None
            if self.then_raise:
                raise RuntimeError("gave up")
        return super().training_step(batch, batch_idx)


def stuck_in_user_code(seconds: float) -> None:
    time.sleep(seconds)


def test_a_stalled_step_is_reported_while_stuck_and_again_with_its_duration_once_training_goes_on(
    tmp_path: Path, capsys: Any
) -> None:
    module = Stalls(stall_s=2.0)
    guard = LossGuard(report_every=10, stall_timeout=0.5)
    t = trainer(tmp_path, [guard], max_steps=30)
    t.fit(module, loader(regression_data()))
    seen = module.seen_while_stalled  # the report while the step was still blocked
    assert seen is not None and seen["status"] == "running"
    [early] = [d for d in seen["diagnoses"] if d["code"] == "stalled_training"]
    assert early["evidence"]["resumed"] == 0 and 0.5 <= early["evidence"]["stalled_s"] < 2.0
    assert "still stalled" in early["message"] and "step 15 in" in early["message"]
    assert any("stuck_in_user_code" in n for n in seen["notes"])

    [final] = [d for d in guard.diagnoses if d.code == "stalled_training"]
    assert final.evidence["resumed"] == 1 and final.evidence["stalled_s"] >= 2.0 and final.step == 15
    assert "stalled for 2." in final.message and "went on" in final.message
    report = report_of(t.logger.log_dir)  # type: ignore[union-attr]
    assert report["status"] == "finished" and report["global_step"] == 30  # training went on to the end
    assert [d["code"] for d in report["diagnoses"]] == ["stalled_training"]
    assert any("stuck_in_user_code" in n for n in report["notes"])
    err = capsys.readouterr().err
    assert "LossGuard rank 0: no training step completed" in err and "in stuck_in_user_code" in err
    assert not [th for th in threading.enumerate() if th.name == "lossguard-watchdog"]  # stopped at fit end


def test_with_fail_on_a_stall_stops_every_rank_at_the_next_report(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, stall_timeout=0.3, fail_on="error", verbose=False)
    t = trainer(tmp_path, [guard], max_steps=50)
    with pytest.raises(LossGuardAlarm):
        t.fit(Stalls(stall_s=1.0, at=5), loader(regression_data()))
    assert t.global_step == 10 and report_of(t.logger.log_dir)["status"] == "alarm"  # type: ignore[union-attr]


def test_a_run_that_fails_while_stalled_keeps_the_stall_in_its_report(tmp_path: Path) -> None:
    # A timeout well above the first step's set-up: late in a long test session a 0.3 s one also caught the
    # start (a real stall there, but not the one this test is about).
    guard = LossGuard(report_every=10, stall_timeout=1.0, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=30)
    with pytest.raises(RuntimeError, match="gave up"):
        t.fit(Stalls(stall_s=2.5, at=5, then_raise=True), loader(regression_data()))
    report = report_of(t.logger.log_dir)  # type: ignore[union-attr]
    assert len(report["diagnoses"]) == 1, report["diagnoses"]
    [stall] = report["diagnoses"]
    assert report["status"] == "failed" and stall["code"] == "stalled_training" and stall["evidence"]["resumed"] == 0


def test_a_suppressed_stall_starts_no_thread(tmp_path: Path) -> None:
    guard = LossGuard(stall_timeout=0.01, suppress=["stalled_training"], verbose=False)
    trainer(tmp_path, [guard], max_steps=5).fit(Stalls(stall_s=0.1, at=2), loader(regression_data()))
    assert guard.diagnoses == []


def test_hooks_with_nothing_to_do_are_hidden_from_lightning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning's dispatch costs ~2 us per hook and callback: on an untimed, unsampled batch the backward and
    # optimizer-step hooks are not even called, and hooks LossGuard never uses are hidden for good.
    calls: dict[str, list[bool]] = {"backward": [], "step": []}
    backward, step = LossGuard.on_before_backward, LossGuard.on_before_optimizer_step

    def counted_backward(self: LossGuard, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        calls["backward"].append(self._backward_work)
        backward(self, trainer, module, loss)

    def counted_step(self: LossGuard, trainer: L.Trainer, module: L.LightningModule, optimizer: Any) -> None:
        calls["step"].append(self._step_work)
        step(self, trainer, module, optimizer)

    monkeypatch.setattr(LossGuard, "on_before_backward", counted_backward)
    monkeypatch.setattr(LossGuard, "on_before_optimizer_step", counted_step)
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
    assert guard.on_before_zero_grad is None
    trainer(tmp_path, [guard], max_steps=200).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.stride > 1
    for hook in ("backward", "step"):
        assert all(calls[hook]), f"Lightning called on_{hook} hooks on a batch without work"
        assert 40 <= len(calls[hook]) < 150  # every batch of the first interval, then the timed and sampled ones
    assert guard._gradient_rows > 0
    assert "on_before_backward" not in vars(guard) and "on_before_optimizer_step" not in vars(guard)  # restored


def after_each_dispatched_start(
    monkeypatch: pytest.MonkeyPatch, seen: Callable[[LossGuard, L.Trainer, int], None]
) -> None:
    """Call ``seen(guard, trainer, batch index)`` after each on_train_batch_start Lightning dispatches to LossGuard."""
    start = LossGuard.on_train_batch_start

    def counted(self: LossGuard, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        start(self, trainer, module, batch, index)
        seen(self, trainer, index)

    monkeypatch.setattr(LossGuard, "on_train_batch_start", counted)


def test_a_plain_batch_is_prepared_at_the_last_batchs_end_and_its_start_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a batch neither timed nor sampled, on_train_batch_start would only set the batch up: the previous batch's
    # end does that and Lightning does not dispatch the hook (~2 us). Every recorded row must still carry its step.
    started: list[tuple[int, int]] = []  # (global step, batch index) of each start Lightning dispatched
    windows: list[Any] = []
    drain = SignalRecorder.drain

    def kept_drain(self: SignalRecorder, *args: Any, **kwargs: Any) -> Any:
        windows.append(drain(self, *args, **kwargs))
        return windows[-1]

    after_each_dispatched_start(monkeypatch, lambda guard, trainer, index: started.append((trainer.global_step, index)))
    monkeypatch.setattr(SignalRecorder, "drain", kept_drain)
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
    fit = trainer(tmp_path, [guard], max_steps=150, accumulate_grad_batches=2, limit_train_batches=50)
    fit.fit(run.module, run.train, run.val)
    assert guard._budget is not None and guard._budget.stride > 1
    batches = 300
    later = [step for step, _ in started if step >= 40]  # the first interval (80 batches) times every batch
    assert len(later) < (batches - 80) / 2, f"the start hook ran on {len(later)} of {batches - 80} later batches"
    assert {(step, index) for step, index in started if index == 0} == {(25 * e, 0) for e in range(6)}  # epochs
    assert [s for w in windows for s in w.batch_steps] == [i // 2 for i in range(batches)]  # each loss's step
    steps_started = {step for step, _ in started}
    measured = {s for w in windows for s in (*w.optimizer_steps, *w.timing_steps)}
    assert measured and measured <= steps_started, sorted(measured - steps_started)
    assert "on_train_batch_start" not in vars(guard)  # restored after the fit


def test_a_run_of_plain_batches_records_what_the_full_path_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between two plain batches the end of one sets the next up in a few calls (_plain_batch_end). Forced through
    # the full path instead, the same run must record the same losses, steps, rates and samples: the plan is
    # fixed (budget at its cheapest, report_every set), so only the timings' values may differ.
    def recorded(fast: bool) -> tuple[list[tuple[Any, ...]], int]:
        windows: list[tuple[Any, ...]] = []
        drain, plain_end = SignalRecorder.drain, LossGuard._plain_batch_end
        taken = [0]

        def kept_drain(self: SignalRecorder, *args: Any, **kwargs: Any) -> Any:
            w = drain(self, *args, **kwargs)
            rates = np.asarray(w.learning_rate).tolist()
            windows.append((w.batch_steps, w.loss.tolist(), rates, w.optimizer_steps, w.timing_steps))
            return w

        def counted(self: LossGuard, trainer: L.Trainer, outputs: Any) -> bool:
            done = fast and plain_end(self, trainer, outputs)
            taken[0] += done
            return done

        monkeypatch.setattr(SignalRecorder, "drain", kept_drain)
        monkeypatch.setattr(LossGuard, "_plain_batch_end", counted)
        torch.manual_seed(0)
        module = ZooModule(mlp([16, 32, 1]), scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 30, 0.5))
        guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
        fit = trainer(tmp_path / str(fast), [guard], max_steps=150, accumulate_grad_batches=2, limit_train_batches=50)
        fit.fit(module, loader(regression_data()), loader(regression_data(64, seed=1)))
        monkeypatch.undo()
        assert guard._budget is not None and guard._budget.stride > 1
        return windows, taken[0]

    fast, taken = recorded(True)
    full, none = recorded(False)
    # Stride 4 over batches and optimizer steps at 2 batches a step: 3 batches in 8 are plain and followed by a
    # plain one, after the first interval's 80 (every batch timed there).
    assert none == 0 and taken >= (300 - 80) * 3 // 8 - 10, f"{taken} of 300 batches ended on the short path"
    assert len(fast) == len(full) >= 4
    for a, b in zip(fast, full):
        assert a == b
    assert len({rate for w in fast for rate in w[2]}) >= 4  # the rate changed along the run


def test_a_report_between_plain_batches_brings_the_leftover_check_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under several ranks a validation in mid-epoch reports between two batches; the batch after it was set up as
    # plain already, and the first batch of the next accumulation window must check for leftover gradients. The
    # short path hands that batch's end to the full one, which shows the start hook again.
    checked: list[int] = []

    def leftover_checked(guard: LossGuard, trainer: L.Trainer, index: int) -> None:
        if guard._check_leftover:
            checked.append(guard._batches)

    class ReportsBetweenBatches(L.Callback):
        """After LossGuard's end hook: a report from outside the batch loop sets the leftover check due."""

        def __init__(self, guard: LossGuard, at: int) -> None:
            self.guard, self.at = guard, at

        def on_train_batch_end(self, *args: Any) -> None:
            if self.guard._batches == self.at:
                assert self.guard._start_hidden  # the next batch is plain: its start would not run
                self.guard._leftover_due = True

    after_each_dispatched_start(monkeypatch, leftover_checked)
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
    at = 101  # after the first reports, between two plain batches (stride 4)
    trainer(tmp_path, [guard, ReportsBetweenBatches(guard, at)], max_steps=150).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.stride == 4
    assert [b for b in checked if b > at][:1] == [at + 1], checked


def test_a_step_counter_that_stops_agreeing_is_dropped_at_the_next_report(tmp_path: Path) -> None:
    # The per-batch path reads the global step off Lightning's progress record (one attribute, not five
    # properties). Loops replaced mid-fit would leave it stale: each report checks it against trainer.global_step.
    class ReplacesTheLoops(L.Callback):
        def __init__(self, guard: LossGuard) -> None:
            self.guard = guard
            self.counters: list[Any] = []

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            self.counters.append(self.guard._step_counter)
            if self.guard._batches == 45:
                self.guard._step_counter = SimpleNamespace(completed=-7)

    run = build("adam_regression")
    guard = LossGuard(report_every=20, verbose=False)
    watch = ReplacesTheLoops(guard)
    trainer(tmp_path, [guard, watch], max_steps=80).fit(run.module, run.train)
    assert watch.counters[0] is not None and watch.counters[0].completed == 80  # Lightning's record, read live
    assert guard._step_counter is None  # the report at batch 60 found -7 against 60


def test_with_the_stall_watchdog_every_batch_start_is_dispatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watchdog tells a stall inside a batch from one loading data by the start hook's mark.
    started: list[int] = []
    after_each_dispatched_start(monkeypatch, lambda guard, trainer, index: started.append(index))
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, stall_timeout=60, verbose=False)
    trainer(tmp_path, [guard], max_steps=150).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.stride > 1
    assert len(started) == 150


def test_a_subclass_that_overrides_a_hook_keeps_it_called(tmp_path: Path) -> None:
    class Counting(LossGuard):
        seen = 0

        def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
            Counting.seen += 1
            super().on_before_backward(trainer, module, loss)

        def on_before_zero_grad(self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any) -> None:
            Counting.seen += 1000

    run = build("adam_regression")
    guard = Counting(budget=1e-6, report_every=40, verbose=False)
    trainer(tmp_path, [guard], max_steps=200).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.stride > 1
    assert Counting.seen == 200 * 1001


def test_a_signal_the_budget_sampled_too_sparsely_is_not_blamed_on_the_runs_length(tmp_path: Path) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
    trainer(tmp_path, [guard], max_steps=120).fit(run.module, run.train)  # every step timed would judge them all
    assert guard._budget is not None
    stride = guard._budget.stride
    short = [n for n in guard.notes if n.startswith("Run too short")]
    assert stride > 1 and len(short) == 1, guard.notes
    assert f"timed one batch in {stride}" in short[0] and "LossGuard(budget=...)" in short[0]


def test_log_every_n_steps_of_one_does_not_make_a_report_per_step(tmp_path: Path) -> None:
    """Lightning asks runs of short epochs to lower ``log_every_n_steps``; at 1 LossGuard reported every 1 to 8
    steps (a 2,000-step run: 253 reports, 20% of its time)."""
    run = build("adam_regression")
    guard = LossGuard(verbose=False)
    trainer(tmp_path, [guard], max_steps=200, log_every_n_steps=1).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.base_report_batches == 10
    assert guard._budget.reports <= 200 // 10 + 1


def test_collections_inside_a_gradient_pass_are_not_counted_as_its_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget leaves the garbage collector's time out of LossGuard's own, and must leave it out of the parts it
    splits that time into: a 2,002-tensor model's gradient passes set off collections (~0.2 s of 0.33 s there),
    and the over-budget note then said the gradient passes and reports took more than LossGuard's time in all."""
    record = SignalRecorder.record_gradients
    collections = []

    def collecting(self: SignalRecorder, *args: Any) -> None:
        record(self, *args)
        if len(collections) < 3:  # a full collection, real, inside the measured pass (gc.callbacks see it)
            collections.append(gc.collect())

    monkeypatch.setattr(SignalRecorder, "record_gradients", collecting)
    run = build("adam_regression")
    guard = LossGuard(verbose=False)
    trainer(tmp_path, [guard], max_steps=120).fit(run.module, run.train)
    budget = guard._budget
    assert budget is not None and len(collections) == 3 and budget.gradient_rows > 0
    assert budget.spent_gradient_us + budget.spent_report_us <= budget.spent_own_us


def test_the_report_at_the_end_of_the_fit_is_counted_in_what_the_run_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A report counts in the interval after it; the last one has none, and was left out of the run's share.
    report, end = LossGuard._report, LossGuard.on_train_end
    ending: list[bool] = []

    def slow_last(self: LossGuard, trainer: L.Trainer, module: L.LightningModule) -> Any:
        if ending:
            time.sleep(0.2)  # the end-of-fit report, made slow enough to see
        return report(self, trainer, module)

    def on_end(self: LossGuard, trainer: L.Trainer, module: L.LightningModule) -> None:
        ending.append(True)
        end(self, trainer, module)

    monkeypatch.setattr(LossGuard, "_report", slow_last)
    monkeypatch.setattr(LossGuard, "on_train_end", on_end)
    run = build("adam_regression")
    guard = LossGuard(verbose=False)
    trainer(tmp_path, [guard], max_steps=60).fit(run.module, run.train)
    budget = guard._budget
    assert budget is not None and budget.spent_own_us >= 0.2e6 and budget.spent_report_us >= 0.2e6
    assert budget.run_share == budget.spent_own_us / budget.spent_step_us
    assert guard.report_path is not None
    assert report_of(Path(guard.report_path).parent)["cost"]["own_seconds"] >= 0.2  # the JSON says so too
