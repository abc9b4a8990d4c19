"""A capsule network: a convolution, primary capsules (vectors of 8 squashed by their length), class capsules of 16
reached by three iterations of routing by agreement (coupling coefficients from a softmax over agreement logits,
recomputed in every forward and not trained), and the margin loss on the class capsules' lengths. Adam 1e-3 with
exponential decay per epoch, as in the paper."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 10


def squash(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shrinks a vector's length into [0, 1) and keeps its direction."""
    norm2 = (s * s).sum(dim, keepdim=True)
    return norm2 / (1 + norm2) * s / torch.sqrt(norm2 + 1e-8)


class CapsuleNet(L.LightningModule):
    def __init__(self, primary_types: int = 8, routing: int = 3) -> None:
        super().__init__()
        self.routing = routing
        self.conv = nn.Conv2d(1, 32, 5)  # 16 -> 12
        self.primary = nn.Conv2d(32, primary_types * 8, 5, stride=2)  # 12 -> 4: 8 types x 4 x 4 capsules of 8
        capsules = primary_types * 4 * 4
        self.weights = nn.Parameter(0.05 * torch.randn(capsules, CLASSES, 16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        p = self.primary(h)  # [B, types * 8, 4, 4]
        b = p.shape[0]
        u = squash(p.reshape(b, -1, 8, 16).permute(0, 1, 3, 2).reshape(b, -1, 8))  # [B, capsules, 8]
        u_hat = torch.einsum("ncdk,bnk->bncd", self.weights, u)  # predictions for each class capsule
        logits = torch.zeros(b, u_hat.shape[1], CLASSES, device=x.device)
        for i in range(self.routing):
            coupling = logits.softmax(dim=2)
            v = squash((coupling[..., None] * u_hat).sum(1))  # [B, classes, 16]
            if i < self.routing - 1:
                logits = logits + (u_hat * v[:, None]).sum(-1)
        return v.norm(dim=-1)  # class capsule lengths in [0, 1)

    def margin_loss(self, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        present = F.one_hot(y, CLASSES).float()
        loss = present * F.relu(0.9 - lengths) ** 2 + 0.5 * (1 - present) * F.relu(lengths - 0.1) ** 2
        return loss.sum(1).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.margin_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        lengths = self(x)
        self.log_dict({"val_loss": self.margin_loss(lengths, y), "val_acc": (lengths.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        CapsuleNet(),
        loader(images(1536, noise=3.0, seed=seed), 64, seed=seed),
        loader(images(512, noise=3.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "capsule_routing_h",
        "capsule network",
        "a capsule network: convolution, squashed primary capsules, class capsules by three iterations of routing by "
        "agreement, margin loss on capsule lengths; Adam 1e-3 with exponential decay per epoch",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
