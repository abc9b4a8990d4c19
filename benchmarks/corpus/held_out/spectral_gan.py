"""SN-GAN: a spectrally normalised discriminator trained with the hinge loss, manual optimization with one
discriminator step per generator step, Adam with beta1 = 0 (the SN-GAN and BigGAN settings)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.gan import sliced_w1
from benchmarks.corpus.held_out.synthetic import ring_of_gaussians
from benchmarks.corpus.program import Program, Run


class SNGAN(L.LightningModule):
    """Discriminator layers wrapped in ``spectral_norm`` (a parametrization: the trained tensor is
    ``parametrizations.weight.original``); losses ``relu(1 - D(real)) + relu(1 + D(fake))`` and ``-D(fake)``. Both
    losses are logged; ``training_step`` returns the discriminator's. At each epoch end, the sliced W1 between samples
    and held-out data."""

    def __init__(self, latent: int = 8, lr: float = 2e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(
            nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2)
        )
        self.discriminator = nn.Sequential(
            spectral_norm(nn.Linear(2, 128)),
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Linear(128, 128)),
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Linear(128, 1)),
        )
        self.reference = ring_of_gaussians(512, seed=999).tensors[0]

    def sample(self, n: int) -> torch.Tensor:
        return self.generator(torch.randn(n, self.hparams.latent, device=self.device))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        fake = self.sample(len(real))
        d_loss = F.relu(1 - self.discriminator(real)).mean() + F.relu(1 + self.discriminator(fake.detach())).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = -self.discriminator(fake).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss})
        return d_loss

    def on_train_epoch_end(self) -> None:
        with torch.no_grad():
            self.log("sample_w1", sliced_w1(self.sample(512), self.reference))

    def configure_optimizers(self) -> Any:
        betas = (0.0, 0.9)
        return (
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr * 2, betas=betas),
        )


def _sngan(seed: int) -> Run:
    return Run(SNGAN(), loader(ring_of_gaussians(4096, seed=seed), 64, seed=seed), trainer={"max_epochs": 4})


PROGRAMS = [
    Program(
        "sngan_hinge_h",
        "GAN",
        "SN-GAN on the ring of Gaussians: spectral-norm discriminator (parametrizations), hinge loss, manual "
        "optimization 1:1, Adam beta1 = 0, no validation",
        _sngan,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
