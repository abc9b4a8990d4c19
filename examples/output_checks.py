"""Output checks: a classifier on 95/5 imbalanced data that learns to predict only the majority class.

Plain cross-entropy on data where the rare class is hard to tell apart: accuracy reaches ~95% by never
predicting the rare class. ``OutputMonitor`` reads the predictions each step returns and reports
``prediction_collapse`` with its remedies; TensorBoard shows the confusion matrix (Images tab) and the
predicted-class histogram (Histograms tab):

    python examples/output_checks.py             # a few seconds on a laptop CPU
    tensorboard --logdir lightning_logs

Pass ``--weighted`` to apply the first remedy (class weights): the rare class is predicted again and
LossGuard stays quiet about it.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard, OutputMonitor


class Classifier(L.LightningModule):
    def __init__(self, class_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        self.register_buffer("class_weights", class_weights)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        # The convention OutputMonitor reads: the predictions as the loss sees them, and the targets.
        return {"loss": loss, "preds": logits, "target": y}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.step(batch)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.step(batch)
        self.log("val_loss", out["loss"])
        return out

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def data(n: int, seed: int) -> TensorDataset:
    """Two overlapping Gaussian clusters; class 1 is 5% of the samples."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.05).long()
    centers = torch.randn(2, 8, generator=torch.Generator().manual_seed(7)) * 0.3
    return TensorDataset(centers[y] + torch.randn(n, 8, generator=g), y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weighted", action="store_true", help="weight the loss by inverse class frequency")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    L.seed_everything(0)
    train = data(2048, seed=0)
    weights = None
    if args.weighted:
        counts = torch.bincount(train.tensors[1], minlength=2).float()
        weights = counts.sum() / (2 * counts)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        log_every_n_steps=10,
        enable_progress_bar=False,
        callbacks=[LossGuard(monitors=[OutputMonitor()])],
    )
    trainer.fit(
        Classifier(weights),
        DataLoader(train, batch_size=64, shuffle=True),
        DataLoader(data(1024, seed=1), batch_size=256),
    )


if __name__ == "__main__":
    main()
