"""Semantic segmentation: a small UNet with per-pixel cross-entropy, in the style of the Pytorch-UNet repos."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import loader
from benchmarks.corpus.program import Program, Run
from benchmarks.corpus.tuning.shared import conv_block, shapes


class UNet(nn.Module):
    """Two-level encoder-decoder with a skip connection: down, bottleneck, transposed-conv up, concat, 1x1 out."""

    def __init__(self, classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.down = conv_block(1, width)
        self.bottom = nn.Sequential(nn.MaxPool2d(2), conv_block(width, 2 * width))
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.decode = conv_block(2 * width, width)
        self.out = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        x = self.up(self.bottom(skip))
        return self.out(self.decode(torch.cat([skip, x], dim=1)))


class Segmenter(L.LightningModule):
    """RMSprop with momentum, per-pixel CE, ReduceLROnPlateau on validation mean IoU (mode max)."""

    def __init__(self, classes: int = 3, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.unet = UNet(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, mask = batch
        loss = F.cross_entropy(self(image), mask)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        image, mask = batch
        logits = self(image)
        pred = logits.argmax(1)
        ious = []
        for c in range(self.hparams.classes):
            inter = ((pred == c) & (mask == c)).sum()
            union = ((pred == c) | (mask == c)).sum()
            ious.append(inter.float() / union.clamp(min=1))
        self.log("val_loss", F.cross_entropy(logits, mask))
        self.log("val_miou", torch.stack(ious).mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-8)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_miou"}}


def _unet(seed: int) -> Run:
    return Run(
        Segmenter(),
        loader(shapes(384, size=12, noise=0.6, seed=seed), 16, seed=seed),
        loader(shapes(128, size=12, noise=0.6, seed=seed + 100), 128, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "unet_segmentation",
        "semantic segmentation",
        "a two-level UNet with skip connection, per-pixel cross-entropy, RMSprop + ReduceLROnPlateau on val mIoU",
        _unet,
        faults=("flipped_sign", "lr_div_1e6", "frozen"),
    )
]
