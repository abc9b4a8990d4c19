"""Low-rank adapters on a network trained before: an MLP classifier is first trained on one task (in the build, plain
PyTorch, as a checkpoint would be loaded), then frozen; each of its linear layers gets a rank-4 update ``B @ A`` with
``A`` random and ``B`` zero (the adapted model starts as the trained one), scaled by ``alpha / rank``, and a new head
is trained for a second task with shifted classes. Only the adapters and the head go to AdamW (the parameters are
filtered by ``requires_grad``); warm-up then cosine decay per step."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, CHANNELS, HIDDEN, RANK, ALPHA, EPOCHS, BATCH, SAMPLES = 10, 12, 1, 256, 4, 8.0, 5, 64, 2048
FEATURES = CHANNELS * SIZE * SIZE
PRETRAIN_TASK, TASK = 7, 8  # the class templates of the first task and of the adapted one


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update that starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scaling


def _trunk() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(FEATURES, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU())


def _pretrained(seed: int) -> nn.Sequential:
    """The trunk trained on the first task for a few hundred steps (what a downloaded checkpoint would hold)."""
    trunk, head = _trunk(), nn.Linear(HIDDEN, CLASSES)
    x, y = images(4096, CLASSES, SIZE, CHANNELS, noise=1.5, seed=seed + 200, task_seed=PRETRAIN_TASK).tensors
    optimizer = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(300):
        index = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(head(trunk(x[index])), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return trunk


class AdaptedClassifier(L.LightningModule):
    def __init__(self, trunk: nn.Sequential, lr: float = 2e-3, warmup: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["trunk"])
        for i, layer in enumerate(trunk):
            if isinstance(layer, nn.Linear):
                trunk[i] = LoRALinear(layer, RANK, ALPHA)
        self.trunk = trunk
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

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
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=0.0)
        total = self.trainer.estimated_stepping_batches
        warmup = self.hparams.warmup

        def scale(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    trunk = _pretrained(seed)
    data = images(SAMPLES, CLASSES, SIZE, CHANNELS, noise=3.0, seed=seed, task_seed=TASK)
    val = images(512, CLASSES, SIZE, CHANNELS, noise=3.0, seed=seed + 100, task_seed=TASK)
    return Run(
        AdaptedClassifier(trunk),
        loader(data, BATCH, seed=seed),
        loader(val, 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "lora_adapter_finetune_h",
        "fine-tuning",
        "low-rank adapters (A random, B zero, alpha / rank) on every linear layer of a trained, frozen MLP and a new "
        "head for a second task; only trainable parameters to AdamW, warm-up then cosine per step",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "flipped_sign"),
        output_module="head",
    )
]
