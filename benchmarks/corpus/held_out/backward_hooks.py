"""Multi-task learning with the shared trunk's gradient scaled by a module backward hook, as multi-head code does to
keep the trunk's step the size of one task's: ``register_full_backward_pre_hook`` on the trunk divides the gradient
that arrives at its output by the number of heads. Three heads (two classifications and a regression) on one trunk,
the plain sum of their losses; SGD with Nesterov momentum and step decay per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

DIM, HIDDEN, HEADS, EPOCHS, BATCH = 24, 96, 3, 10, 64


def three_tasks(n: int, seed: int, task_seed: int = 31) -> TensorDataset:
    """``(x [n, DIM], coarse [n], fine [n], value [n, 1])``: two labelings of the same inputs and a smooth target."""
    t = generator(task_seed)
    w = torch.randn(DIM, 16, generator=t) / DIM**0.5
    s = generator(seed)
    x = torch.randn(n, DIM, generator=s)
    h = torch.tanh(x @ w)
    coarse = (h[:, :4].argmax(1)).long()
    fine = (h[:, 4:12] + 0.3 * torch.randn(n, 8, generator=s)).argmax(1).long()
    value = h[:, 12:].sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=s)
    return TensorDataset(x, coarse, fine, value)


def _scale_by_heads(module: nn.Module, grad_output: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(g / HEADS for g in grad_output)


class ScaledTrunkMultiTask(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.trunk = nn.Sequential(
            nn.Linear(DIM, HIDDEN), nn.LayerNorm(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()
        )
        self.trunk.register_full_backward_pre_hook(_scale_by_heads)
        self.coarse, self.fine, self.value = nn.Linear(HIDDEN, 4), nn.Linear(HIDDEN, 8), nn.Linear(HIDDEN, 1)

    def _losses(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, coarse, fine, value = batch
        h = self.trunk(x)
        return (
            F.cross_entropy(self.coarse(h), coarse),
            F.cross_entropy(self.fine(h), fine),
            F.mse_loss(self.value(h), value),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        coarse, fine, value = self._losses(batch)
        loss = coarse + fine + value
        self.log_dict({"train_loss": loss, "train_coarse": coarse, "train_fine": fine, "train_value": value})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", sum(self._losses(batch)))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, nesterov=True)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.3)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        ScaledTrunkMultiTask(),
        loader(three_tasks(2048, seed), BATCH, seed=seed),
        loader(three_tasks(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "backward_hook_scaled_trunk_h",
        "multi-task",
        "three heads on a shared trunk whose gradient a module backward pre-hook divides by the number of heads "
        "(register_full_backward_pre_hook); the plain sum of the losses, SGD Nesterov, step decay",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
