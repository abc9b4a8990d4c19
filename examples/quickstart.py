"""LossGuard quickstart: a small CPU training run that goes wrong on purpose.

A tanh MLP regression trained with SGD at lr=0.5: after ~20 steps the gradients explode, the loss
diverges and turns NaN. LossGuard names the problem, the layer, the numbers and the fix on the console,
writes ``lossguard.json`` and puts everything in TensorBoard:

    python examples/quickstart.py            # ~10 s on a laptop CPU
    tensorboard --logdir lightning_logs      # Text tab: lossguard/diagnoses; Custom Scalars: LossGuard

Pass ``--lr 0.05`` for a healthy run: LossGuard then stays quiet.
"""

from __future__ import annotations

import argparse
import math

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard


class Regressor(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def data(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) / math.sqrt(16)
    y = 2 * torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=seed == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.5, help="0.5 explodes; 0.05 is healthy")
    parser.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()
    L.seed_everything(0)
    trainer = L.Trainer(
        max_steps=args.max_steps,
        accelerator="cpu",
        log_every_n_steps=10,
        val_check_interval=50,
        callbacks=[LossGuard(report_every=10), RichProgressBar()],
    )
    trainer.fit(Regressor(args.lr), data(4096, seed=0), data(512, seed=1))


if __name__ == "__main__":
    main()
