"""Generative models: a convolutional autoencoder, a VAE with KL warm-up, a DCGAN with manual optimization."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, images, loader
from benchmarks.corpus.program import Program, Run


def _pictures(n: int, seed: int, noise: float = 0.3) -> TensorDataset:
    """12x12 single-channel blob pictures, squashed into [-1, 1] as image pipelines normalise them."""
    x, y = images(n, size=12, noise=noise, seed=seed).tensors
    return TensorDataset((x / 2).clamp(-1, 1), y)


# -- convolutional autoencoder ---------------------------------------------------------------------------
class ConvAutoencoder(L.LightningModule):
    """Strided-conv encoder to a small code, transposed-conv decoder, MSE reconstruction, Adam."""

    def __init__(self, code: int = 16, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 3 * 3, code),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, 16 * 3 * 3),
            nn.ReLU(),
            nn.Unflatten(1, (16, 3, 3)),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, _ = batch
        reconstruction = self(x)
        loss = F.mse_loss(reconstruction, x)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": reconstruction, "target": x}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self.log("val_loss", F.mse_loss(self(x), x))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _autoencoder(seed: int) -> Run:
    return Run(
        ConvAutoencoder(),
        loader(_pictures(1024, seed), 32, seed=seed),
        loader(_pictures(256, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 5},
    )


# -- VAE ----------------------------------------------------------------------------------------------------
class VAE(L.LightningModule):
    """MLP VAE with a Gaussian decoder: summed-pixel MSE + beta * KL, beta warmed up linearly from 0 to 1.

    Returns the terms as they enter the total (``"kl"`` is the weighted KL), the ``loss_terms`` contract.
    """

    def __init__(self, dim: int = 144, hidden: int = 128, latent: int = 8, warmup: int = 96, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    def _terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon, mu, logvar = self(x)
        reconstruction = F.mse_loss(recon, x.flatten(1), reduction="sum") / len(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
        return reconstruction, kl, recon

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, _ = batch
        reconstruction, kl, recon = self._terms(x)
        beta = min(1.0, self.global_step / self.hparams.warmup)
        loss = reconstruction + beta * kl
        self.log_dict({"train_loss": loss, "train_recon": reconstruction, "train_kl": kl, "beta": beta})
        terms = {"reconstruction": reconstruction, "kl": beta * kl}
        return {"loss": loss, "loss_terms": terms, "preds": recon, "target": x.flatten(1)}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        reconstruction, kl, _ = self._terms(x)
        self.log_dict({"val_loss": reconstruction + kl, "val_recon": reconstruction, "val_kl": kl})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _vae(seed: int) -> Run:
    return Run(
        VAE(),
        loader(_pictures(2048, seed), 64, seed=seed),
        loader(_pictures(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 6},
    )


# -- DCGAN ---------------------------------------------------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, latent: int = 16, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent, 2 * width * 3 * 3),
            nn.Unflatten(1, (2 * width, 3, 3)),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * 3 * 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGAN(L.LightningModule):
    """Lightning's manual-optimization GAN: toggle G, step on the non-saturating loss, untoggle; then D.

    Quality is judged as in practice by a feature distance between generated and held-out real images (a
    Fréchet distance on a fixed random projection, standing in for FID), logged each validation.
    """

    def __init__(self, latent: int = 16, lr: float = 2e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent)
        self.discriminator = Discriminator()
        self.generator.apply(_dcgan_init)
        self.discriminator.apply(_dcgan_init)
        self.register_buffer("features", torch.randn(144, 32, generator=generator(99)) / 12)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.hparams.latent, device=self.device)
        ones = torch.ones(len(real), 1, device=self.device)
        zeros = torch.zeros(len(real), 1, device=self.device)

        self.toggle_optimizer(opt_g)
        fake = self(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        d_loss = (real_loss + fake_loss) / 2
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)

        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        real, _ = batch
        fake = self(torch.randn(len(real), self.hparams.latent, device=self.device))
        a, b = real.flatten(1) @ self.features, fake.flatten(1) @ self.features
        distance = (a.mean(0) - b.mean(0)).pow(2).sum() + (a.std(0) - b.std(0)).pow(2).sum()
        self.log("val_fd", distance, prog_bar=True)

    def configure_optimizers(self) -> Any:
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)
        return [opt_g, opt_d]


def _dcgan(seed: int) -> Run:
    return Run(
        DCGAN(),
        loader(_pictures(896, seed), 32, seed=seed),
        loader(_pictures(512, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "conv_autoencoder",
        "autoencoder",
        "a strided-conv encoder / transposed-conv decoder trained on MSE reconstruction with Adam",
        _autoencoder,
        faults=("lr_div_1e6", "exp_output", "nan_batch"),
        output_module="decoder",
        output_monitor=True,
    ),
    Program(
        "vae_kl_warmup",
        "VAE",
        "an MLP VAE, summed MSE + beta*KL with beta warmed up linearly from 0, loss_terms returned, Adam",
        _vae,
        faults=("nan_batch", "flipped_sign", "exp_output"),
        output_module="decoder",
        output_monitor=True,
    ),
    Program(
        "dcgan_manual",
        "GAN",
        "a DCGAN with manual optimization: toggle_optimizer, manual_backward, step and zero_grad per network",
        _dcgan,
        faults=("lr_x1000", "nan_batch", "lr_div_1e6"),
    ),
]
