"""Differentially private SGD written with ``torch.func``, as DP tutorials teach it without a library: per-example
gradients from ``vmap(grad_and_value(...))`` over ``functional_call``, each clipped to norm ``clip``, summed,
Gaussian noise of ``sigma * clip`` added, divided by the batch size and written into ``p.grad`` by hand; the
optimizer (SGD with momentum, a cosine decay stepped by hand at each epoch's end) steps under manual optimization.
There is no ``manual_backward``: Lightning's backward hooks never run. A tanh MLP on a four-class tabular task; the
logged loss is the per-example losses' mean."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FEATURES, CLASSES, EPOCHS = 20, 4, 15


def customers(n: int, seed: int, task_seed: int = 71) -> TensorDataset:
    """``(x [n, FEATURES], label [n])``: four classes around random centres, overlapping (about 80% separable)."""
    centres = torch.randn(CLASSES, FEATURES, generator=generator(task_seed)) * 0.45
    g = generator(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return TensorDataset(centres[labels] + torch.randn(n, FEATURES, generator=g), labels)


class PrivateClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.1, clip: float = 1.0, sigma: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = nn.Sequential(
            nn.Linear(FEATURES, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, CLASSES)
        )

    def _example_loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.net, params, (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        params = {name: p.detach() for name, p in self.net.named_parameters()}
        grads, losses = vmap(grad_and_value(self._example_loss), in_dims=(None, 0, 0))(params, x, y)
        norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
        scale = (self.hparams.clip / (norms + 1e-6)).clamp(max=1.0)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        for name, p in self.net.named_parameters():
            clipped = torch.einsum("b,b...->...", scale, grads[name])
            noise = torch.randn_like(clipped) * self.hparams.sigma * self.hparams.clip
            p.grad = (clipped + noise) / len(x)
        optimizer.step()
        loss = losses.mean()
        self.log("train_loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        self.lr_schedulers().step()  # type: ignore[union-attr]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        PrivateClassifier(),
        loader(customers(4096, seed), batch_size=256, seed=seed),
        loader(customers(1024, seed + 100), batch_size=512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "dp_sgd_per_example_clipping_h",
        "private training",
        "DP-SGD by hand: per-example gradients with torch.func (vmap over grad_and_value of functional_call), "
        "each clipped to norm 1, Gaussian noise added, written into p.grad; manual optimization without "
        "manual_backward, SGD with momentum and a cosine decay, a tanh MLP",
        _build,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    )
]
