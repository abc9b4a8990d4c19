"""Fine-tuning with layer-wise learning-rate decay (the recipe of BERT/ELECTRA/BEiT fine-tuning scripts): one
parameter group per depth, the head at the base rate and each layer below it ``DECAY`` times slower, so the
embeddings, the first group, train 32x slower than the head. A Transformer encoder classifies which of four tokens
occurs most often in a sequence; AdamW with a linear warm-up and linear decay stepped per batch (a ``LambdaLR`` that
scales every group's own rate), no weight decay on biases and norms."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

VOCAB, CLASSES, LENGTH, WIDTH, DEPTH, EPOCHS, BATCH = 12, 4, 16, 48, 4, 3, 32
DECAY = 0.5  # per layer below the head: the embeddings' rate is DECAY ** (DEPTH + 1) = 1/32 of the head's


def _majority(n: int, seed: int) -> TensorDataset:
    """``(tokens [n, LENGTH + 1], label [n])``: [CLS] then random tokens; the label is which of tokens 0-3 occurs most
    often (ties to the lowest)."""
    g = generator(seed)
    body = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    counts = torch.stack([(body == k).sum(1) for k in range(CLASSES)], dim=1)
    return TensorDataset(torch.cat([torch.full((n, 1), VOCAB), body], dim=1), counts.argmax(1))


class LayerwiseDecayClassifier(L.LightningModule):
    def __init__(self, lr: float = 2e-3, total_steps: int = 384, warmup: int = 38) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(VOCAB + 1, WIDTH)
        self.position = nn.Parameter(torch.randn(LENGTH + 1, WIDTH) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.1, batch_first=True, norm_first=True)
            for _ in range(DEPTH)
        )
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h[:, 0]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        tokens, label = batch
        loss = F.cross_entropy(self(tokens), label)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tokens, label = batch
        logits = self(tokens)
        self.log_dict(
            {"val_loss": F.cross_entropy(logits, label), "val_acc": (logits.argmax(1) == label).float().mean()}
        )

    def _groups(self) -> list[dict[str, Any]]:
        """Embeddings first (the slowest), then each layer, then the head at the base rate; each depth split into
        weights (decayed) and biases and norms (not)."""
        depths: list[list[tuple[str, nn.Parameter]]] = [
            [("embed", self.embed.weight), ("position", self.position)],
            *[list(layer.named_parameters()) for layer in self.layers],
            [*self.norm.named_parameters(), *self.head.named_parameters()],
        ]
        groups = []
        for depth, named in enumerate(depths):
            lr = self.hparams.lr * DECAY ** (len(depths) - 1 - depth)
            decayed = [p for n, p in named if p.ndim >= 2 and n != "position"]
            plain = [p for n, p in named if not (p.ndim >= 2 and n != "position")]
            groups += [
                {"params": decayed, "lr": lr, "weight_decay": 0.01},
                {"params": plain, "lr": lr, "weight_decay": 0.0},
            ]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self._groups())
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    return Run(
        LayerwiseDecayClassifier(),
        loader(_majority(4096, seed), BATCH, seed=seed),
        loader(_majority(1024, seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "layerwise_decay_finetune_h",
        "text classification",
        "fine-tuning with layer-wise learning-rate decay: one AdamW parameter group per depth, each layer 2x slower "
        "than the one above, the embeddings (the first group) 32x slower than the head; linear warm-up and decay",
        _build,
        faults=("lr_div_1e6", "lr_x1000", "frozen"),
    )
]
