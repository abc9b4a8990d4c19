"""A neural field with a multi-resolution hash encoding (Instant-NGP style) fitted to a 2-D signal: each of six grid
levels (4 to 64 cells a side) looks up learned features at the four corners of the cell a coordinate falls in (fine
levels through a hash table of 1,024 rows, so cells collide), interpolates them bilinearly, and a small MLP maps the
concatenated features to the value. The tables start at +-1e-4 and most of their rows get no gradient in a batch.
Adam with the recipe's betas (0.9, 0.99) and eps 1e-15, a learning rate of 1e-2, exponential decay."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

LEVELS, TABLE, FEATURES = 6, 1024, 2
RESOLUTIONS = tuple(int(4 * 2**level) for level in range(LEVELS))  # 4 .. 128: the finest levels hash
PRIME = 2654435761


def _signal(points: torch.Tensor) -> torch.Tensor:
    """A picture-like function of (x, y) in [0, 1]^2: smooth shading, a sharp disc edge and fine stripes."""
    x, y = points[:, 0], points[:, 1]
    disc = ((x - 0.4) ** 2 + (y - 0.55) ** 2 < 0.06).float()
    stripes = 0.3 * torch.sin(40 * x + 15 * y) * (y > 0.5).float()
    return (0.5 * x * y + disc + stripes).unsqueeze(1)


def _samples(n: int, seed: int) -> TensorDataset:
    points = torch.rand(n, 2, generator=generator(seed))
    return TensorDataset(points, _signal(points))


class HashGridField(L.LightningModule):
    """Hash-grid encoding (6 levels x 2 features) -> MLP 64-64 -> value; MSE."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = nn.Parameter(torch.empty(LEVELS, TABLE, FEATURES).uniform_(-1e-4, 1e-4))
        self.mlp = nn.Sequential(
            nn.Linear(LEVELS * FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        features = []
        for level, resolution in enumerate(RESOLUTIONS):
            scaled = points * resolution
            cell = scaled.floor().long()
            frac = scaled - cell
            level_features = 0
            for dx in (0, 1):
                for dy in (0, 1):
                    cx, cy = cell[:, 0] + dx, cell[:, 1] + dy
                    # A coarse level has a row per vertex; a fine one hashes, and vertices share rows.
                    hashed = (resolution + 1) ** 2 > TABLE
                    index = (cx ^ (cy * PRIME)) % TABLE if hashed else cx * (resolution + 1) + cy
                    weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
                    level_features = level_features + weight.unsqueeze(1) * self.tables[level, index]
            features.append(level_features)
        return torch.cat(features, 1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encode(points))

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        points, value = batch
        prediction = self(points)
        loss = F.mse_loss(prediction, value)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": prediction, "target": value}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        points, value = batch
        mse = F.mse_loss(self(points), value)
        self.log_dict({"val_loss": mse, "val_psnr": 10 * torch.log10(1 / mse)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.7)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        HashGridField(),
        loader(_samples(16384, seed), 512, seed=seed),
        loader(_samples(4096, seed + 100), 4096, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "hash_grid_field_h",
        "neural field (hash encoding)",
        "an Instant-NGP-style neural field: six grid levels of learned features (fine levels hashed into 1,024-row "
        "tables, initialised at +-1e-4), bilinear interpolation, MLP; Adam (0.9, 0.99, eps 1e-15), lr 1e-2 decaying",
        _build,
        faults=("lr_x1000", "no_zero_grad", "frozen"),
        output_monitor=True,
    )
]
