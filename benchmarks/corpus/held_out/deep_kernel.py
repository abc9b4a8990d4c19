"""Deep kernel learning with an exact Gaussian process, the way GPyTorch-style regression code trains it, in plain
PyTorch: an MLP maps each input to a 2-D feature, an ARD RBF kernel scaled by an outputscale works on the features,
with a constant mean and Gaussian noise. The lengthscales, outputscale and noise are kept positive by a softplus of a
raw parameter (the noise floored at 1e-4, as GPyTorch's default constraint does). Full batch: the whole training set
is one batch, one Adam step per epoch for 200 epochs, the loss the negative exact marginal log likelihood divided by
the number of points, computed through a Cholesky factor with jitter added and raised ten-fold while the
factorisation fails (the loss goes negative as the fit gets good). Adam with 1e-2 for the feature extractor and 5e-2
for the GP hyperparameters. Validation: the posterior predictive of held-out points given the training set;
``val_loss`` is the negative log predictive density (observation noise included), ``val_rmse`` the error of the
predictive mean. Data: a 1-D chirp with a jump, whose wiggles get faster from left to right (non-stationary), plus
noise."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

TRAIN, VAL, FEATURES = 320, 200, 2
NOISE_FLOOR = 1e-4


def _chirp(n: int, seed: int, noise: float = 0.1) -> TensorDataset:
    """``(x [n, 1], y [n])``: x uniform in [-1, 1]; y a chirp whose frequency grows with x, a jump at x = 0.3."""
    g = generator(seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    t = x.squeeze(1)
    f = torch.sin(3 * math.pi * (t + 1) ** 2) + 0.8 * (t > 0.3).float()
    return TensorDataset(x, f + noise * torch.randn(n, generator=g))


def _cholesky(matrix: torch.Tensor, tries: int = 6) -> torch.Tensor:
    """A Cholesky factor of ``matrix``; jitter 1e-6 on the diagonal when the plain factorisation fails, ten times
    larger each retry. Never raises: after the last retry the factor is used as it is (as a NaN loss, not a crash)."""
    factor: torch.Tensor
    factor, info = torch.linalg.cholesky_ex(matrix)
    jitter = 1e-6
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    for _ in range(tries):
        if not bool(info.any()):
            break
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
        jitter *= 10
    return factor


class DeepKernelGP(L.LightningModule):
    """Feature extractor 1-64-64-2 (ReLU), ScaleKernel(RBF with ARD) on the features, constant mean, Gaussian noise.
    The training inputs and targets are kept as buffers: the posterior at validation conditions on them."""

    train_x: torch.Tensor
    train_y: torch.Tensor

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        super().__init__()
        self.feature_extractor = nn.Sequential(
            nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, FEATURES)
        )
        self.raw_lengthscale = nn.Parameter(torch.zeros(FEATURES))
        self.raw_outputscale = nn.Parameter(torch.zeros(()))
        self.raw_noise = nn.Parameter(torch.zeros(()))
        self.mean_constant = nn.Parameter(torch.zeros(()))
        self.register_buffer("train_x", train_x, persistent=False)
        self.register_buffer("train_y", train_y, persistent=False)

    @property
    def noise(self) -> torch.Tensor:
        return NOISE_FLOOR + F.softplus(self.raw_noise)

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``outputscale * exp(-|a - b|^2 / 2)`` on features divided by their lengthscales."""
        lengthscale = F.softplus(self.raw_lengthscale)
        a, b = a / lengthscale, b / lengthscale
        sq = (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)).clamp_min(0)
        return F.softplus(self.raw_outputscale) * torch.exp(-0.5 * sq)

    def _train_factor(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features of the training inputs, the Cholesky factor of K + noise I and the residual from the mean."""
        z = self.feature_extractor(x)
        covariance = self.kernel(z, z) + self.noise * torch.eye(len(x), dtype=x.dtype, device=x.device)
        return z, _cholesky(covariance), (y - self.mean_constant).unsqueeze(1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, factor, residual = self._train_factor(x, y)
        alpha = torch.cholesky_solve(residual, factor)
        n = len(y)
        mll = -0.5 * (residual * alpha).sum() - factor.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
        loss = -mll / n
        self.log_dict(
            {
                "train_loss": loss,
                "noise": self.noise.detach(),
                "outputscale": F.softplus(self.raw_outputscale).detach(),
            }
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        z_train, factor, residual = self._train_factor(self.train_x, self.train_y)
        z = self.feature_extractor(x)
        cross = self.kernel(z_train, z)
        mean = self.mean_constant + (cross * torch.cholesky_solve(residual, factor)).sum(0)
        v = torch.linalg.solve_triangular(factor, cross, upper=False)
        prior = F.softplus(self.raw_outputscale)
        variance = (prior - v.pow(2).sum(0)).clamp_min(1e-8) + self.noise
        nlpd = 0.5 * (torch.log(2 * math.pi * variance) + (y - mean).pow(2) / variance)
        self.log_dict({"val_loss": nlpd.mean(), "val_rmse": (y - mean).pow(2).mean().sqrt()})

    def configure_optimizers(self) -> Any:
        hyperparameters = [self.raw_lengthscale, self.raw_outputscale, self.raw_noise, self.mean_constant]
        return torch.optim.Adam(
            [
                {"params": self.feature_extractor.parameters(), "lr": 1e-2},
                {"params": hyperparameters, "lr": 5e-2},
            ]
        )


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _chirp(TRAIN, seed)
    x, y = train.tensors
    return Run(
        DeepKernelGP(x, y),
        loader(train, TRAIN, shuffle=False),
        loader(_chirp(VAL, seed + 100), VAL, shuffle=False),
        trainer={"max_epochs": 200, "check_val_every_n_epoch": 20},
    )


PROGRAMS = [
    Program(
        "deep_kernel_gp_h",
        "Gaussian process (deep kernel learning)",
        "an exact GP on the 2-D output of an MLP feature extractor (scaled ARD RBF kernel, constant mean, softplus "
        "hyperparameters), trained full batch on the negative exact marginal log likelihood per point through a "
        "Cholesky factor with retried jitter; Adam 1e-2 for the network, 5e-2 for the GP hyperparameters; validation "
        "NLPD and RMSE from the posterior predictive on held-out points",
        _build,
        faults=("lr_x1000", "flipped_sign", "nan_batch"),
    )
]
