"""LossGuard under FSDP2 (``ModelParallelStrategy`` + ``fully_shard``): gradients arrive as sharded DTensors, and the
per-layer and total norms LossGuard reports are those of the whole, unsharded model.

    python examples/fsdp2.py                     # 2 processes on CPU (gloo), each holding half of every weight
    python examples/fsdp2.py --fault exploding   # SGD lr too high: exploding_gradients names the layer
    python examples/fsdp2.py --reference         # the same model and data, unsharded, in one process
    python examples/fsdp2.py --fsdp1 --accelerator gpu   # Lightning's FSDPStrategy (FSDP1, needs 2 GPUs)

Each rank sums the squares of its own shards on the device; the ranks' sums are combined once per report
interval, in the one collective LossGuard makes there. ``--reference`` trains the same model (same seed, same
initial weights) on the same global batches in a single process, so both runs see the same gradients.
On GPUs use ``--accelerator gpu --devices N``. Lightning re-launches this script once per extra rank.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from lightning_lossguard import LossGuard

BATCH_SIZE = 32
"""Samples per optimizer step, split evenly over the ranks (the reference takes them in one piece)."""
JUMP_AT = 100
"""``--fault exploding``: the optimizer step at which the learning rate jumps 10x."""


class Regressor(L.LightningModule):
    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def configure_model(self) -> None:
        if self.device_mesh is None:  # the unsharded reference, or FSDPStrategy (it wraps the layers itself)
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def train_dataloader(self) -> DataLoader:
        # Rank r of n takes the samples r, r + n, r + 2n, ... in order: the global batch of each step is the same
        # 32 samples as the reference's (Lightning's own distributed sampler would shuffle them).
        n, rank = self.trainer.world_size, self.trainer.global_rank
        samples = data()
        return DataLoader(Subset(samples, range(rank, len(samples), n)), batch_size=BATCH_SIZE // n)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        jump = JUMP_AT if self.fault == "exploding" else None

        def factor(step: int) -> float:  # the fault: the learning rate jumps 10x instead of decaying
            return 10.0 if jump is not None and step >= jump else 1.0

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8192, 16, generator=generator)
    y = 2 * torch.tanh(x @ (torch.randn(16, 1, generator=generator) / math.sqrt(16)))
    return TensorDataset(x, y)


def main(argv: list[str] | None = None, callbacks: list[Any] | None = None) -> L.Trainer:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=["none", "exploding"], default="none")
    parser.add_argument("--reference", action="store_true", help="one process, unsharded, the same global batches")
    parser.add_argument("--fsdp1", action="store_true", help="Lightning's FSDPStrategy instead (needs CUDA)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args(argv)
    L.seed_everything(0)
    model = Regressor(args.fault)  # built before sharding: every rank (and the reference) starts from the same weights
    if args.reference:
        strategy: Any = "auto"
        devices = 1
    elif args.fsdp1:
        strategy = FSDPStrategy(auto_wrap_policy={nn.Linear}, use_orig_params=True)
        devices = args.devices
    else:
        strategy = ModelParallelStrategy(data_parallel_size=args.devices, tensor_parallel_size=1)
        devices = args.devices
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=devices,
        strategy=strategy,
        max_steps=args.steps,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,  # train_dataloader splits each global batch over the ranks itself
        # budget=None: norms on every step, so the sharded run and the --reference run compare step for step (a
        # single process otherwise measures them on a stride to stay in budget; even a budget of 1.0, 100%, strides
        # on a slow host, where the first batch's set-up outweighs a short run's steps and is paid back).
        callbacks=[LossGuard(fail_on="error", budget=None), *(callbacks or [])],
    )
    trainer.fit(model)
    return trainer


if __name__ == "__main__":
    main()
