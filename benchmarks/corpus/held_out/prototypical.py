"""Few-shot classification with Prototypical Networks, trained episodically. 240 Omniglot-like synthetic character
classes (chains of pen strokes whose shape derives from a task seed, redrawn twenty times per class with a shaky
hand, a shifted position and pixel noise) are split by the seed into 192 training classes and 48 disjoint
validation classes. An episode sampler picks N classes and K support plus Q query drawings of each, one episode per
step; a Conv-4 encoder (conv-BN-ReLU-maxpool x4) embeds them all, each class's prototype is the mean of its support
embeddings, and the logits of a query are its negative squared Euclidean distances to the prototypes, with
cross-entropy over the N ways. Training uses more ways than testing (10-way vs 5-way), as the original recipe
advises. Adam 1e-3, the learning rate halved every two epochs (StepLR); validation runs the same fixed 5-way 5-shot
episodes on the held-out classes each time and logs their loss and accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler, TensorDataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.program import Program, Run

SIZE, CLASSES, TRAIN_CLASSES, DRAWINGS, STROKES = 16, 240, 192, 20, 4
TRAIN_WAY, TEST_WAY, SHOT, TRAIN_QUERY, TEST_QUERY, WIDTH = 10, 5, 5, 5, 15, 32


def _render(points: torch.Tensor, width: float = 0.8) -> torch.Tensor:
    """Rasterise pen strokes: ``points [..., STROKES + 1, 2]`` joined by segments, to ``[..., SIZE, SIZE]`` ink."""
    axis = torch.arange(SIZE, dtype=torch.float32) + 0.5
    pixels = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).view(-1, 2)  # [P, 2]
    start, end = points[..., :-1, None, :], points[..., 1:, None, :]  # [..., S, 1, 2]
    along = end - start
    t = ((pixels - start) * along).sum(-1) / along.pow(2).sum(-1).clamp_min(1e-6)
    nearest = start + t.clamp(0, 1).unsqueeze(-1) * along  # [..., S, P, 2]
    distance = (pixels - nearest).pow(2).sum(-1)
    ink = torch.exp(-distance / (2 * width**2)).amax(-2)  # the darkest stroke at each pixel
    return ink.view(*points.shape[:-2], SIZE, SIZE)


def _alphabet(seed: int, task_seed: int = 53) -> TensorDataset:
    """``CLASSES x DRAWINGS`` drawings ``[1, SIZE, SIZE]`` with their class, class-major (index = class * DRAWINGS
    + drawing). The class shapes come from ``task_seed``, each drawing's shaky hand, position and noise from
    ``seed``."""
    task = generator(task_seed)
    steps = torch.randn(CLASSES, STROKES, 2, generator=task) * 3.5
    start = 5 + torch.rand(CLASSES, 1, 2, generator=task) * 6
    shapes = torch.cat([start, start + steps.cumsum(1)], 1).clamp(2, SIZE - 2)  # [C, S + 1, 2]
    g = generator(seed)
    hand = 0.9 * torch.randn(CLASSES, DRAWINGS, STROKES + 1, 2, generator=g)
    shift = (torch.rand(CLASSES, DRAWINGS, 1, 2, generator=g) - 0.5) * 5
    ink = _render(shapes[:, None] + hand + shift)
    x = ink + 0.5 * torch.randn(ink.shape, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(DRAWINGS)
    return TensorDataset(x.reshape(-1, 1, SIZE, SIZE), labels)


class EpisodeSampler(Sampler[list[int]]):
    """Yields one episode's indices per batch: ``way`` classes from ``classes``, ``shot + query`` drawings of each,
    class by class (support first). ``fixed``: the same episodes every pass (validation); else new ones each
    epoch, from one generator seeded once."""

    def __init__(
        self, classes: list[int], episodes: int, way: int, shot: int, query: int, seed: int, fixed: bool = False
    ) -> None:
        self.classes, self.episodes = torch.tensor(classes), episodes
        self.way, self.per_class = way, shot + query
        self.seed, self.fixed = seed, fixed
        self.generator = generator(seed)

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[list[int]]:
        g = generator(self.seed) if self.fixed else self.generator
        for _ in range(self.episodes):
            chosen = self.classes[torch.randperm(len(self.classes), generator=g)[: self.way]]
            drawings = torch.stack([torch.randperm(DRAWINGS, generator=g)[: self.per_class] for _ in chosen])
            yield (chosen[:, None] * DRAWINGS + drawings).flatten().tolist()


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class ProtoNet(L.LightningModule):
    """Conv-4 encoder (32 channels, 16x16 -> 1x1, a 32-d embedding); squared-Euclidean prototype classifier."""

    def __init__(self, train_way: int = TRAIN_WAY, test_way: int = TEST_WAY, shot: int = SHOT) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            _block(1, WIDTH), _block(WIDTH, WIDTH), _block(WIDTH, WIDTH), _block(WIDTH, WIDTH), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.encoder(x)
        return embedding

    def _episode(self, batch: Any, way: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = batch
        shot = self.hparams["shot"]
        z = self(x).view(way, -1, WIDTH)  # [way, shot + query, d], class by class
        prototypes = z[:, :shot].mean(1)
        queries = z[:, shot:].reshape(-1, z.shape[-1])
        logits = -(queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)
        target = torch.arange(way, device=x.device).repeat_interleave(z.shape[1] - shot)
        return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, acc = self._episode(batch, self.hparams["train_way"])
        self.log_dict({"train_loss": loss, "train_acc": acc})
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._episode(batch, self.hparams["test_way"])
        self.log_dict({"val_loss": loss, "val_acc": acc})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    drawings = _alphabet(seed)
    order = torch.randperm(CLASSES, generator=generator(seed + 1)).tolist()
    train_classes, val_classes = order[:TRAIN_CLASSES], order[TRAIN_CLASSES:]
    train = EpisodeSampler(train_classes, 60, TRAIN_WAY, SHOT, TRAIN_QUERY, seed=seed)
    val = EpisodeSampler(val_classes, 30, TEST_WAY, SHOT, TEST_QUERY, seed=seed + 100, fixed=True)
    return Run(
        ProtoNet(),
        DataLoader(drawings, batch_sampler=train),
        DataLoader(drawings, batch_sampler=val),
        trainer={"max_epochs": 6},
    )


PROGRAMS = [
    Program(
        "prototypical_few_shot_h",
        "few-shot learning (prototypical)",
        "Prototypical Networks trained episodically: a Conv-4 encoder embeds 10-way 5-shot episodes of synthetic "
        "character classes, prototypes are support means, logits negative squared distances; Adam with StepLR, "
        "5-way validation episodes on disjoint classes",
        _build,
        faults=("nan_batch", "flipped_sign", "frozen"),
    )
]
