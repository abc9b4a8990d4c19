"""Checkpoint resume: a run stopped halfway and resumed gives the same diagnoses as an uninterrupted run.

The fault (the learning rate jumps 30x at step 70) happens after the checkpoint, so it is judged against
baselines built before it: only a correctly restored state reproduces the same evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from benchmarks.fault_zoo.scenarios import ZooModule, loader, mlp, regression_data
from lightning_lossguard import LossGuard
from tests.conftest import plateau_lengths, trainer


def module() -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(
        mlp([16, 64, 64, 1], act=nn.Tanh),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.02),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 30.0 if s >= 70 else 1.0),
    )


DATA = regression_data(n=1600)  # 50 batches per epoch: the checkpoint at step 50 ends an epoch


def fit(tmp_path: Path, guard: LossGuard, max_steps: int, ckpt_path: str | None = None, **kwargs: Any) -> Any:
    t = trainer(tmp_path, [guard, *kwargs.pop("callbacks", [])], max_steps=max_steps, **kwargs)
    t.fit(module(), loader(DATA, shuffle=False), ckpt_path=ckpt_path)
    return t


def test_resumed_run_gives_the_same_diagnoses_as_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = LossGuard(report_every=10, verbose=False)
    fit(tmp_path / "whole", whole, 120)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=50, save_top_k=-1)
    first = LossGuard(report_every=10, verbose=False)
    fit(tmp_path / "split", first, 50, callbacks=[checkpoint], enable_checkpointing=True)
    assert first.diagnoses == []
    resumed = LossGuard(report_every=10, verbose=False)
    t = fit(tmp_path / "split", resumed, 120, ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=50.ckpt"))

    assert whole.diagnoses, "the fault must be found"
    assert resumed._diagnostician.restart_step is None  # resumed from a checkpoint: the optimizer's state too
    assert [(d.code, d.step, d.subject) for d in resumed.diagnoses] == [
        (d.code, d.step, d.subject) for d in whole.diagnoses
    ]
    for a, b in zip(resumed.diagnoses, whole.diagnoses):
        assert a.evidence.keys() == b.evidence.keys()
        for key in a.evidence:
            assert abs(a.evidence[key] - b.evidence[key]) <= 1e-3 * max(1.0, abs(b.evidence[key])), key
    report = json.loads((Path(t.logger.log_dir) / "lossguard.json").read_text())
    assert [d["code"] for d in report["diagnoses"]] == [d.code for d in whole.diagnoses]


def test_state_is_plain_data_and_round_trips(tmp_path: Path) -> None:
    guard = LossGuard(report_every=10, verbose=False)
    fit(tmp_path, guard, 100)
    state = guard.state_dict()
    buffer = tmp_path / "state.pt"
    torch.save(state, buffer)
    loaded = torch.load(buffer, weights_only=True)  # primitives only: safe loading works
    clone = LossGuard(report_every=10, verbose=False)
    clone.load_state_dict(loaded)
    assert clone.diagnoses == guard.diagnoses
    assert json.dumps(clone.state_dict(), sort_keys=True) == json.dumps(state, sort_keys=True)  # NaN-safe


def test_several_instances_get_distinct_state_keys() -> None:
    assert LossGuard(name="a").state_key != LossGuard(name="b").state_key
    assert LossGuard(val_metric="val_acc").state_key != LossGuard().state_key


def test_a_resumed_fit_tells_loss_plateau_the_whole_runs_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loss_plateau waits for a share of the run: after a resume at step 50 of 120 that run is still 120 batches (the
    # 50 judged before the checkpoint and the 70 left), not the 70 the resumed fit has left.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=50, save_top_k=-1)
    fit(tmp_path, LossGuard(report_every=10, verbose=False), 50, callbacks=[checkpoint], enable_checkpointing=True)
    told = plateau_lengths(monkeypatch)
    resumed = LossGuard(report_every=10, verbose=False)
    fit(tmp_path, resumed, 120, ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=50.ckpt"))
    assert told and set(told) == {120}, told


@pytest.mark.parametrize("at", [30, 50], ids=["mid_epoch", "epoch_end"])
def test_a_fit_resumed_mid_epoch_is_planned_without_the_epochs_finished_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    # A checkpoint at step 30 of a 50-batch epoch: the resumed fit goes on from batch 30 and runs 120 of its 3
    # epochs' 150. Its plan counted the whole epoch again (150 left, the plateau told 180) until the next epoch. A
    # checkpoint at an epoch's end (step 50) leaves that epoch's 50 in the loop's count: they are not taken off again.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=at, save_top_k=-1)
    fit(tmp_path, LossGuard(report_every=10, verbose=False), at, callbacks=[checkpoint], enable_checkpointing=True)
    told = plateau_lengths(monkeypatch)
    resumed = LossGuard(report_every=10, verbose=False)
    t = fit(tmp_path, resumed, -1, ckpt_path=str(tmp_path / "ckpt" / f"epoch=0-step={at}.ckpt"), max_epochs=3)
    assert t.global_step == 150 and told and set(told) == {150}, told
