"""A fit under a strategy whose ranks are child processes (``ddp_spawn``, ``ddp_notebook``), two CPU ranks:
what the ``LossGuard`` object in the launching process says afterwards.

    python tests/distributed/spawn_fit.py STRATEGY NAN_AT_STEP OUT.json

``NAN_AT_STEP`` -1: a healthy run. Writes the launching process's view to OUT.json: the exception the fit raised (if
any), and ``guard.diagnoses``, ``guard.notes`` and ``guard.report_path`` there.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard


class Classifier(L.LightningModule):
    def __init__(self, nan_at: int) -> None:
        super().__init__()
        self.nan_at = nan_at
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.global_step == self.nan_at:
            x = x * float("nan")
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 16, generator=g)
    return TensorDataset(x, (x @ torch.randn(16, 4, generator=g)).argmax(1))


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    strategy, nan_at, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    guard = LossGuard(fail_on="error", report_every=10)
    trainer = L.Trainer(
        default_root_dir=tempfile.mkdtemp(),
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        callbacks=[guard],
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    raised = ""
    try:
        trainer.fit(Classifier(nan_at), DataLoader(data(), batch_size=16, shuffle=True))
    except Exception as error:  # the rank's exception, as the launcher re-raises it
        raised = f"{type(error).__name__}: {error}"
    seen = {
        "raised": raised,
        "diagnoses": [d.to_dict() for d in guard.diagnoses],
        "notes": guard.notes,
        "report_path": guard.report_path,
    }
    with open(out, "w", encoding="utf-8") as file:
        json.dump(seen, file)
