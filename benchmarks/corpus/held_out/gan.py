"""WGAN-GP on the ring-of-Gaussians toy: manual optimization, several critic steps per generator step,
gradient penalty on interpolates, Adam with beta1 = 0.5 and a critic learning rate above the generator's."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from benchmarks.corpus.data import loader
from benchmarks.corpus.held_out.synthetic import ring_of_gaussians
from benchmarks.corpus.program import Program, Run


def _mlp(inputs: int, outputs: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )


def sliced_w1(a: torch.Tensor, b: torch.Tensor, projections: int = 32, seed: int = 0) -> torch.Tensor:
    """Sliced 1-Wasserstein distance between two equal-size point clouds (the sample-quality metric)."""
    directions = torch.randn(a.size(1), projections, generator=torch.Generator().manual_seed(seed))
    directions = directions / directions.norm(dim=0, keepdim=True)
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return (pa - pb).abs().mean()


class WGANGP(L.LightningModule):
    """Critic updated on every batch, generator every ``critic_steps`` batches; critic loss
    ``D(fake) - D(real) + 10 * GP``; at each epoch end the sliced W1 between samples and held-out data."""

    def __init__(
        self, latent: int = 8, critic_steps: int = 3, penalty: float = 10.0, lr_g: float = 5e-4, lr_d: float = 3e-3
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = _mlp(latent, 2)
        self.critic = _mlp(2, 1)
        self.reference = ring_of_gaussians(512, seed=999).tensors[0]

    def forward(self, n: int) -> torch.Tensor:
        return self.generator(torch.randn(n, self.hparams.latent))

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(len(real), 1)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        return ((grad.norm(dim=1) - 1) ** 2).mean()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        fake = self(len(real)).detach()
        wasserstein = self.critic(real).mean() - self.critic(fake).mean()
        d_loss = -wasserstein + self.hparams.penalty * self.gradient_penalty(real, fake)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.log_dict({"d_loss": d_loss, "wasserstein": wasserstein})
        if batch_idx % self.hparams.critic_steps == 0:
            g_loss = -self.critic(self(len(real))).mean()
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
            self.log("g_loss", g_loss)
        return {"loss": d_loss.detach()}

    def on_train_epoch_end(self) -> None:
        with torch.no_grad():
            samples = self(len(self.reference))
        self.log("sample_w1", sliced_w1(samples, self.reference, seed=self.current_epoch))

    def configure_optimizers(self) -> Any:
        betas = (0.5, 0.9)
        return (
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas),
            torch.optim.Adam(self.critic.parameters(), lr=self.hparams.lr_d, betas=betas),
        )


def _build(seed: int) -> Run:
    return Run(WGANGP(), loader(ring_of_gaussians(3200, seed=seed), 64, seed=seed), trainer={"max_epochs": 6})


PROGRAMS = [
    Program(
        "wgan_gp_ring_h",
        "GAN",
        "WGAN-GP with two MLPs under manual optimization, the critic stepped every batch and the generator "
        "every third, gradient penalty weight 10, Adam(0.5, 0.9) with a faster critic (two time-scale rule), "
        "sliced-W1 sample quality per epoch",
        _build,
        faults=("lr_x1000", "no_zero_grad", "nan_batch"),
    )
]
