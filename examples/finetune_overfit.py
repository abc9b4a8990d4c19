"""A validation loss that starts low and rises (seed 001): fine-tuning a pre-trained model on a few noisy
samples. LossGuard names the likely cause from the evidence (here: overfitting, because the training loss
keeps falling while the validation loss rises) and the best epoch to keep.

    python examples/finetune_overfit.py           # ~15 s on a CPU
    python examples/finetune_overfit.py --lr 3e-5 # gentler fine-tuning: compare what LossGuard says

The pre-training uses plenty of clean data; the fine-tuning set has 24 noisy samples.
"""

from __future__ import annotations

import argparse
import math

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard

TRUE_W = torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) / math.sqrt(16)


def data(n: int, noise: float, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    return TensorDataset(x, 2 * torch.tanh(x @ TRUE_W) + noise * torch.randn(n, 1, generator=g))


class Regressor(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def pretrain(model: Regressor) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for x, y in DataLoader(data(4096, 0.05, seed=1), batch_size=128, shuffle=True):
            opt.zero_grad()
            F.mse_loss(model.net(x), y).backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    L.seed_everything(0)
    model = Regressor(args.lr)
    pretrain(model)
    trainer = L.Trainer(
        max_epochs=60,
        accelerator="cpu",
        check_val_every_n_epoch=3,
        log_every_n_steps=3,
        callbacks=[LossGuard(report_every=9)],
    )
    trainer.fit(
        model,
        DataLoader(data(24, 1.0, seed=2), batch_size=8, shuffle=True),
        DataLoader(data(512, 0.05, seed=3), batch_size=256),
    )


if __name__ == "__main__":
    main()
