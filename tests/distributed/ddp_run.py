"""A two-process DDP run on CPU (gloo) with LossGuard; launched by tests/distributed/test_ddp.py.

    python ddp_run.py MODE OUT_DIR      # MODE: healthy | nan | fail

Lightning re-launches this script once per extra rank. ``nan`` injects a NaN into one batch of rank 1
only; ``fail`` does the same with ``fail_on="error"``.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard


class Model(L.LightningModule):
    def __init__(self, nan_on_rank: int | None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
        self.nan_on_rank = nan_on_rank

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.nan_on_rank == self.global_rank and batch_idx == 25:
            x = x.clone()
            x[0, 0] = float("nan")
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 8, generator=g)
    y = x.sum(1, keepdim=True) * 0.3
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    val = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64)
    guard = LossGuard(report_every=10, fail_on="error" if mode == "fail" else None)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=80,
        val_check_interval=40,
        default_root_dir=out,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[guard],
    )
    trainer.fit(Model(nan_on_rank=None if mode == "healthy" else 1), train, val)
    print(f"RANK {trainer.global_rank} DIAGNOSES {[d.code for d in guard.diagnoses]}", flush=True)


if __name__ == "__main__":
    main()
