"""LoRA fine-tuning: a frozen base network adapted by low-rank adapters (B initialised to zero, so A gets no
gradient until B moves), a trainable head, AdamW with linear warm-up and decay stepped per batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

IN, HIDDEN, CLASSES, RANK = 32, 96, 8, 4


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B A x`` with the base frozen; A Kaiming-uniform, B zero."""

    def __init__(self, base: nn.Linear, rank: int = RANK, alpha: float = 8.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def _base(seed: int) -> nn.Sequential:
    torch.manual_seed(1000 + seed)  # the "pretrained" network: fixed per seed
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU())


def _task(n: int, seed: int, task_seed: int) -> TensorDataset:
    """Labels from the base network shifted by a rank-2 change of its first layer: what LoRA can learn."""
    base = _base(task_seed)
    g = generator(task_seed)
    first = base[0]
    with torch.no_grad():
        first.weight += 0.6 * torch.randn(HIDDEN, 2, generator=g) @ torch.randn(2, IN, generator=g) / IN**0.5
        readout = torch.randn(HIDDEN, CLASSES, generator=g)
        x = torch.randn(n, IN, generator=generator(seed))
        labels = (base(x) @ readout).argmax(1)
    return TensorDataset(x, labels)


class LoRAClassifier(L.LightningModule):
    def __init__(self, base_seed: int, lr: float = 3e-3, warmup: int = 30, total: int = 320) -> None:
        super().__init__()
        self.save_hyperparameters()
        base = _base(base_seed)
        self.body = nn.Sequential(LoRALinear(base[0]), base[1], LoRALinear(base[2]), base[3])
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

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
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=0.01)
        warmup, total = self.hparams.warmup, self.hparams.total

        def factor(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    # The base is the task's network before its change (task_seed 3): the same "pretrained" weights for every seed.
    return Run(
        LoRAClassifier(base_seed=3),
        loader(_task(4096, seed, task_seed=3), 64, seed=seed),
        loader(_task(1024, seed + 100, task_seed=3), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "lora_adapters_h",
        "fine-tuning",
        "LoRA: rank-4 adapters on a frozen base's two linear layers (B zero-initialised), a trainable head, AdamW "
        "with linear warm-up and decay per step",
        _build,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    )
]
