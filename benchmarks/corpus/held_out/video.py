"""Video classification with 3-D convolutions: short clips of a blob moving in one of four directions, two
Conv3d + BatchNorm3d blocks pooled over time and space, SGD with momentum and weight decay under cosine
annealing, as in the small C3D/R3D recipes."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FRAMES, SIZE = 8, 16
DIRECTIONS = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])


def _clips(n: int, seed: int = 0) -> TensorDataset:
    """``[n, 1, FRAMES, SIZE, SIZE]`` clips of a Gaussian blob moving one pixel a frame, noise 0.3; the label is
    its direction."""
    g = generator(seed)
    label = torch.randint(0, 4, (n,), generator=g)
    start = 4 + 8 * torch.rand(n, 2, generator=g)
    t = torch.arange(FRAMES, dtype=torch.float)
    centre = start[:, None, :] + t[None, :, None] * DIRECTIONS[label][:, None, :]  # [n, frames, 2]
    grid = torch.arange(SIZE, dtype=torch.float)
    dy = grid[None, None, :, None] - centre[..., 0, None, None]
    dx = grid[None, None, None, :] - centre[..., 1, None, None]
    clips = torch.exp(-(dy**2 + dx**2) / 4.0) + 0.3 * torch.randn(n, FRAMES, SIZE, SIZE, generator=g)
    return TensorDataset(clips[:, None], label)


class Clip3dNet(L.LightningModule):
    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.net = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1),
            nn.BatchNorm3d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(16, 4),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    epochs = 4
    return Run(
        Clip3dNet(epochs),
        loader(_clips(1024, seed=seed), 32, seed=seed),
        loader(_clips(256, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": epochs},
    )


PROGRAMS = [
    Program(
        "video_conv3d_h",
        "video classification",
        "two Conv3d + BatchNorm3d blocks on 8-frame clips of a moving blob, pooled over time and space, SGD with "
        "momentum 0.9 and weight decay under cosine annealing per epoch",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
    )
]
