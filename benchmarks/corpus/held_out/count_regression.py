"""Count regression with a Poisson likelihood, as demand forecasters train it (rentals per hour, calls per shift): an
MLP on calendar and weather features predicts the log of the expected count, and the loss is
``PoissonNLLLoss(log_input=True)``, exp(log rate) - count * log rate with the count's constant term left out, so it
is negative once the fit is good (at the best rate it is rate - rate log rate). Adam at 3e-3 with
``ReduceLROnPlateau`` on the validation loss; validation also reports the Poisson deviance and the mean absolute
error of the counts.

The data: hours with the hour of day and the day of week (as sine and cosine pairs), a temperature and a rain
flag; the expected count has a morning and an evening peak on weekdays, a midday hump at weekends, grows with warmth
and falls with rain: from about 1 to 60 an hour. Counts are Poisson draws from it."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run


def _hours(n: int, seed: int) -> TensorDataset:
    g = generator(seed)
    hour = torch.randint(0, 24, (n,), generator=g).float()
    day = torch.randint(0, 7, (n,), generator=g).float()
    temperature = torch.randn(n, generator=g)
    rain = (torch.rand(n, generator=g) < 0.2).float()
    weekday = (day < 5).float()
    peaks = torch.exp(-((hour - 8) ** 2) / 3) + torch.exp(-((hour - 17.5) ** 2) / 4)
    hump = torch.exp(-((hour - 13) ** 2) / 12)
    night = torch.exp(-((hour - 3) ** 2) / 8)
    log_rate = 1.5 + 2.0 * weekday * peaks + 1.6 * (1 - weekday) * hump - 1.2 * night + 0.3 * temperature - 0.8 * rain
    counts = torch.poisson(torch.exp(log_rate), generator=g)
    features = torch.stack(
        [
            torch.sin(2 * math.pi * hour / 24),
            torch.cos(2 * math.pi * hour / 24),
            torch.sin(2 * math.pi * day / 7),
            torch.cos(2 * math.pi * day / 7),
            temperature,
            rain,
        ],
        dim=1,
    )
    return TensorDataset(features, counts)


class PoissonRegressor(L.LightningModule):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.log_rate = nn.Linear(width, 1)
        self.nll = nn.PoissonNLLLoss(log_input=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_rate(self.body(x)).squeeze(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, counts = batch
        loss = self.nll(self(x), counts)
        self.log("train_poisson_nll", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, counts = batch
        log_rate = self(x)
        rate = log_rate.exp()
        # The deviance: twice the log likelihood ratio of the saturated model (count log(count / rate) is 0 at 0).
        ratio = torch.where(counts > 0, counts * torch.log(counts.clamp_min(1) / rate), torch.zeros_like(counts))
        deviance = 2 * (ratio - (counts - rate)).mean()
        self.log_dict(
            {
                "val_loss": self.nll(log_rate, counts),
                "val_deviance": deviance,
                "val_count_mae": (rate - counts).abs().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "monitor": "val_loss"}}


def _build(seed: int) -> Run:
    return Run(
        PoissonRegressor(),
        loader(_hours(8192, seed), 64, seed=seed),
        loader(_hours(2048, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "poisson_counts_h",
        "count regression",
        "an MLP predicting the log of an hourly count from calendar and weather features, trained with "
        "PoissonNLLLoss(log_input=True), a loss that goes negative as the fit gets good; Adam with ReduceLROnPlateau "
        "on the validation loss; deviance and MAE validated",
        _build,
        # exp_output was offered at first and had no effect: exp of the log rate only bars rates below e, and the
        # fit came out better than the healthy one (validation deviance 1.51 against 2.07).
        faults=("lr_x1000", "flipped_sign", "nan_batch", "frozen"),
    )
]
