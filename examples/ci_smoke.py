"""A CI smoke training gated by LossGuard: a short CPU run that fails the job when training goes wrong.

The run trains a small tanh MLP regression for a few dozen steps with ``LossGuard(fail_on="error")``.
When LossGuard diagnoses an error it stops the fit, writes ``lossguard.json`` and the TensorBoard text,
and this script exits with status 1; a healthy run exits 0:

    python examples/ci_smoke.py                  # healthy: exit 0
    python examples/ci_smoke.py --fault          # learning rate 10x too high: gradients explode, exit 1
    lossguard check ci_logs                      # the same verdict, read from the report afterwards

Use it as a template: put your own model and a few batches of your data in place of the toy ones.
"""

from __future__ import annotations

import argparse
import math
import sys

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard, LossGuardAlarm

HEALTHY_LR = 0.05
FAULTY_LR = 0.5  # SGD on this tanh MLP explodes within ~20 steps


class SmokeModel(L.LightningModule):
    """A tanh MLP regressor trained with plain SGD."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def data(n: int, seed: int) -> DataLoader:
    """A smooth regression target with a little noise (the same teacher for every seed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) / math.sqrt(16)
    y = 2 * torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=seed == 0)


def main(argv: list[str] | None = None) -> int:
    """Train, and return 1 when LossGuard raised an alarm, else 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", action="store_true", help="train with a learning rate that explodes")
    parser.add_argument("--max-steps", type=int, default=80, help="optimizer steps (default: 80)")
    parser.add_argument("--log-dir", default="ci_logs", help="where the logs and lossguard.json go (default: ci_logs)")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    guard = LossGuard(fail_on="error", report_every=10)
    trainer = L.Trainer(
        max_steps=args.max_steps,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(args.log_dir, name="ci_smoke"),
        callbacks=[guard],
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    try:
        trainer.fit(SmokeModel(FAULTY_LR if args.fault else HEALTHY_LR), data(1024, seed=0), data(256, seed=1))
    except LossGuardAlarm as alarm:
        # The reports are already written; the message lists the diagnoses and the report path.
        print(alarm, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
