"""Fast adversarial training (FGSM with a random start): every step first differentiates the loss with respect to
the inputs (an extra forward and backward inside ``training_step``), then trains on the perturbed inputs. The
training loss, measured on attacked inputs, stays well above the clean validation loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class FastAdversarialCNN(L.LightningModule):
    """A small CNN; each batch is perturbed by one signed-gradient step of size ``alpha`` from a uniform random start
    in the ``epsilon`` ball, then the model trains on it (Wong et al.'s "fast is better than free"). SGD with
    momentum under a triangular one-cycle; clean and attacked accuracy in validation."""

    def __init__(self, classes: int = 10, epsilon: float = 0.3, alpha: float = 0.375, total_steps: int = 256) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, classes),
        )  # fmt: skip

    def attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps, alpha = self.hparams.epsilon, self.hparams.alpha
        with torch.enable_grad():
            delta = torch.empty_like(x).uniform_(-eps, eps).requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(self.net(x + delta), y), delta)
        return x + (delta + alpha * grad.sign()).clamp(-eps, eps).detach()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(self.attack(x, y)), y)
        self.log("train_adversarial_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        attacked = self.net(self.attack(x, y))
        self.log_dict(
            {
                "val_loss": F.cross_entropy(logits, y),
                "val_acc": (logits.argmax(1) == y).float().mean(),
                "val_robust_acc": (attacked.argmax(1) == y).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        total = self.hparams.total_steps
        peak = total * 2 // 5

        def triangle(step: int) -> float:
            return step / peak if step < peak else max(0.0, (total - step) / (total - peak))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    train = loader(images(1536, noise=2.0, seed=seed), 64, seed=seed)
    return Run(
        FastAdversarialCNN(total_steps=8 * len(train)),
        train,
        loader(images(256, noise=2.0, seed=seed + 100), 256, shuffle=False),
        # Attacking in validation needs gradients there: adversarial code turns inference mode off.
        trainer={"max_epochs": 8, "inference_mode": False},
    )


PROGRAMS = [
    Program(
        "fgsm_fast_adversarial_h",
        "adversarial training",
        "FGSM with a random start inside training_step (torch.autograd.grad on the inputs, an extra forward and "
        "backward per step), the model trained on the attacked inputs; SGD under a triangular schedule",
        _build,
        faults=("lr_x1000", "frozen", "nan_batch"),
    )
]
