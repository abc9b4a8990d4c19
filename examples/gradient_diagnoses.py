"""Gradient diagnoses that name a layer: vanishing, dead and exploding gradients.

    python examples/gradient_diagnoses.py --fault vanishing   # 15-layer sigmoid MLP: names net.0
    python examples/gradient_diagnoses.py --fault dead        # ReLU biases at -10 in one layer: names it
    python examples/gradient_diagnoses.py --fault exploding   # SGD lr too high: names the layer that grew most
    python examples/gradient_diagnoses.py --fault none        # the same MLP, healthy: no diagnosis

Each run takes a few seconds on a CPU. Per-layer norms are measured on the device every step with one
fused op; TensorBoard shows ``lossguard/grad/first_layer_norm`` vs ``last_layer_norm`` and a per-layer
histogram (``tensorboard --logdir lightning_logs``).
"""

from __future__ import annotations

import argparse
import math

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_lossguard import LossGuard


def mlp(depth: int, activation: type[nn.Module], width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(16, width), activation()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


class Regressor(L.LightningModule):
    def __init__(self, fault: str) -> None:
        super().__init__()
        if fault == "vanishing":
            self.net, self.lr = mlp(15, nn.Sigmoid), 0.05
        elif fault == "exploding":
            self.net, self.lr = mlp(3, nn.Tanh, width=64), 0.5
        else:
            self.net, self.lr = mlp(3, nn.ReLU), 0.05
        if fault == "dead":
            with torch.no_grad():
                self.net[2].bias.fill_(-10.0)  # every unit of the second layer starts (and stays) inactive

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=["vanishing", "dead", "exploding", "none"], default="vanishing")
    args = parser.parse_args()
    L.seed_everything(0)
    x = torch.randn(4096, 16)
    y = 2 * torch.tanh(x @ (torch.randn(16, 1) / math.sqrt(16)))
    trainer = L.Trainer(max_steps=200, accelerator="cpu", log_every_n_steps=10, callbacks=[LossGuard(report_every=10)])
    trainer.fit(Regressor(args.fault), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))


if __name__ == "__main__":
    main()
