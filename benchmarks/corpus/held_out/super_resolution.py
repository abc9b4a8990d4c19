"""Single-image super-resolution with residual learning (VDSR/EDSR style): the network adds a correction to the
bicubic upsampling of the low-resolution image, trained with an L1 loss. The upsampled input is already close to
the target, so the loss starts low and the network can only win back a part of it: a modest relative fall that
must not read as a plateau. Adam with a step decay, PSNR on validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

SIZE, SCALE = 20, 2


def _scenes(n: int, seed: int) -> TensorDataset:
    """``(low [n, 1, SIZE/2, SIZE/2], high [n, 1, SIZE, SIZE])``: images of soft blobs, oriented stripes and
    edges (detail a bicubic upsampling blurs), and their 2x area-downsampled versions."""
    s = generator(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    images = torch.zeros(n, 1, SIZE, SIZE)
    for _ in range(3):
        angle = torch.rand(n, 1, 1, generator=s) * 3.1416
        frequency = 4 + 6 * torch.rand(n, 1, 1, generator=s)
        stripes = torch.sin(frequency * (xs * torch.cos(angle) + ys * torch.sin(angle)))
        centre = torch.rand(n, 2, 1, 1, generator=s) * 1.6 - 0.8
        blob = torch.exp(-((xs - centre[:, 0]) ** 2 + (ys - centre[:, 1]) ** 2) / 0.15)
        edge = (xs * torch.cos(angle + 1) + ys * torch.sin(angle + 1) > centre[:, 0]).float()
        images[:, 0] += 0.3 * stripes * blob + 0.3 * edge + 0.2 * blob
    high = images / 3
    low = F.avg_pool2d(high, SCALE)
    return TensorDataset(low, high)


class ResidualSR(L.LightningModule):
    def __init__(self, width: int = 24, blocks: int = 3, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(blocks):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(low, scale_factor=SCALE, mode="bicubic", align_corners=False)
        return upsampled + self.body(upsampled)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        low, high = batch
        loss = F.l1_loss(self(low), high)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        low, high = batch
        restored = self(low)
        psnr = 10 * torch.log10(1 / F.mse_loss(restored, high))
        bicubic = F.interpolate(low, scale_factor=SCALE, mode="bicubic", align_corners=False)
        baseline = 10 * torch.log10(1 / F.mse_loss(bicubic, high))
        self.log_dict({"val_loss": F.l1_loss(restored, high), "val_psnr": psnr, "val_psnr_gain": psnr - baseline})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    return Run(
        ResidualSR(),
        loader(_scenes(768, seed), 16, seed=seed),
        loader(_scenes(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "residual_sr_h",
        "super-resolution",
        "VDSR-style residual super-resolution: a conv net adds a correction to the bicubic 2x upsampling, L1 loss "
        "(starts low: the upsampling is already close), Adam with StepLR, PSNR gain over bicubic on validation",
        _build,
        faults=("lr_x1000", "no_zero_grad", "exp_output"),
        output_module="body",
    )
]
