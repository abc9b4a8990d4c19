"""A CNN trained with a large batch under LARS written in the project, as large-batch recipes do: each layer's step
is scaled by a trust ratio ``eta * |w| / (|g| + wd * |w|)`` so that every layer moves by about the same share of
its weights, biases and BatchNorm parameters left out of the ratio and of the weight decay; SGD momentum, the
learning rate scaled up with the batch (256), a linear warm-up then a polynomial decay, stepped per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, EPOCHS, BATCH, SAMPLES = 10, 16, 12, 256, 4096


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose groups marked ``lars`` take the layer-wise trust ratio and the weight decay."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, momentum: float = 0.9, eta: float = 1e-3) -> None:
        super().__init__(groups, {"lr": lr, "momentum": momentum, "eta": eta, "weight_decay": 0.0, "lars": True})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["lars"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm)
                    )
                    d = d.mul(trust)
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = d.clone()
                else:
                    state["momentum"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum"], alpha=-group["lr"])
        return loss


class WideCNN(L.LightningModule):
    def __init__(self, lr: float = 3.0, warmup: int = 20, total_steps: int = EPOCHS * SAMPLES // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(1, 16, 2), *block(16, 32, 1), *block(32, 32, 2), nn.AdaptiveAvgPool2d(1))
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

    def configure_optimizers(self) -> Any:
        matrices = [p for p in self.parameters() if p.ndim > 1]
        others = [p for p in self.parameters() if p.ndim <= 1]  # biases and BatchNorm: no ratio, no decay
        optimizer = LARS(
            [{"params": matrices, "weight_decay": 5e-4}, {"params": others, "lars": False}], lr=self.hparams.lr
        )
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, 1 - (step - warmup) / (total - warmup)) ** 2

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        WideCNN(),
        loader(images(SAMPLES, CLASSES, SIZE, noise=2.0, seed=seed), BATCH, seed=seed),
        loader(images(1024, CLASSES, SIZE, noise=2.0, seed=seed + 100), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "lars_large_batch_h",
        "image classification",
        "large-batch training under LARS written in the project: a per-layer trust ratio on the weights, biases and "
        "BatchNorm left out; SGD momentum at a learning rate scaled with the batch, warm-up then polynomial decay",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
    )
]
