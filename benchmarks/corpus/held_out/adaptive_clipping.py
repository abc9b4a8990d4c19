"""A normalizer-free residual CNN, as NFNet-style recipes train it: no BatchNorm, convolutions with scaled weight
standardisation (each filter normalised in the forward pass, times a learned gain), residual branches scaled by a
learned scalar that starts at zero (SkipInit), and adaptive gradient clipping written in the module's
``configure_gradient_clipping``: each unit's gradient is clipped to ``0.02`` of that unit's weight norm, the
classifier left out. SGD with Nesterov momentum, warm-up then cosine decay per step."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, WIDTH, EPOCHS, BATCH, SAMPLES = 10, 16, 3, 32, 6, 64, 2048
CLIP = 0.02


class StandardizedConv(nn.Conv2d):
    """Each output filter standardised to zero mean and unit variance over its fan-in, then a learned gain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) * torch.rsqrt(var * fan_in + 1e-4) * self.gain
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class ResidualBlock(nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta  # 1 / the expected standard deviation of the input
        self.first = StandardizedConv(WIDTH, WIDTH, 3, padding=1)
        self.second = StandardizedConv(WIDTH, WIDTH, 3, padding=1)
        self.skip_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.second(F.gelu(self.first(F.gelu(x) * self.beta)))
        return x + self.skip_gain * h


def adaptive_clip(parameters: list[nn.Parameter], clip: float, eps: float = 1e-3) -> None:
    """Scale each unit's gradient (a row of the weight) so that its norm is at most ``clip`` times the unit's weight
    norm (at least ``eps``)."""
    for p in parameters:
        if p.grad is None:
            continue
        dims = tuple(range(1, p.ndim)) if p.ndim > 1 else None
        weight_norm = torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=True).clamp_min(eps)
        grad_norm = torch.linalg.vector_norm(p.grad, dim=dims, keepdim=True)
        limit = clip * weight_norm
        p.grad.mul_(torch.where(grad_norm > limit, limit / grad_norm.clamp_min(1e-6), torch.ones_like(grad_norm)))


class NormalizerFreeCNN(L.LightningModule):
    def __init__(self, lr: float = 0.1, warmup: int = 20, total_steps: int = EPOCHS * SAMPLES // BATCH) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = StandardizedConv(CHANNELS, WIDTH, 3, stride=2, padding=1)
        expected_var = 1.0
        blocks = []
        for _ in range(3):
            blocks.append(ResidualBlock(1 / math.sqrt(expected_var)))
            expected_var += 0.2**2
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(WIDTH, CLASSES)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.blocks(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        head = {id(p) for p in self.head.parameters()}
        adaptive_clip([p for p in self.parameters() if id(p) not in head], CLIP)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        NormalizerFreeCNN(),
        loader(images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed), BATCH, seed=seed),
        loader(images(512, CLASSES, SIZE, CHANNELS, noise=2.5, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "agc_normalizer_free_h",
        "image classification",
        "a normalizer-free residual CNN (weight-standardised convolutions, zero-initialised residual gains) with "
        "adaptive gradient clipping written in configure_gradient_clipping; SGD Nesterov, warm-up then cosine",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
