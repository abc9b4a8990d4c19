"""An adversarial autoencoder: an MLP autoencoder whose 2-d codes a discriminator pushes towards a Gaussian prior.
Three optimizers under manual optimization, each stepped every batch: the reconstruction (encoder and decoder), the
discriminator (prior samples against codes), and the encoder again as the generator that fools it. The run is set
by ``max_steps``, which counts every optimizer's step: 1,200 steps are 400 batches. The logged loss is the
reconstruction's; validation logs the reconstruction error."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

SIZE, LATENT = 8, 2


def digits(n: int, seed: int) -> TensorDataset:
    """Flattened 8x8 blobs of ten classes, in [0, 1]."""
    x, labels = images(n, classes=10, size=SIZE, noise=0.3, seed=seed).tensors
    return TensorDataset(torch.sigmoid(x.flatten(1)), labels)


class AdversarialAutoencoder(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        pixels = SIZE * SIZE
        self.encoder = nn.Sequential(
            nn.Linear(pixels, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, LATENT)
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, pixels)
        )
        self.discriminator = nn.Sequential(nn.Linear(LATENT, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        reconstruction_opt, discriminator_opt, generator_opt = self.optimizers()  # type: ignore[misc]
        reconstruction = F.binary_cross_entropy_with_logits(self.decoder(self.encoder(x)), x)
        reconstruction_opt.zero_grad()
        self.manual_backward(reconstruction)
        reconstruction_opt.step()

        codes = self.encoder(x).detach()
        prior = torch.randn_like(codes)
        real, fake = self.discriminator(prior), self.discriminator(codes)
        discriminator_loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        discriminator_opt.zero_grad()
        self.manual_backward(discriminator_loss)
        discriminator_opt.step()

        fooled = self.discriminator(self.encoder(x))
        generator_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        generator_opt.zero_grad()
        self.manual_backward(generator_loss)
        generator_opt.step()
        self.log_dict({"train_loss": reconstruction, "d_loss": discriminator_loss, "g_loss": generator_loss})
        return reconstruction.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self.log("val_loss", F.binary_cross_entropy_with_logits(self.decoder(self.encoder(x)), x))

    def configure_optimizers(self) -> Any:
        lr, betas = self.hparams.lr, (0.5, 0.999)
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        return [
            torch.optim.Adam(autoencoder, lr=lr),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr / 2, betas=betas),
            torch.optim.Adam(self.encoder.parameters(), lr=lr / 2, betas=betas),
        ]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        AdversarialAutoencoder(),
        loader(digits(8192, seed), batch_size=64, seed=seed),
        loader(digits(1024, seed + 100), batch_size=512, shuffle=False),
        trainer={"max_steps": 1200, "val_check_interval": 64},
    )


PROGRAMS = [
    Program(
        "adversarial_autoencoder_h",
        "generative",
        "an adversarial autoencoder: three Adam optimizers stepped each batch under manual optimization "
        "(reconstruction, discriminator on prior samples against codes, encoder as generator), max_steps counting "
        "all three",
        _build,
        faults=("lr_x1000", "no_zero_grad", "flipped_sign"),
    )
]
