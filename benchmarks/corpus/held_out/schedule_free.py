"""A CNN trained with schedule-free SGD written in the project, as users adopt it to drop the learning-rate schedule:
the gradient is taken at an interpolation ``y`` between the base iterate ``z`` (plain SGD steps) and their running
average ``x``; the average is what is evaluated. The parameters hold ``y`` while training, and the module swaps them
to ``x`` for validation (``optimizer.eval()`` in ``on_validation_start``, ``optimizer.train()`` after), so they
change outside any optimizer step twice per validation. A linear warm-up inside the optimizer, no scheduler."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, EPOCHS, BATCH = 10, 16, 4, 64


class ScheduleFreeSGD(torch.optim.Optimizer):
    """``z -= lr_t g(y)``; ``x`` the average of the ``z`` weighted by ``lr_t^2``; ``y = (1 - beta) z + beta x``."""

    def __init__(self, params: Iterable[Any], lr: float = 1.0, beta: float = 0.9, warmup: int = 50) -> None:
        super().__init__(params, {"lr": lr, "beta": beta, "warmup": warmup, "weight_sum": 0.0, "k": 0})
        self.training = True

    @torch.no_grad()
    def train(self) -> None:
        """The parameters to ``y`` (from ``x`` while evaluating)."""
        if not self.training:
            self._swap(to_train=True)
            self.training = True

    @torch.no_grad()
    def eval(self) -> None:
        """The parameters to the average ``x``, the point to evaluate."""
        if self.training:
            self._swap(to_train=False)
            self.training = False

    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            beta = group["beta"]
            for p in group["params"]:
                state = self.state[p]
                if "z" not in state:
                    continue  # before the first step x = y = z
                # y = (1 - beta) z + beta x  <=>  x = (y - (1 - beta) z) / beta
                if to_train:
                    p.lerp_(state["z"], 1 - beta)
                else:
                    p.lerp_(state["z"], 1 - 1 / beta)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["k"] += 1
            lr = group["lr"] * min(1.0, group["k"] / group["warmup"])
            group["weight_sum"] += lr**2
            c = lr**2 / group["weight_sum"]
            beta = group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone()
                z = state["z"]
                x = (p - (1 - beta) * z) / beta  # the average, recovered from y and z
                z.add_(p.grad, alpha=-lr)
                x.lerp_(z, c)
                p.copy_(x.lerp_(z, 1 - beta))  # the next y
        return loss


class SmallCNN(L.LightningModule):
    def __init__(self, lr: float = 0.5, beta: float = 0.9, warmup: int = 40) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def _optimizer(self) -> Any:
        optimizer = self.optimizers()
        return getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper around the user's optimizer

    def on_validation_start(self) -> None:
        if self.trainer.optimizers:
            self._optimizer().eval()

    def on_validation_end(self) -> None:
        if self.trainer.optimizers:
            self._optimizer().train()

    def configure_optimizers(self) -> Any:
        return ScheduleFreeSGD(
            self.parameters(), lr=self.hparams.lr, beta=self.hparams.beta, warmup=self.hparams.warmup
        )


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SmallCNN(),
        loader(images(4096, CLASSES, SIZE, noise=1.5, seed=seed), BATCH, seed=seed),
        loader(images(1024, CLASSES, SIZE, noise=1.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "schedule_free_sgd_h",
        "image classification",
        "schedule-free SGD written in the project: gradients at an interpolation of the SGD iterate and its average, "
        "the parameters swapped to the average for validation by the module's hooks; a warm-up, no scheduler",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "no_zero_grad"),
    )
]
