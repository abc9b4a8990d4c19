"""Self-supervised contrastive learning: SimCLR's NT-Xent on two augmented views, with a learned temperature."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run


def augment(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """A random view: random shift by up to 2 pixels (same for the batch), flip per sample, brightness, noise."""
    dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    flip = torch.rand(len(x), 1, 1, 1, generator=g) < 0.5
    x = torch.where(flip, x.flip(3), x)
    x = x * (0.8 + 0.4 * torch.rand(len(x), 1, 1, 1, generator=g))
    return x + 0.5 * torch.randn(x.shape, generator=g)


class SimCLR(L.LightningModule):
    """Conv encoder + MLP projection head, NT-Xent over 2N views, AdamW + cosine annealing (the UvA tutorial's
    recipe) and a CLIP-style learnable log inverse temperature. Validation: loss and top-1 positive retrieval.
    """

    def __init__(self, dim: int = 32, lr: float = 3e-3, temperature: float = 0.1, max_steps: int = 160) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.projection = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def nt_xent(self, x: torch.Tensor, g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.projection(self.encoder(torch.cat([augment(x, g), augment(x, g)]))), dim=1)
        sim = z @ z.T * self.log_scale.exp().clamp(max=100)
        sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
        n = len(x)
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        loss = F.cross_entropy(sim, positives)
        top1 = (sim.argmax(1) == positives).float().mean()
        return loss, top1

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss, top1 = self.nt_xent(x)
        self.log_dict({"train_loss": loss, "train_top1": top1, "temperature": 1 / self.log_scale.exp()})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        loss, top1 = self.nt_xent(x, generator(batch_idx))  # the same views at every validation
        self.log_dict({"val_loss": loss, "val_top1": top1})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_steps, eta_min=1e-5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _simclr(seed: int) -> Run:
    # many more templates than a batch holds, so instances, not just classes, must be told apart
    data = images(1024, classes=200, size=12, noise=0.3, seed=seed)
    return Run(
        SimCLR(),
        loader(data, 32, seed=seed, drop_last=True),
        loader(images(128, classes=200, size=12, noise=0.3, seed=seed + 100), 128, shuffle=False),
        trainer={"max_steps": 160},
    )


PROGRAMS = [
    Program(
        "simclr_ntxent",
        "self-supervised contrastive",
        "SimCLR: conv encoder + projection head, NT-Xent over two augmented views, learned temperature, AdamW",
        _simclr,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
