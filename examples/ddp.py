"""LossGuard under DDP: every rank measures, rank 0 reports, and a fail_on alarm stops every rank at the
same step (the decision is reduced across ranks), so the job exits non-zero instead of hanging.

    python examples/ddp.py                 # 2 processes on CPU (gloo); healthy
    python examples/ddp.py --nan-on-rank 1 # a NaN in one batch of rank 1 only: diagnosed once, job fails

On GPUs use ``--accelerator gpu --devices N``. Lightning re-launches this script once per extra rank.
"""

from __future__ import annotations

import argparse
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
        if self.global_rank == self.nan_on_rank and batch_idx == 25:
            x = x.clone()
            x[0, 0] = float("nan")
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nan-on-rank", type=int, default=None)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    L.seed_everything(0)
    x = torch.randn(4096, 8)
    y = x.sum(1, keepdim=True) * 0.3
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp",
        max_steps=100,
        log_every_n_steps=10,
        enable_progress_bar=False,
        callbacks=[LossGuard(fail_on="error")],
    )
    trainer.fit(Model(args.nan_on_rank), DataLoader(TensorDataset(x, y), batch_size=16))


if __name__ == "__main__":
    main()
