"""A classifier trained with the Lion optimizer written in the project itself, as users paste it from the paper: the
update is the sign of an interpolation of the momentum and the gradient, so every weight moves by exactly the learning
rate each step whatever its gradient's size, with decoupled weight decay; the momentum is updated with a second,
slower coefficient. It handles Lightning's closure. A learning rate a few times below AdamW's with a larger weight
decay, linear warm-up then cosine decay per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES = 10


class Lion(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(exp_avg * beta1 + p.grad * (1 - beta1)), alpha=-group["lr"])
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


class LionClassifier(L.LightningModule):
    def __init__(self, lr: float = 3e-4, warmup: int = 60) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(32 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

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
        optimizer = Lion(self.parameters(), lr=self.hparams.lr, weight_decay=0.1)
        total = self.trainer.estimated_stepping_batches
        warmup = self.hparams.warmup

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return [optimizer], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        LionClassifier(),
        loader(images(4000, classes=CLASSES, noise=3.0, seed=seed), 64, seed=seed),
        loader(images(1000, classes=CLASSES, noise=3.0, seed=seed + 100), 500, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "lion_sign_optimizer_h",
        "image classification",
        "a CNN trained with a hand-written Lion optimizer (sign of interpolated momentum: every weight moves by the "
        "learning rate each step; decoupled weight decay 0.1; Lightning's closure handled), warm-up then cosine per "
        "step",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6", "no_zero_grad"),
    )
]
