"""A CNN built from lazy modules (``nn.LazyConv2d``, ``nn.LazyBatchNorm2d``, ``nn.LazyLinear``), the pattern code
uses when input shapes are known only from the data: the module has no materialised parameters when the Trainer
starts, and they take their shapes at the first forward. AdamW with a cosine schedule over the run, three-channel
images."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

SIZE, CLASSES, EPOCHS, BATCH = 16, 8, 5, 64


class LazyCNN(L.LightningModule):
    def __init__(self, lr: float = 2e-3, total_steps: int = 320) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.LazyConv2d(24, 3, padding=1),
            nn.LazyBatchNorm2d(),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.LazyConv2d(48, 3, padding=1),
            nn.LazyBatchNorm2d(),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.LazyLinear(64), nn.GELU(), nn.Dropout(0.2), nn.LazyLinear(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        LazyCNN(),
        loader(images(4096, classes=CLASSES, size=SIZE, channels=3, noise=8.0, seed=seed), BATCH, seed=seed),
        loader(images(1024, classes=CLASSES, size=SIZE, channels=3, noise=8.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "lazy_module_cnn_h",
        "image classification",
        "a CNN of lazy modules (LazyConv2d, LazyBatchNorm2d, LazyLinear) whose parameters take their shapes at the "
        "first forward, after the Trainer has started; AdamW with a per-step cosine schedule",
        _build,
        # frozen was offered at first and could not be applied: requires_grad_ on a parameter that is not yet
        # materialised raises before training starts (torch's error for lazy modules, not a monitoring one).
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
