"""Truncated backpropagation through time written by hand, as Lightning 2 leaves it to the module: one long series
is cut into 16 parallel streams, each batch is the next 32 time steps of every stream (in order, never shuffled), and
the LSTM's hidden state is carried from one batch to the next, detached, and reset at each epoch's start; validation
carries its own state the same way. The learning rate follows a warm-up-then-cosine schedule object that is not a
PyTorch scheduler (the timm style), so the module steps it itself in ``lr_scheduler_step``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import multi_sine
from benchmarks.corpus.program import Program, Run

STREAMS, CHUNK, EPOCHS, HIDDEN = 16, 32, 6, 48


class WarmupCosine:
    """A per-update schedule with its own state, stepped with the number of optimizer updates so far."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.05) -> None:
        self.optimizer, self.warmup, self.total, self.floor = optimizer, warmup, total, floor
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step_update(0)

    def step_update(self, updates: int) -> None:
        if updates < self.warmup:
            scale = (updates + 1) / self.warmup
        else:
            progress = min(1.0, (updates - self.warmup) / max(1, self.total - self.warmup))
            scale = self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = state["base_lrs"]


def _streams(steps: int, seed: int) -> TensorDataset:
    """Chunk ``i`` of every stream: ``(past [STREAMS, CHUNK, 1], next [STREAMS, CHUNK, 1])``."""
    series = multi_sine(steps * STREAMS + 1, seed=seed)
    x = series[:-1].reshape(STREAMS, steps, 1)
    y = series[1:].reshape(STREAMS, steps, 1)
    chunks = steps // CHUNK
    x = x[:, : chunks * CHUNK].reshape(STREAMS, chunks, CHUNK, 1).transpose(0, 1)
    y = y[:, : chunks * CHUNK].reshape(STREAMS, chunks, CHUNK, 1).transpose(0, 1)
    return TensorDataset(x.contiguous(), y.contiguous())


class StatefulForecaster(L.LightningModule):
    def __init__(self, lr: float = 4e-3, total_updates: int = 360) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(1, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 1)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_epoch_start(self) -> None:
        self.state = None

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        past, future = batch
        out, (h, c) = self.lstm(past, self.state)
        self.state = (h.detach(), c.detach())
        forecast = self.head(out)
        loss = F.mse_loss(forecast, future)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": forecast, "target": future}

    def on_validation_epoch_start(self) -> None:
        self.val_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        past, future = batch
        out, self.val_state = self.lstm(past, self.val_state)
        self.log("val_loss", F.mse_loss(self.head(out), future))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = WarmupCosine(optimizer, warmup=30, total=self.hparams.total_updates)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step_update(self.trainer.global_step)


def _build(seed: int) -> Run:
    return Run(
        StatefulForecaster(),
        # batch_size=None: each dataset item is already a batch of every stream's next chunk.
        loader(_streams(1920, seed), batch_size=None, shuffle=False),
        loader(_streams(320, seed + 100), batch_size=None, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "carried_state_lstm_h",
        "forecasting",
        "truncated BPTT by hand: an LSTM whose hidden state is carried, detached, across in-order chunks of 16 "
        "parallel streams and reset each epoch; a timm-style warm-up-cosine schedule stepped in lr_scheduler_step",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
        output_monitor=True,
    )
]
