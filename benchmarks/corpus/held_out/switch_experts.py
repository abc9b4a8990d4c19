"""A Switch-style mixture of experts in a tabular classifier: a router sends each sample to one of eight expert MLPs
(top-1, the expert's output scaled by its gate probability), with the Switch load-balancing loss (experts x the sum
of each expert's share of samples times its mean router probability) weighted 0.01 and a router z-loss weighted
1e-3. An expert no sample picked in a batch gets no gradient that step. The task, balance and z terms are handed over
as ``loss_terms``. AdamW 2e-3 with a cosine decay."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from benchmarks.corpus.data import generator, loader
from benchmarks.corpus.program import Program, Run

FEATURES, CLASSES, EXPERTS = 20, 6, 8


def _data(n: int, seed: int, task_seed: int = 37) -> TensorDataset:
    """Samples from six clusters whose class depends on the cluster and a cluster-specific linear rule."""
    task = generator(task_seed)
    centres = torch.randn(CLASSES, FEATURES, generator=task) * 2
    rules = torch.randn(CLASSES, FEATURES, CLASSES, generator=task)
    s = generator(seed)
    cluster = torch.randint(0, CLASSES, (n,), generator=s)
    x = centres[cluster] + torch.randn(n, FEATURES, generator=s)
    logits = torch.einsum("nf,nfc->nc", x - centres[cluster], rules[cluster]) + 3 * F.one_hot(cluster, CLASSES)
    y = torch.distributions.Categorical(logits=logits).sample()
    return TensorDataset(x, y)


class SwitchClassifier(L.LightningModule):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(FEATURES, hidden), nn.GELU())
        self.router = nn.Linear(hidden, EXPERTS)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))
            for _ in range(EXPERTS)
        )
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, CLASSES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.embed(x)
        router_logits = self.router(h)
        probs = router_logits.softmax(1)
        gate, choice = probs.max(1)
        mixed = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            picked = choice == e
            if picked.any():
                mixed[picked] = expert(h[picked]) * gate[picked].unsqueeze(1)
        share = F.one_hot(choice, EXPERTS).float().mean(0)
        balance = EXPERTS * (share * probs.mean(0)).sum()
        z_loss = torch.logsumexp(router_logits, 1).pow(2).mean()
        return self.head(h + mixed), balance, z_loss

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        logits, balance, z_loss = self(x)
        terms = {"task": F.cross_entropy(logits, y), "balance": 0.01 * balance, "router_z": 1e-3 * z_loss}
        loss = sum(terms.values())
        self.log("train_loss", loss)
        return {"loss": loss, "loss_terms": {name: value.detach() for name, value in terms.items()}}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits, _, _ = self(x)
        self.log_dict({"val_loss": F.cross_entropy(logits, y), "val_acc": (logits.argmax(1) == y).float().mean()})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.01)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    return Run(
        SwitchClassifier(),
        loader(_data(4096, seed), 64, seed=seed),
        loader(_data(1024, seed + 100), 512, shuffle=False),
        trainer={"max_epochs": 4},
    )


PROGRAMS = [
    Program(
        "switch_experts_balance_h",
        "mixture of experts",
        "a Switch-style top-1 mixture of eight expert MLPs in a classifier, load-balancing and router z losses handed "
        "over as loss_terms (an unpicked expert gets no gradient that step); AdamW with per-step cosine decay",
        _build,
        faults=("lr_x1000", "nan_batch", "no_zero_grad"),
    )
]
