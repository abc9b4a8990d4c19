"""A hypernetwork: a learned embedding per task goes through a small MLP that emits every weight of a target network
(1-32-32-1), which is then applied to that task's inputs with batched matrix products. The tasks are sine waves
of different amplitudes and phases; each batch holds a few tasks with many points each. The only parameters the
optimizer sees are the embeddings and the hypernetwork's: the target network's weights are activations."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TASKS = 32
POINTS = 40
HIDDEN = 32


class SineTasks(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Item ``i``: (task id, ``POINTS`` inputs in [-5, 5], their noisy sine values) for task ``i % TASKS``; fresh
    points per item, fixed by the seed."""

    def __init__(self, items: int, seed: int, task_seed: int = 17) -> None:
        t = generator(task_seed)
        self.amplitude = 0.5 + 2.0 * torch.rand(TASKS, generator=t)
        self.phase = math.pi * torch.rand(TASKS, generator=t)
        g = generator(seed)
        self.x = 10 * torch.rand(items, POINTS, 1, generator=g) - 5
        self.noise = 0.05 * torch.randn(items, POINTS, 1, generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        task = i % TASKS
        y = self.amplitude[task] * torch.sin(self.x[i] + self.phase[task]) + self.noise[i]
        return torch.tensor(task), self.x[i], y


class HyperNetwork(L.LightningModule):
    """Task embedding (16) -> MLP (64) -> the target network's 1,153 weights and biases; Adam 1e-3 with a cosine
    schedule. The emitted weights are scaled by 1/sqrt(fan_in) so the target network starts well conditioned."""

    shapes = ((HIDDEN, 1), (HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN,), (1, HIDDEN), (1,))

    def __init__(self, embedding: int = 16, width: int = 64, total_steps: int = 1) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.tasks = nn.Embedding(TASKS, embedding)
        nn.init.normal_(self.tasks.weight, std=0.5)
        sizes = [math.prod(s) for s in self.shapes]
        self.emit = nn.Sequential(nn.Linear(embedding, width), nn.ReLU(), nn.Linear(width, sum(sizes)))
        self.sizes = sizes
        fan_ins = [s[-1] if len(s) == 2 else 1 for s in self.shapes]
        self.register_buffer("scale", torch.cat([torch.full((n,), 1 / math.sqrt(f)) for n, f in zip(sizes, fan_ins)]))

    def forward(self, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flat = self.emit(self.tasks(task)) * self.scale
        w1, b1, w2, b2, w3, b3 = (
            p.reshape(-1, *s) for p, s in zip(flat.split(self.sizes, dim=1), self.shapes, strict=True)
        )
        h = torch.relu(x @ w1.transpose(1, 2) + b1[:, None])
        h = torch.relu(h @ w2.transpose(1, 2) + b2[:, None])
        return h @ w3.transpose(1, 2) + b3[:, None]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        task, x, y = batch
        loss = F.mse_loss(self(task, x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        task, x, y = batch
        self.log("val_loss", F.mse_loss(self(task, x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    epochs, batches = 12, 2048 // 16
    return Run(
        HyperNetwork(total_steps=epochs * batches),
        loader(SineTasks(2048, seed), 16, seed=seed),
        loader(SineTasks(TASKS * 4, seed + 100), 64, shuffle=False),
        trainer={"max_epochs": epochs, "val_check_interval": 0.5},
    )


PROGRAMS = [
    Program(
        "hypernetwork_sines_h",
        "hypernetwork",
        "a hypernetwork: per-task embeddings through an MLP that emits all weights of a 1-32-32-1 target network, "
        "applied by batched matmuls to each task's points; Adam 1e-3 with a per-step cosine schedule, validated "
        "twice an epoch",
        _build,
        faults=("lr_x1000", "nan_batch", "frozen"),
    )
]
