"""CLIP-style image-text contrastive training: a small CNN image tower and a one-layer causal transformer text tower
(its feature read at the end-of-text token) are projected without bias into one shared space, L2-normalised, and
compared by cosine similarity times a learnable inverse temperature ``logit_scale`` (initialised to log(1/0.07),
exponentiated, and clamped after every optimizer step so it never scales the logits by more than 100). The loss is
the symmetric cross entropy over the in-batch pairs (image to text and text to image, averaged). AdamW with CLIP's
betas and epsilon, weight decay on the weight matrices only (not on the logit scale, gains, biases or embeddings),
linear warm-up then cosine decay stepped every step. Synthetic pairs: each image and its caption derive from one
latent (shape, colour, position); validation logs the same loss and top-1 retrieval accuracy both ways."""

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

SHAPES, COLOURS, PLACES, SIZE = 8, 4, 4, 16
SYNONYMS, FILLERS, FILLER_WORDS = 2, 16, 3
SOT = 0
SHAPE_WORDS = 1
COLOUR_WORDS = SHAPE_WORDS + SHAPES * SYNONYMS
PLACE_WORDS = COLOUR_WORDS + COLOURS * SYNONYMS
FILLER = PLACE_WORDS + PLACES * SYNONYMS
EOT = FILLER + FILLERS
VOCAB = EOT + 1
"""Token ids: start, the words naming each attribute (two synonyms each), filler words, and end-of-text last (the
highest id, so the end token is found by ``argmax`` as CLIP does)."""
CONTEXT = 1 + 3 + FILLER_WORDS + 1


def _pairs(n: int, seed: int, task_seed: int = 53) -> TensorDataset:
    """``(image [n, 3, 16, 16], caption [n, CONTEXT], latent [n])``: a shape pattern in a colour at one of four
    places, with pixel noise; its caption names the three attributes (a random synonym each) among filler words, in a
    random order. ``latent`` (the attribute combination) is kept only to score retrieval."""
    task = generator(task_seed)
    patterns = F.avg_pool2d(torch.randn(SHAPES, 1, SIZE // 2, SIZE // 2, generator=task), 3, 1, 1) * 3
    colours = torch.rand(COLOURS, 3, 1, 1, generator=task) * 1.5 + 0.25
    s = generator(seed)
    shape = torch.randint(0, SHAPES, (n,), generator=s)
    colour = torch.randint(0, COLOURS, (n,), generator=s)
    place = torch.randint(0, PLACES, (n,), generator=s)
    images = 1.0 * torch.randn(n, 3, SIZE, SIZE, generator=s)
    half = SIZE // 2
    for i in range(n):
        row, col = divmod(int(place[i]), 2)
        images[i, :, row * half : (row + 1) * half, col * half : (col + 1) * half] += (
            patterns[shape[i]] * colours[colour[i]]
        )
    pick = torch.randint(0, SYNONYMS, (n, 3), generator=s)
    words = torch.stack(
        [
            SHAPE_WORDS + shape * SYNONYMS + pick[:, 0],
            COLOUR_WORDS + colour * SYNONYMS + pick[:, 1],
            PLACE_WORDS + place * SYNONYMS + pick[:, 2],
        ],
        1,
    )
    words = torch.cat([words, FILLER + torch.randint(0, FILLERS, (n, FILLER_WORDS), generator=s)], 1)
    order = torch.rand(n, words.shape[1], generator=s).argsort(1)
    words = words.gather(1, order)
    caption = torch.cat([torch.full((n, 1), SOT), words, torch.full((n, 1), EOT)], 1)
    latent = (shape * COLOURS + colour) * PLACES + place
    return TensorDataset(images, caption, latent)


class ImageTower(nn.Module):
    def __init__(self, width: int = 32, embed: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width // 2, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        # CLIP's ResNet ends in attention pooling, which keeps where things are: here the 4x4 map is flattened.
        self.proj = nn.Linear(2 * width * (SIZE // 4) ** 2, embed, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.proj(self.stem(x).flatten(1))
        return features


class TextTower(nn.Module):
    def __init__(self, width: int = 64, heads: int = 4, embed: int = 64) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, width)
        self.positional_embedding = nn.Parameter(torch.empty(CONTEXT, width))
        self.block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed))
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.proj, std=width**-0.5)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.block(x, src_mask=self.causal, is_causal=True))
        features: torch.Tensor = x[torch.arange(text.shape[0]), text.argmax(1)] @ self.proj
        return features


def _clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = scale * F.normalize(image, dim=1) @ F.normalize(text, dim=1).t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2, logits


class ContrastiveImageText(L.LightningModule):
    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.1, warmup: float = 0.1) -> None:
        super().__init__()
        self.lr, self.weight_decay, self.warmup = lr, weight_decay, warmup
        self.visual = ImageTower()
        self.text = TextTower()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, captions, _ = batch
        loss, _ = _clip_loss(self.visual(images), self.text(captions), self.logit_scale.exp())
        self.log("train_loss", loss)
        self.log("logit_scale", self.logit_scale.exp().detach())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # after the optimizer step, as CLIP clips it: logits scaled by 100 at most
            self.logit_scale.clamp_(0, math.log(100))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, captions, latent = batch
        loss, logits = _clip_loss(self.visual(images), self.text(captions), self.logit_scale.exp())
        # A retrieval counts when the retrieved item describes the same shape, colour and place (duplicates in the
        # batch are equally right answers).
        image_to_text = (latent[logits.argmax(1)] == latent).float().mean()
        text_to_image = (latent[logits.argmax(0)] == latent).float().mean()
        self.log_dict(
            {"val_loss": loss, "val_i2t_acc": image_to_text, "val_t2i_acc": text_to_image}, batch_size=len(latent)
        )

    def configure_optimizers(self) -> Any:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            excluded = p.ndim < 2 or "embedding" in name or "logit_scale" in name
            (no_decay if excluded else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = max(1, int(self.warmup * total))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        ContrastiveImageText(),
        loader(_pairs(4096, seed), 128, seed=seed, drop_last=True),
        loader(_pairs(1024, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": 8},
    )


PROGRAMS = [
    Program(
        "image_text_contrastive_h",
        "vision-language contrastive",
        "CLIP: a CNN image tower and a causal one-layer transformer text tower projected to a shared space, "
        "L2-normalised, cosine similarity times a learnable clamped logit scale, symmetric in-batch cross entropy; "
        "AdamW without decay on the scale, gains and biases, linear warm-up then per-step cosine decay",
        _build,
        faults=("lr_x1000", "nan_batch", "flipped_sign"),
    )
]
