"""A VQ-VAE: a convolutional encoder, a codebook of 64 vectors (each latent replaced by its nearest code, the
gradient passed straight through to the encoder), codebook and commitment losses, a transposed-convolution decoder.
Codes nobody picks get no gradient at all, by design; the reconstruction loss falls while the codebook loss wanders."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run


class Quantizer(nn.Module):
    def __init__(self, codes: int = 64, dim: int = 16) -> None:
        super().__init__()
        self.codebook = nn.Embedding(codes, dim)
        nn.init.uniform_(self.codebook.weight, -1 / codes, 1 / codes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z [B, dim, H, W]`` -> (quantised with straight-through gradient, codebook loss, commitment loss)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        index = torch.cdist(flat, self.codebook.weight).argmin(1)
        chosen = self.codebook(index).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        codebook_loss = F.mse_loss(chosen, z.detach())
        commitment = F.mse_loss(z, chosen.detach())
        return z + (chosen - z).detach(), codebook_loss, commitment


class VQVAE(L.LightningModule):
    """Encoder 16x16 -> 4x4 latents of 16, codebook of 64, decoder back to 16x16; Adam 2e-3, commitment 0.25."""

    def __init__(self, dim: int = 16, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, dim, 1)
        )
        self.quantizer = Quantizer(dim=dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, 32, 3, 1, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quantised, codebook_loss, commitment = self.quantizer(self.encoder(x))
        return self.decoder(quantised), codebook_loss, commitment

    def step(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        reconstruction, codebook_loss, commitment = self(x)
        recon = F.mse_loss(reconstruction, x)
        loss = recon + codebook_loss + self.beta * commitment
        self.log_dict({f"{stage}_loss": loss, f"{stage}_recon": recon, f"{stage}_codebook": codebook_loss})
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.step(batch[0], "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch[0], "val")

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        VQVAE(),
        loader(images(2048, noise=0.3, seed=seed), 64, seed=seed),
        loader(images(256, noise=0.3, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "vqvae_codebook_h",
        "vector-quantised autoencoder",
        "a VQ-VAE: conv encoder, nearest-code quantisation with a straight-through gradient, codebook and commitment "
        "losses (unchosen codes get no gradient), transposed-conv decoder; Adam 2e-3",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
