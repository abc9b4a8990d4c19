"""Quantization-aware training: an MLP trained in float for two epochs, then with fake int8 weights (symmetric,
per tensor) and uint8 activations (a running-max range, clipped above it); rounding passes the gradient straight
through, clipping zeroes it. SGD with momentum, a step schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Round to the grid ``scale * [low, high]``: straight-through rounding, clipping's gradient is zero."""
    q = torch.clamp(x / scale, low, high)
    return (q + (torch.round(q) - q).detach()) * scale


class QuantLinear(nn.Linear):
    """A linear layer whose weights and (ReLU) outputs are fake-quantized once ``quantize`` is on."""

    def __init__(self, n_in: int, n_out: int, relu: bool = True) -> None:
        super().__init__(n_in, n_out)
        self.relu = relu
        self.quantize = False
        self.register_buffer("running_max", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if self.quantize:
            weight = fake_quantize(weight, weight.detach().abs().max() / 127 + 1e-12, -127, 127)
        y = F.linear(x, weight, self.bias)
        if not self.relu:
            return y
        y = F.relu(y)
        if self.training:
            with torch.no_grad():
                self.running_max.mul_(0.9).add_(0.1 * y.max())
        if self.quantize:
            y = fake_quantize(y, self.running_max / 255 + 1e-12, 0, 255)
        return y


class QATClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.05, float_epochs: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), QuantLinear(64, 128), QuantLinear(128, 128), QuantLinear(128, 10, relu=False)
        )

    def on_train_epoch_start(self) -> None:
        for layer in self.net:
            if isinstance(layer, QuantLinear):
                layer.quantize = self.current_epoch >= self.hparams.float_epochs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.2)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        QATClassifier(),
        loader(images(2048, size=8, noise=1.2, seed=seed), 32, seed=seed),
        loader(images(512, size=8, noise=1.2, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "qat_fake_quant_h",
        "quantization-aware training",
        "QAT: two float epochs, then fake int8 weights and uint8 activations with straight-through rounding and "
        "zero gradient where clipped, an MLP, SGD momentum, step schedule",
        _build,
        faults=("lr_x1000", "frozen", "nan_batch"),
    )
]
