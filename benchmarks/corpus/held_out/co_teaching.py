"""Learning with noisy labels by co-teaching (Han et al.), as robust-training code does it: two networks see the
same batch; each ranks the examples by its own cross entropy and hands its small-loss share to the other, which
trains on them only. The share kept falls from all of the batch to 1 - noise rate over the first epochs, so the
summed loss of the two networks drops in steps as the noisy examples are left out, not only because the networks
learn. Adam with its learning rate decayed linearly over the second half of training; validation on clean labels
reports both networks' accuracy and the first one's cross entropy.

The data: ten Gaussian classes in 20 dimensions, overlapping a little; 35% of the training labels are replaced by
another class drawn at random (symmetric noise), the validation labels are clean."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

CLASSES, DIM, NOISE, RAMP_EPOCHS, EPOCHS = 10, 20, 0.35, 3, 10


def _clusters(n: int, seed: int, noise: float) -> TensorDataset:
    g = generator(seed)
    centres = 0.6 * torch.randn(CLASSES, DIM, generator=generator(5))  # the same classes for every seed and split
    label = torch.randint(0, CLASSES, (n,), generator=g)
    x = centres[label] + torch.randn(n, DIM, generator=g)
    flip = torch.rand(n, generator=g) < noise
    other = (label + torch.randint(1, CLASSES, (n,), generator=g)) % CLASSES
    return TensorDataset(x, torch.where(flip, other, label))


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(DIM, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, CLASSES))


class CoTeaching(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.first = _mlp()
        self.second = _mlp()

    def keep_rate(self) -> float:
        return 1.0 - NOISE * min(1.0, self.current_epoch / RAMP_EPOCHS)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, label = batch
        first = F.cross_entropy(self.first(x), label, reduction="none")
        second = F.cross_entropy(self.second(x), label, reduction="none")
        keep = max(1, round(len(label) * self.keep_rate()))
        picked_by_first = torch.argsort(first.detach())[:keep]
        picked_by_second = torch.argsort(second.detach())[:keep]
        loss = first[picked_by_second].mean() + second[picked_by_first].mean()
        self.log_dict({"train_co_teaching": loss, "keep_rate": self.keep_rate()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, label = batch
        first, second = self.first(x), self.second(x)
        self.log_dict(
            {
                "val_loss": F.cross_entropy(first, label),
                "val_acc_first": (first.argmax(1) == label).float().mean(),
                "val_acc_second": (second.argmax(1) == label).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        half = EPOCHS // 2

        def factor(epoch: int) -> float:
            return 1.0 if epoch < half else (EPOCHS - epoch) / (EPOCHS - half)

        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, factor)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        CoTeaching(),
        loader(_clusters(4096, seed, NOISE), 128, seed=seed),
        loader(_clusters(1024, seed + 100, 0.0), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "co_teaching_noisy_h",
        "noisy-label learning",
        "two MLPs trained by co-teaching on 35% symmetric label noise: each hands its small-loss share of the batch "
        "to the other, the share falling from 1 to 0.65 over three epochs, the two losses summed; Adam with a linear "
        "decay over the second half; clean-label accuracy validated",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen", "flipped_sign"),
    )
]
