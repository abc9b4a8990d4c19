"""A custom loss that gets slower every step (seed 004): it keeps a "memory bank" of past predictions and
loops over all of it. LossGuard reports ``slowing_loss_step`` with the ms per step at the start and now,
the growth per 1000 steps and the extra time the rest of the run will cost; TensorBoard shows where the
time goes under ``lossguard/time/*_ms``.

    python examples/slowing_loss.py            # ~20 s on a CPU
    python examples/slowing_loss.py --bounded  # keep only the last 16 entries: no diagnosis

``lightning_lossguard.timed("loss")`` times the loss exactly; without it the loss time is estimated as
``training_step - forward``.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lightning_lossguard
from lightning_lossguard import LossGuard


class Model(L.LightningModule):
    def __init__(self, bounded: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
        self.bank: list[torch.Tensor] = []
        self.bounded = bounded

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        pred = self.net(x)
        with lightning_lossguard.timed("loss"):
            self.bank.append(pred.detach())
            if self.bounded:
                del self.bank[:-16]
            # A consistency term against every stored prediction: its cost grows with the bank.
            consistency = sum(F.mse_loss(pred, old) for old in self.bank) / len(self.bank)
            return F.mse_loss(pred, y) + 0.01 * consistency

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bounded", action="store_true")
    args = parser.parse_args()
    L.seed_everything(0)
    x = torch.randn(16384, 16)
    y = x.sum(1, keepdim=True) * 0.25
    trainer = L.Trainer(max_steps=500, accelerator="cpu", log_every_n_steps=20, callbacks=[LossGuard()])
    trainer.fit(Model(args.bounded), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))


if __name__ == "__main__":
    main()
