"""A PixelCNN on binarised images, as autoregressive image models are trained: a 7x7 convolution masked so that
each pixel sees only the pixels above it and to its left (mask "A", which hides the pixel itself), then residual
blocks of masked 3x3 convolutions (mask "B", which shows it) with BatchNorm and ReLU, and 1x1 convolutions to one
logit per pixel. The loss is every pixel's Bernoulli negative log likelihood given the pixels before it (binary cross
entropy with logits), in nats per pixel; validation reports it in bits per dimension. Adam at 1e-3 with an
exponential decay per epoch.

The images: 16x16 binarised strokes (a few random horizontal, vertical and diagonal segments of 2-6 pixels per
image, plus a filled rectangle in half of them): local structure a causal model can predict from its neighbours."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

SIZE = 16


def _strokes(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    images = torch.zeros(n, 1, SIZE, SIZE)
    directions = torch.tensor([[0, 1], [1, 0], [1, 1], [1, -1]])
    for i in range(n):
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            row, col = torch.randint(0, SIZE, (2,), generator=g).tolist()
            d_row, d_col = directions[int(torch.randint(0, 4, (1,), generator=g))].tolist()
            for _ in range(int(torch.randint(2, 7, (1,), generator=g))):
                if 0 <= row < SIZE and 0 <= col < SIZE:
                    images[i, 0, row, col] = 1.0
                row, col = row + d_row, col + d_col
        if float(torch.rand(1, generator=g)) < 0.5:
            top, left = torch.randint(0, SIZE - 4, (2,), generator=g).tolist()
            height, width = torch.randint(2, 5, (2,), generator=g).tolist()
            images[i, 0, top : top + height, left : left + width] = 1.0
    return TensorDataset(images)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel sees only pixels above, and to the left on the centre row (the centre itself too
    for mask "B")."""

    def __init__(self, mask: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        k = self.kernel_size[0]
        allowed = torch.ones(k, k)
        allowed[k // 2, k // 2 + (mask == "B") :] = 0
        allowed[k // 2 + 1 :] = 0
        self.register_buffer("mask", allowed[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels // 2, 1),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(),
            MaskedConv2d("B", channels // 2, channels // 2, 3, padding=1),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelCNN(L.LightningModule):
    def __init__(self, channels: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.input = MaskedConv2d("A", 1, channels, 7, padding=3)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.logits = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.head(self.blocks(self.input(x))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss = F.binary_cross_entropy_with_logits(self(x), x)
        self.log("train_nats_per_pixel", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (x,) = batch
        loss = F.binary_cross_entropy_with_logits(self(x), x)
        self.log_dict({"val_loss": loss, "val_bits_per_dim": loss / math.log(2)})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)]


def _build(seed: int) -> Run:
    return Run(
        PixelCNN(),
        loader(_strokes(2048, seed), 32, seed=seed),
        loader(_strokes(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "pixelcnn_binary_h",
        "autoregressive image model",
        "a PixelCNN (a mask-A 7x7 convolution, residual blocks of mask-B 3x3 convolutions with BatchNorm, 1x1 "
        "convolutions to per-pixel logits) trained on binarised strokes with per-pixel binary cross entropy, "
        "validated in bits per dimension; Adam with an exponential decay",
        _build,
        faults=("lr_x1000", "nan_batch", "exp_output"),
        output_module="logits",
    )
]
