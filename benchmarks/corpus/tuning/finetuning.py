"""Transfer learning from a "pretrained" backbone: Lightning's BackboneFinetuning (frozen, then unfrozen at a
lower learning rate) and a linear-probe-style head on a frozen backbone called through ``self.forward``.

The backbone is pretrained inside ``build`` with a few hundred plain-PyTorch steps on a related task (other
picture templates, twice the classes), standing in for downloaded ImageNet weights.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run
from benchmarks.corpus.tuning.shared import conv_block

FEATURES = 16 * 2 * 2


def pretrained_backbone(seed: int, steps: int = 240) -> nn.Sequential:
    """A conv-BN backbone trained with Adam on a 20-class source task, returned without its head."""
    backbone = nn.Sequential(
        conv_block(1, 8), nn.MaxPool2d(2), conv_block(8, 16), nn.AdaptiveAvgPool2d(2), nn.Flatten()
    )
    head = nn.Linear(FEATURES, 20)
    x, y = images(2048, classes=20, size=12, noise=1.5, seed=seed + 500, task_seed=21).tensors
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(head(backbone(x[i])), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return backbone


def _target_task(seed: int, n: int = 768) -> tuple[Any, Any]:
    train = images(n, classes=10, size=12, noise=3.0, seed=seed, task_seed=7)
    val = images(256, classes=10, size=12, noise=3.0, seed=seed + 100, task_seed=7)
    return loader(train, 32, seed=seed), loader(val, 256, shuffle=False)


class FinetuneClassifier(L.LightningModule):
    """``backbone`` + new ``head``; the optimizer sees only trainable parameters (the callback adds the
    backbone's group when it unfreezes it)."""

    def __init__(self, backbone: nn.Module, classes: int = 10, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(FEATURES, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=self.hparams.lr)


def _finetune(seed: int) -> Run:
    train, val = _target_task(seed)
    return Run(
        FinetuneClassifier(pretrained_backbone(seed)),
        train,
        val,
        trainer={
            "max_epochs": 6,
            "callbacks": [BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_ratio_lr=0.1)],
        },
    )


class FrozenFeatureClassifier(L.LightningModule):
    """A frozen backbone (``requires_grad_(False)``, eval mode, ``torch.no_grad()``) under a trainable MLP head;
    ``training_step`` calls ``self.forward(x)`` rather than ``self(x)``; Adagrad."""

    def __init__(self, backbone: nn.Module, classes: int = 10, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, classes))

    def train(self, mode: bool = True) -> FrozenFeatureClassifier:
        """Keep the frozen backbone in eval mode (BatchNorm statistics fixed) whatever Lightning switches."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.forward(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.forward(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adagrad(self.head.parameters(), lr=self.hparams.lr)


def _frozen_features(seed: int) -> Run:
    train, val = _target_task(seed, n=1024)
    return Run(FrozenFeatureClassifier(pretrained_backbone(seed)), train, val, trainer={"max_epochs": 6})


PROGRAMS = [
    Program(
        "backbone_finetuning",
        "transfer learning",
        "a pretrained conv backbone fine-tuned with Lightning's BackboneFinetuning: head only for 2 epochs, "
        "then the backbone unfrozen at a tenth of the lr and ramped up, Adam",
        _finetune,
        faults=("nan_batch", "flipped_sign", "lr_div_1e6"),
    ),
    Program(
        "frozen_backbone_forward",
        "transfer learning",
        "a frozen pretrained backbone under torch.no_grad() with a trainable MLP head, training_step calling "
        "self.forward(x) directly, Adagrad",
        _frozen_features,
        faults=("flipped_sign", "lr_x1000", "lr_div_1e6"),
    ),
]
