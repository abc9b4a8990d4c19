"""Domain-incremental continual learning with experience replay: three tasks in sequence (the same 5-way problem
seen through a different fixed permutation of the input features each), two epochs each, the task switched at the
start of an epoch; every batch mixes the current task with as many samples replayed from earlier tasks. The training
loss jumps at each switch and recovers; validation covers all three tasks from the start, so it falls in steps."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TASKS, EPOCHS_PER_TASK, DIM, CLASSES = 3, 2, 32, 5


def _problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the labels of a fixed random two-layer teacher."""
    teacher = generator(61)
    hidden = torch.randn(DIM, 64, generator=teacher) / DIM**0.5
    out = torch.randn(64, CLASSES, generator=teacher)
    x = torch.randn(n, DIM, generator=generator(seed))
    return x, (torch.tanh(x @ hidden) @ out).argmax(1)


def _permutations() -> torch.Tensor:
    g = generator(67)
    return torch.stack([torch.arange(DIM)] + [torch.randperm(DIM, generator=g) for _ in range(TASKS - 1)])


class TaskStream(Dataset[tuple[torch.Tensor, ...]]):
    """Item ``i`` of the current task, and item ``i`` of an earlier task (cycled) for replay: the first task has
    none, which a flag says."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = _problem(n, seed)
        self.permutations = _permutations()
        self.task = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        current = self.x[i][self.permutations[self.task]]
        earlier = i % self.task if self.task else 0
        replayed = self.x[(i * 7919) % len(self.y)][self.permutations[earlier]]
        return current, self.y[i], replayed, self.y[(i * 7919) % len(self.y)], torch.tensor(self.task > 0)


class ReplayLearner(L.LightningModule):
    """An MLP; Adam; the task switched in ``on_train_epoch_start``; the loss over current and replayed samples."""

    def __init__(self, stream: TaskStream) -> None:
        super().__init__()
        self.stream = stream
        self.net = nn.Sequential(
            nn.Linear(DIM, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, CLASSES)
        )

    def on_train_epoch_start(self) -> None:
        self.stream.task = min(self.current_epoch // EPOCHS_PER_TASK, TASKS - 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, replayed_x, replayed_y, replay = batch
        if bool(replay.any()):
            x, y = torch.cat([x, replayed_x]), torch.cat([y, replayed_y])
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _all_tasks(n: int, seed: int) -> TensorDataset:
    x, y = _problem(n, seed)
    permutations = _permutations()
    return TensorDataset(torch.cat([x[:, p] for p in permutations]), y.repeat(TASKS))


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    stream = TaskStream(2048, seed)
    return Run(
        ReplayLearner(stream),
        loader(stream, 32, seed=seed),
        loader(_all_tasks(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": TASKS * EPOCHS_PER_TASK},
    )


PROGRAMS = [
    Program(
        "continual_replay_h",
        "continual learning",
        "three tasks in sequence (input permutations of one problem), switched at epoch starts, every batch mixing "
        "the current task with replayed samples of earlier ones, an MLP under Adam, validated on all tasks",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
