"""A spiking network trained with surrogate gradients: leaky integrate-and-fire neurons run over 16 time steps,
a hard threshold in the forward pass (a spike is 0 or 1) and the derivative of a fast sigmoid in the backward pass;
rate-coded inputs; the loss is cross-entropy on the output layer's membrane potential summed over time. Neurons that
stay far from the threshold pass almost no gradient; most hidden neurons are silent on any one input."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

STEPS = 16


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward; the fast-sigmoid derivative 1 / (1 + slope |v|)^2 backward."""

    slope = 10.0

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v)
        return (v > 0).float()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad / (1 + SpikeFunction.slope * v.abs()) ** 2


class SpikingMLP(L.LightningModule):
    """256 -> 128 LIF -> 10 leaky integrators, decay 0.9, threshold 1 with reset by subtraction; Adam 1e-3."""

    def __init__(self, hidden: int = 128, decay: float = 0.9) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(256, hidden)
        self.readout = nn.Linear(hidden, 10)
        self.decay = decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rates = torch.sigmoid(x.flatten(1))  # pixel intensities as firing probabilities
        spikes_in = torch.rand(STEPS, *rates.shape, device=x.device) < rates
        v_hidden = torch.zeros(x.shape[0], self.hidden_layer.out_features, device=x.device)
        v_out = torch.zeros(x.shape[0], 10, device=x.device)
        total = torch.zeros_like(v_out)
        for t in range(STEPS):
            v_hidden = self.decay * v_hidden + self.hidden_layer(spikes_in[t].float())
            spikes = SpikeFunction.apply(v_hidden - 1.0)
            v_hidden = v_hidden - spikes  # reset by subtraction
            v_out = self.decay * v_out + self.readout(spikes)
            total = total + v_out
        return total / STEPS

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SpikingMLP(),
        loader(images(2048, noise=1.0, seed=seed), 64, seed=seed),
        loader(images(512, noise=1.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


PROGRAMS = [
    Program(
        "spiking_surrogate_h",
        "spiking network",
        "a spiking MLP of leaky integrate-and-fire neurons over 16 time steps, a Heaviside spike with a fast-sigmoid "
        "surrogate gradient (a custom autograd.Function), rate-coded inputs, cross-entropy on the summed membrane "
        "potential; Adam 1e-3",
        _build,
        faults=("lr_x1000", "frozen", "no_zero_grad"),
    )
]
