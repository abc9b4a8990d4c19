"""An RNN whose hidden-to-hidden matrix is kept orthogonal by ``torch.nn.utils.parametrizations.orthogonal`` (the
pattern of orthogonal and unitary RNNs for long memory), with weight normalisation on its read-out through
``parametrizations.weight_norm``: the module's ``weight`` is computed from parameters stored under
``parametrizations.weight.original`` (and ``original0``/``original1``), which are what the optimizer steps. It forecasts
the next four values of a noisy multi-sine signal from a window of 32. RMSprop, as those papers use, with a step decay
per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import multi_sine, windows
from benchmarks.corpus.program import Program, Run

WINDOW, HORIZON, HIDDEN, EPOCHS, BATCH = 32, 4, 64, 6, 64


class OrthogonalRNN(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cell = nn.RNN(1, HIDDEN, batch_first=True, nonlinearity="tanh")
        parametrizations.orthogonal(self.cell, "weight_hh_l0")
        self.readout = parametrizations.weight_norm(nn.Linear(HIDDEN, HORIZON))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out, _ = self.cell(inputs)
        return self.readout(out[:, -1])

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, target = batch
        pred = self(inputs)
        loss = F.mse_loss(pred, target)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": pred, "target": target}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, target = batch
        self.log("val_loss", F.mse_loss(self(inputs), target))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    return Run(
        OrthogonalRNN(),
        loader(windows(multi_sine(4096 + WINDOW + HORIZON, seed=seed), WINDOW, HORIZON), BATCH, seed=seed),
        loader(windows(multi_sine(1024 + WINDOW + HORIZON, seed=seed + 100), WINDOW, HORIZON), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "orthogonal_rnn_forecaster_h",
        "sequence memory",
        "an RNN whose recurrent matrix is kept orthogonal by torch.nn.utils.parametrizations.orthogonal and whose "
        "read-out is weight-normalised by parametrizations.weight_norm, forecasting a noisy multi-sine; RMSprop with "
        "a step decay",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
        output_monitor=True,
    )
]
