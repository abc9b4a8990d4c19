"""LossGuard quickstart: a small CPU training run that goes wrong on purpose.

A tanh MLP regression trained with SGD at lr=0.05 learns well for 100 steps; then a learning-rate
schedule bug multiplies the rate by 10 and the gradients explode, the loss diverges and turns NaN.
LossGuard names the problem, the layer, the numbers and the fix on the console, writes
``lossguard.json`` and puts everything in TensorBoard:

    python examples/quickstart.py            # ~10 s on a laptop CPU
    tensorboard --logdir lightning_logs      # the LossGuard tab: verdict, curves, diagnoses

Pass ``--no-jump`` for the same run without the bug: LossGuard then stays quiet.
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
    def __init__(self, lr: float, jump_at: int | None) -> None:
        super().__init__()
        self.lr = lr
        self.jump_at = jump_at
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

    def configure_optimizers(self) -> dict[str, object]:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        jump = self.jump_at

        def factor(step: int) -> float:  # the "bug": the rate jumps 10x instead of decaying
            return 10.0 if jump is not None and step >= jump else 1.0

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def data(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) / math.sqrt(16)
    y = 2 * torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=seed == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--no-jump", action="store_true", help="keep the learning rate constant: a healthy run")
    parser.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()
    L.seed_everything(0)
    trainer = L.Trainer(
        max_steps=args.max_steps,
        max_epochs=10,
        accelerator="cpu",
        log_every_n_steps=10,
        val_check_interval=50,
        callbacks=[LossGuard(report_every=10), RichProgressBar()],
    )
    trainer.fit(Regressor(args.lr, None if args.no_jump else 100), data(4096, seed=0), data(512, seed=1))


if __name__ == "__main__":
    main()
