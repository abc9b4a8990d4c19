"""A reversible residual network (RevNet) that stores no activations inside its reversible stage, as memory-saving
implementations do: a custom ``autograd.Function`` runs the coupling blocks (y1 = x1 + F(x2), y2 = x2 + G(y1)) under
``no_grad`` in the forward pass, keeps only the stage's output, and in the backward pass walks the blocks in reverse,
rebuilding each block's input from its output and re-running F and G with gradients to backpropagate through them.
So every F and G is called twice a step, once in the backward pass, and their parameters' gradients are accumulated
by a backward call nested inside the outer one. Group norm (batch norm would count its statistics twice), SGD with
momentum and weight decay, a cosine schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, HALF = 10, 8


def _residual_fn() -> nn.Sequential:
    return nn.Sequential(
        nn.GroupNorm(2, HALF),
        nn.ReLU(),
        nn.Conv2d(HALF, HALF, 3, padding=1),
        nn.GroupNorm(2, HALF),
        nn.ReLU(),
        nn.Conv2d(HALF, HALF, 3, padding=1),
    )


class Coupling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f, self.g = _residual_fn(), _residual_fn()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1 = x1 + self.f(x2)
        return y1, x2 + self.g(y1)


class ReversibleStage(torch.autograd.Function):
    """Forward without a graph; backward rebuilds inputs from outputs, block by block, and backpropagates."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:  # type: ignore[override]
        x1, x2 = x.chunk(2, dim=1)
        with torch.no_grad():
            for block in blocks:
                x1, x2 = block(x1, x2)
        y = torch.cat((x1, x2), dim=1)
        ctx.blocks = blocks
        ctx.save_for_backward(y.detach())
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        y1, y2 = (t.contiguous() for t in y.chunk(2, dim=1))
        dy1, dy2 = (t.contiguous() for t in grad.chunk(2, dim=1))
        for block in reversed(ctx.blocks):
            with torch.enable_grad():
                z1 = y1.detach().requires_grad_()
                g = block.g(z1)
                torch.autograd.backward(g, dy2)
            with torch.no_grad():
                x2 = y2 - g
                dx1 = dy1 + z1.grad
            with torch.enable_grad():
                z2 = x2.detach().requires_grad_()
                f = block.f(z2)
                torch.autograd.backward(f, dx1)
            with torch.no_grad():
                x1 = y1 - f
                dx2 = dy2 + z2.grad
            y1, y2, dy1, dy2 = x1, x2, dx1, dx2
        return torch.cat((dy1, dy2), dim=1), None


class RevNet(L.LightningModule):
    def __init__(self, blocks: int = 4, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Conv2d(1, 2 * HALF, 3, padding=1)
        self.blocks = nn.ModuleList(Coupling() for _ in range(blocks))
        self.head = nn.Sequential(nn.GroupNorm(4, 2 * HALF), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(2 * HALF, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(self.stem(x), 2)
        h = ReversibleStage.apply(h, self.blocks)
        return self.classifier(self.head(h))

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
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        RevNet(),
        loader(images(3000, classes=CLASSES, noise=3.0, seed=seed), 32, seed=seed),
        loader(images(800, classes=CLASSES, noise=3.0, seed=seed + 100), 400, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "revnet_recomputed_h",
        "image classification",
        "a reversible residual network whose coupling blocks run under no_grad in a custom autograd.Function and are "
        "re-run in its backward pass (inputs rebuilt from outputs, nested backward calls), group norm, SGD with "
        "momentum, weight decay and a cosine schedule",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad", "lr_div_1e6"),
    )
]
