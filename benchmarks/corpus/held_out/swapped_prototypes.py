"""Self-supervised clustering by swapped prototype assignments (SwAV), as its reference recipe trains it on one
process: two augmented views of each image go through a small conv encoder and a projection head onto the unit
sphere; their scores against 24 learned prototypes (unit-norm rows, renormalised before every step) become soft codes
by three Sinkhorn-Knopp iterations (equal partition of the batch over the prototypes), and each view predicts the other
view's code (cross entropy at temperature 0.1). As the recipe does, the prototypes' gradients are set to None for the
first 60 iterations, so they stay fixed while the encoder settles. SGD with momentum, a linear warm-up then cosine
decay per step; validation logs the same loss on held-out pairs and how pure the prototypes' clusters are in classes.

The data: eight classes of smooth blob templates in noise (12 x 12); views are shifted by up to two pixels, rescaled
in brightness and given fresh noise."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

PROTOTYPES, TEMPERATURE, SINKHORN_EPS = 24, 0.1, 0.05
FREEZE_PROTOTYPE_STEPS = 60
WARMUP_STEPS, EPOCHS = 40, 10


def _view(x: torch.Tensor) -> torch.Tensor:
    shift = torch.randint(-2, 3, (2,))
    moved = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
    scale = 0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1)
    return moved * scale + 0.3 * torch.randn_like(x)


@torch.no_grad()
def _sinkhorn(scores: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Soft codes [B, K] whose columns share the batch equally (the recipe's Sinkhorn-Knopp, one process)."""
    q = torch.exp(scores / SINKHORN_EPS).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T


class SwAV(L.LightningModule):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.projection = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
        self.prototypes = nn.Linear(32, PROTOTYPES, bias=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.encoder(x)), dim=1)

    def _swapped_loss(self, x: torch.Tensor) -> torch.Tensor:
        s1, s2 = self.prototypes(self.embed(_view(x))), self.prototypes(self.embed(_view(x)))
        q1, q2 = _sinkhorn(s1.detach()), _sinkhorn(s2.detach())
        p1, p2 = F.log_softmax(s1 / TEMPERATURE, dim=1), F.log_softmax(s2 / TEMPERATURE, dim=1)
        return -0.5 * ((q1 * p2).sum(1).mean() + (q2 * p1).sum(1).mean())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        loss = self._swapped_loss(batch[0])
        self.log("train_swav", loss)
        return loss

    def on_after_backward(self) -> None:
        if self.global_step < FREEZE_PROTOTYPE_STEPS:
            self.prototypes.weight.grad = None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, labels = batch
        clusters = self.prototypes(self.embed(x)).argmax(1)
        counts = torch.zeros(PROTOTYPES, int(labels.max()) + 1)
        counts.index_put_((clusters, labels), torch.ones_like(labels, dtype=torch.float), accumulate=True)
        self.log_dict({"val_loss": self._swapped_loss(x), "val_purity": counts.max(1).values.sum() / len(labels)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

        def schedule(step: int) -> float:
            if step < WARMUP_STEPS:
                return (step + 1) / WARMUP_STEPS
            return 0.5 * (1 + math.cos(math.pi * (step - WARMUP_STEPS) / max(1, self.steps - WARMUP_STEPS)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = images(1536, classes=8, size=12, noise=0.8, seed=seed)
    batches = len(train) // 64
    return Run(
        SwAV(steps=batches * EPOCHS),
        loader(train, 64, seed=seed, drop_last=True),
        loader(images(512, classes=8, size=12, noise=0.8, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "swav_prototypes_h",
        "self-supervised clustering",
        "SwAV: a conv encoder and projection head on two augmented views, scores against 24 unit-norm prototypes "
        "turned into equal-partition codes by Sinkhorn-Knopp, each view predicting the other's code; the prototypes' "
        "gradients set to None for the first 60 iterations; SGD with a per-step warm-up and cosine decay",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen", "flipped_sign"),
    )
]
