"""Losses shaped by the labels: a multi-label classifier whose binary cross-entropy is mostly the easy negatives,
and a fine-tune with layer-wise learning-rate decay, whose bottom layers move a hundred times slower than its
head on purpose."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader, regression
from benchmarks.corpus.program import Program, Run


def _tagged(n: int, features: int = 32, labels: int = 40, seed: int = 0, task_seed: int = 23) -> TensorDataset:
    """Inputs with 40 binary labels, ~6% of them on: each label a noisy threshold of its own projection."""
    task = generator(task_seed)
    directions = torch.randn(features, labels, generator=task)
    s = generator(seed)
    x = torch.randn(n, features, generator=s)
    scores = x @ directions / features**0.5 + 0.3 * torch.randn(n, labels, generator=s)
    return TensorDataset(x, (scores > 1.55).float())


class MultiLabelTagger(L.LightningModule):
    """An MLP with one logit per label, mean binary cross-entropy over every (sample, label) pair, AdamW with cosine
    decay per epoch, micro-F1 at a 0.5 threshold in validation. The loss falls fast to the label prior (~0.23), then
    slowly as the positives are learned."""

    def __init__(self, features: int = 32, labels: int = 40, width: int = 128, epochs: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(features, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, labels)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self.head(self.net(x)), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.head(self.net(x))
        predicted = logits > 0
        true_positives = (predicted & (y > 0)).sum()
        f1 = 2 * true_positives / (predicted.sum() + y.sum()).clamp(min=1)
        self.log_dict({"val_loss": F.binary_cross_entropy_with_logits(logits, y), "val_micro_f1": f1})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.01)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs)]


def _build_tagger(seed: int) -> Run:
    return Run(
        MultiLabelTagger(),
        loader(_tagged(3072, seed=seed), 64, seed=seed),
        loader(_tagged(768, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 10},
    )


class LayerwiseDecayFinetune(L.LightningModule):
    """A six-block residual MLP pretrained (in ``build``) on one regression task and fine-tuned on a related one,
    each block in its own parameter group with the learning rate decayed 0.4x per block down from the head (the
    BERT/ViT fine-tuning recipe): the first block learns at 0.4^6 = 0.4% of the head's rate. AdamW, linear decay."""

    def __init__(self, features: int = 16, width: int = 64, blocks: int = 6, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Linear(features, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(blocks)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        h = self.hparams
        layers = [self.stem, *self.blocks]
        groups = [{"params": self.head.parameters(), "lr": h.lr}]
        for depth, layer in enumerate(reversed(layers), start=1):
            groups.append({"params": layer.parameters(), "lr": h.lr * 0.4**depth})
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
        steps = self.trainer.estimated_stepping_batches
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


def _pretrain(module: LayerwiseDecayFinetune, seed: int) -> None:
    source = regression(2048, noise=0.1, seed=seed + 200, task_seed=31)
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    for _ in range(3):
        for x, y in loader(source, 64, seed=seed):
            optimizer.zero_grad()
            F.mse_loss(module(x), y).backward()
            optimizer.step()


def _build_finetune(seed: int) -> Run:
    module = LayerwiseDecayFinetune()
    _pretrain(module, seed)
    return Run(
        module,
        loader(regression(1536, noise=0.2, seed=seed), 32, seed=seed),
        loader(regression(512, noise=0.2, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "multilabel_bce_h",
        "multi-label classification",
        "an MLP with 40 sigmoid outputs (~6% positive), mean binary cross-entropy over every label, AdamW with "
        "cosine decay, validation micro-F1",
        _build_tagger,
        faults=("lr_x1000", "frozen", "nan_batch"),
    ),
    Program(
        "layerwise_lr_decay_finetune_h",
        "fine-tuning",
        "a pretrained residual MLP fine-tuned on a related task with layer-wise learning-rate decay (0.4x per "
        "block: the first block at 0.4% of the head's rate), AdamW, linear decay per step",
        _build_finetune,
        faults=("lr_x1000", "flipped_sign", "nan_batch"),
    ),
]
