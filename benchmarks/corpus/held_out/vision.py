"""Image classification with a tiny Vision Transformer: patch embedding, CLS token, pre-norm encoder, AdamW
with linear warm-up and cosine decay stepped every batch."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class TinyViT(L.LightningModule):
    """Conv patch embedding, learned positions, a CLS token, two pre-norm transformer layers, a linear head
    on the CLS output; AdamW, warm-up then cosine per step, torchmetrics accuracy."""

    def __init__(
        self, size: int = 16, patch: int = 4, dim: int = 32, classes: int = 6, lr: float = 2e-3, total: int = 100
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.patches = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.cls.expand(len(x), -1, -1), tokens), 1) + self.pos
        return self.head(self.norm(self.encoder(tokens))[:, 0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": self.val_acc})

    def configure_optimizers(self) -> Any:
        decay = [p for n, p in self.named_parameters() if p.ndim > 1 and "pos" not in n]
        rest = [p for n, p in self.named_parameters() if p.ndim <= 1 or "pos" in n]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=self.hparams.lr
        )
        total, warmup = self.hparams.total, self.hparams.total // 10

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    total = 100
    return Run(
        TinyViT(total=total),
        loader(images(800, classes=6, noise=1.5, seed=seed), 32, seed=seed),
        loader(images(256, classes=6, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_steps": total, "val_check_interval": 25},
    )


PROGRAMS = [
    Program(
        "vit_tiny_h",
        "image classification",
        "a two-layer Vision Transformer (patch embedding, CLS token, pre-norm), AdamW without decay on norms "
        "and positions, 10% linear warm-up then cosine per step, label smoothing, torchmetrics accuracy",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
