"""Keypoint localisation by heatmap regression, as pose and facial-landmark models train it: a small fully
convolutional network (batch-normed 3x3 convolutions, one with stride 2, two dilated) outputs one heatmap per keypoint
at half the input resolution, and the loss is the mean squared error against Gaussian bumps centred on the true
keypoints. Most target pixels are 0, so the loss is small from the start (~0.02) and an all-zero prediction is an early
resting point the network leaves once it finds the keypoints. Adam at 1e-3 with a step decay; validation reports the
mean distance, in input pixels, between each heatmap's peak and its keypoint.

The data: 32x32 noisy images holding a 3x3 square (keypoint 0, its centre) and a plus sign with arms of 3 pixels
(keypoint 1, its centre) at random places."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

SIZE, STRIDE, SIGMA, KEYPOINTS = 32, 2, 1.0, 2


def _scenes(n: int, seed: int) -> TensorDataset:
    """``(image [n, 1, SIZE, SIZE], heatmaps [n, KEYPOINTS, SIZE/STRIDE, SIZE/STRIDE], keypoints [n, KEYPOINTS, 2])``;
    keypoints are (row, column) in input pixels; heatmap cell i covers input pixels STRIDE*i ... STRIDE*i+STRIDE-1."""
    g = generator(seed)
    image = 0.15 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    keypoints = torch.randint(4, SIZE - 4, (n, KEYPOINTS, 2), generator=g)
    rows = torch.arange(SIZE).view(1, SIZE, 1)
    cols = torch.arange(SIZE).view(1, 1, SIZE)
    sy, sx = keypoints[:, 0, 0].view(n, 1, 1), keypoints[:, 0, 1].view(n, 1, 1)
    square = ((rows - sy).abs() <= 1) & ((cols - sx).abs() <= 1)
    py, px = keypoints[:, 1, 0].view(n, 1, 1), keypoints[:, 1, 1].view(n, 1, 1)
    plus = (((rows - py).abs() <= 3) & (cols == px)) | (((cols - px).abs() <= 3) & (rows == py))
    image[:, 0] += (square | plus).float()
    cells = torch.arange(SIZE // STRIDE).float() * STRIDE + (STRIDE - 1) / 2  # each cell's centre, in input pixels
    dy = cells.view(1, 1, -1, 1) - keypoints[..., 0].float().view(n, KEYPOINTS, 1, 1)
    dx = cells.view(1, 1, 1, -1) - keypoints[..., 1].float().view(n, KEYPOINTS, 1, 1)
    heatmaps = torch.exp(-(dy**2 + dx**2) / (2 * (SIGMA * STRIDE) ** 2))
    return TensorDataset(image, heatmaps, keypoints.float())


def _block(inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(),
    )


class HeatmapNet(L.LightningModule):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(1, width // 2),
            _block(width // 2, width, stride=2),
            _block(width, width, dilation=2),
            _block(width, width, dilation=4),
        )
        self.head = nn.Conv2d(width, KEYPOINTS, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        heatmaps: torch.Tensor = self.head(self.features(image))
        return heatmaps

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, heatmaps, _ = batch
        loss = F.mse_loss(self(image), heatmaps)
        self.log("train_heatmap_mse", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        image, heatmaps, keypoints = batch
        predicted = self(image)
        width = predicted.shape[-1]
        peak = predicted.flatten(2).argmax(2)
        found = torch.stack([peak // width, peak % width], -1).float() * STRIDE + (STRIDE - 1) / 2
        distance = (found - keypoints).norm(dim=-1)
        self.log_dict(
            {
                "val_loss": F.mse_loss(predicted, heatmaps),
                "val_pixel_error": distance.mean(),
                "val_pck2": (distance <= 2).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[5, 7], gamma=0.1)
        return [optimizer], [schedule]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        HeatmapNet(),
        loader(_scenes(2048, seed), 32, seed=seed),
        loader(_scenes(512, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "keypoint_heatmaps_h",
        "keypoint localisation",
        "a fully convolutional network (batch-normed 3x3 convolutions, a strided and two dilated ones) regressing one "
        "Gaussian heatmap per keypoint with a mean squared error over mostly-zero targets; Adam with a step decay; "
        "the peaks' distance to the keypoints validated",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch", "frozen"),
    )
]
