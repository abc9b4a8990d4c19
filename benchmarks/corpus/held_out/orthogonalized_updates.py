"""An image classifier trained with a Muon-style optimizer written in the project, as users write it from the
blog posts: the hidden layers' weight matrices take a Nesterov momentum whose update is orthogonalized by five
Newton-Schulz iterations (every singular value of the step near one, so its size does not follow the gradient's),
scaled by the matrix's shape; the first layer, the head and every bias and norm take AdamW in the same optimizer, at
a rate ten times lower. A residual MLP on flattened images, a linear warm-up then a linear decay to zero per step."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.corpus.data import images, loader
from benchmarks.corpus.program import Program, Run

CLASSES, SIZE, WIDTH, BLOCKS, EPOCHS, BATCH = 10, 12, 128, 3, 3, 64
# The quintic iteration's coefficients (published with the method): they push every singular value towards ~1 in
# five steps rather than converge exactly.
NS_A, NS_B, NS_C = 3.4445, -4.7750, 2.0315


def orthogonalized(update: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """The matrix nearest ``update`` with its singular values pushed to about one (Newton-Schulz, on the short side)."""
    x = update / (update.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(iterations):
        gram = x @ x.T
        x = NS_A * x + (NS_B * gram + NS_C * gram @ gram) @ x
    return x.T if tall else x


class MuonWithAdamW(torch.optim.Optimizer):
    """Groups flagged ``orthogonal`` take the orthogonalized momentum; the others AdamW. Handles Lightning's closure."""

    def __init__(self, groups: Iterable[dict[str, Any]]) -> None:
        defaults = {"lr": 0.02, "momentum": 0.95, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0}
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                if group.get("orthogonal"):
                    self._muon(p, group)
                else:
                    self._adamw(p, group)
        return loss

    def _muon(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        buffer = state.setdefault("momentum", torch.zeros_like(p))
        buffer.mul_(group["momentum"]).add_(p.grad)
        nesterov = p.grad.add(buffer, alpha=group["momentum"])
        shape_scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
        p.add_(orthogonalized(nesterov), alpha=-group["lr"] * shape_scale)

    def _adamw(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"], state["avg"], state["sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        state["avg"].lerp_(p.grad, 1 - beta1)
        state["sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        corrected = state["avg"] / (1 - beta1 ** state["step"])
        denom = (state["sq"] / (1 - beta2 ** state["step"])).sqrt_().add_(group["eps"])
        p.addcdiv_(corrected, denom, value=-group["lr"])


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class MuonClassifier(L.LightningModule):
    def __init__(self, lr: float = 0.02, adam_lr: float = 2e-3, total_steps: int = 384, warmup: int = 20) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.stem = nn.Linear(SIZE * SIZE, WIDTH)
        self.blocks = nn.Sequential(*[Block(WIDTH) for _ in range(BLOCKS)])
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x.flatten(1)))))

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
        hidden = [p for p in self.blocks.parameters() if p.ndim == 2]
        rest = [p for p in self.parameters() if not any(p is h for h in hidden)]
        optimizer = MuonWithAdamW(
            [
                {"params": hidden, "lr": self.hparams.lr, "orthogonal": True, "weight_decay": 0.01},
                {"params": rest, "lr": self.hparams.adam_lr, "weight_decay": 0.0},
            ]
        )
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def scale(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / (total - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        MuonClassifier(),
        loader(images(8192, CLASSES, SIZE, noise=3.0, seed=seed), BATCH, seed=seed),
        loader(images(1024, CLASSES, SIZE, noise=3.0, seed=seed + 100), 256, shuffle=False),
        trainer={"max_epochs": EPOCHS},
    )


PROGRAMS = [
    Program(
        "muon_orthogonal_updates_h",
        "image classification",
        "a Muon-style optimizer written in the project: the hidden matrices take a Nesterov momentum orthogonalized by "
        "five Newton-Schulz iterations, the rest AdamW 10x slower in the same optimizer; warm-up and linear decay",
        _build,
        faults=("lr_x1000", "lr_div_1e6", "nan_batch"),
    )
]
