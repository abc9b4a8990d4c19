"""LossGuard under DDP: every rank measures, rank 0 reports, and a fail_on alarm stops every rank at the
same step (the decision is reduced across ranks), so the job exits non-zero instead of hanging.

    python examples/ddp.py                        # 2 processes on CPU (gloo); healthy
    python examples/ddp.py --nan-on-rank 1        # a NaN in one batch of rank 1 only: diagnosed once, job fails
    python examples/ddp.py --slow-data-on-rank 1  # rank 1's data loader is slow: rank_straggler names it
    python examples/ddp.py --stall-on-rank 1 --stall-timeout 3 --fail-on none
                                                  # rank 1 blocks for 10 s in one step: stalled_training, then
                                                  # training goes on and the report says how long it stalled

On GPUs use ``--accelerator gpu --devices N``. Lightning re-launches this script once per extra rank.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, default_collate

from lightning_lossguard import LossGuard

FAULT_BATCH = 25
"""The batch at which ``--nan-on-rank`` puts a NaN in the data and ``--stall-on-rank`` blocks."""


class Model(L.LightningModule):
    def __init__(self, nan_on_rank: int | None = None, stall_on_rank: int | None = None, stall_s: float = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
        self.nan_on_rank = nan_on_rank
        self.stall_on_rank = stall_on_rank
        self.stall_s = stall_s

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.global_rank == self.nan_on_rank and batch_idx == FAULT_BATCH:
            x = x.clone()
            x[0, 0] = float("nan")
        if self.global_rank == self.stall_on_rank and batch_idx == FAULT_BATCH:
            time.sleep(self.stall_s)  # a hang that ends: the other ranks wait for this one in backward
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nan-on-rank", type=int, default=None)
    parser.add_argument("--slow-data-on-rank", type=int, default=None, help="this rank's data loader sleeps 50 ms")
    parser.add_argument("--stall-on-rank", type=int, default=None, help="this rank blocks in one training_step")
    parser.add_argument("--stall-seconds", type=float, default=10.0)
    parser.add_argument("--stall-timeout", type=float, default=None, help="LossGuard(stall_timeout=...)")
    parser.add_argument("--fail-on", choices=["error", "warning", "none"], default="error")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    L.seed_everything(0)
    x = torch.randn(4096, 8)
    y = x.sum(1, keepdim=True) * 0.3
    slow_rank = args.slow_data_on_rank

    def collate(samples: list[Any]) -> Any:
        if slow_rank is not None and torch.distributed.is_initialized() and torch.distributed.get_rank() == slow_rank:
            time.sleep(0.05)  # a slow disk, an expensive decode: only on this rank's host
        return default_collate(samples)

    guard = LossGuard(fail_on=None if args.fail_on == "none" else args.fail_on, stall_timeout=args.stall_timeout)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp",
        max_steps=100,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[guard],
    )
    model = Model(args.nan_on_rank, args.stall_on_rank, args.stall_seconds)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16, collate_fn=collate))


if __name__ == "__main__":
    main()
