"""A Bayesian neural network trained by Bayes by Backprop, as tutorials and small libraries write it: every weight
and bias is a Gaussian (a mean and a softplus-parameterised scale, the scales starting near 0.007), sampled afresh in
every forward pass by the reparameterisation trick; the loss is the batch's mean cross entropy plus the closed-form
KL divergence from a N(0, 0.5^2) prior divided by the number of training examples. Early on the KL term is several
times the cross entropy and falls as the scales grow, so the loss is mostly a regulariser settling; the weight noise
makes every gradient noisy. The cross entropy and the raw KL are logged, the loss is returned. Adam; validation
averages the predictive over eight weight samples and logs its negative log-likelihood and accuracy.

The data: four classes of 8 x 8 blob templates in heavy noise, flattened."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

PRIOR_SCALE = 0.5
INITIAL_RHO = -5.0
VALIDATION_SAMPLES = 8


class BayesLinear(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight_mu = nn.Parameter(torch.empty(outputs, inputs).uniform_(-0.2, 0.2))
        self.weight_rho = nn.Parameter(torch.full((outputs, inputs), INITIAL_RHO))
        self.bias_mu = nn.Parameter(torch.zeros(outputs))
        self.bias_rho = nn.Parameter(torch.full((outputs,), INITIAL_RHO))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_mu + F.softplus(self.weight_rho) * torch.randn_like(self.weight_mu)
        bias = self.bias_mu + F.softplus(self.bias_rho) * torch.randn_like(self.bias_mu)
        return F.linear(x, weight, bias)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, PRIOR_SCALE^2)) of every weight and bias, summed (closed form)."""
        total = torch.zeros(())
        for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
            sigma = F.softplus(rho)
            total = (
                total + (math.log(PRIOR_SCALE) - sigma.log() + (sigma**2 + mu**2) / (2 * PRIOR_SCALE**2) - 0.5).sum()
            )
        return total


class BayesByBackprop(L.LightningModule):
    def __init__(self, examples: int) -> None:
        super().__init__()
        self.examples = examples
        self.layers = nn.ModuleList([BayesLinear(64, 64), BayesLinear(64, 64), BayesLinear(64, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        logits: torch.Tensor = self.layers[-1](x)
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        nll = F.cross_entropy(self(x), y)
        kl = sum((layer.kl() for layer in self.layers), torch.zeros(()))
        self.log_dict({"train_nll": nll, "train_kl": kl})
        return nll + kl / self.examples

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        probs = torch.stack([F.softmax(self(x), dim=1) for _ in range(VALIDATION_SAMPLES)]).mean(0)
        self.log_dict(
            {
                "val_loss": F.nll_loss(probs.clamp_min(1e-12).log(), y),
                "val_acc": (probs.argmax(1) == y).float().mean(),
            }
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _flat(n: int, seed: int) -> TensorDataset:
    x, y = images(n, classes=4, size=8, noise=3.0, seed=seed).tensors
    return TensorDataset(x.flatten(1), y)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    train = _flat(12288, seed)
    return Run(
        BayesByBackprop(len(train)),
        loader(train, 64, seed=seed),
        loader(_flat(1024, seed + 100), 1024, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "bayes_by_backprop_h",
        "Bayesian deep learning",
        "Bayes by Backprop: an MLP of Gaussian weights sampled by the reparameterisation trick in every forward pass, "
        "the loss a mean cross entropy plus the closed-form KL from the prior over the training set's size (the KL "
        "dominant at first), the terms logged and the sum returned; Adam; validation averages eight weight samples",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign", "lr_div_1e6"),
    )
]
