"""Neural style transfer by optimisation (Gatys-style): the only trainable parameter is the picture itself. A fixed,
frozen convolutional feature extractor (random filters stand in for a pretrained VGG) compares the picture's deep
features with a content image's (content loss) and its feature correlations (Gram matrices at three depths) with a
style image's (style loss, weighted 1e3). The picture starts from the content image plus noise; Adam 0.02 on its
pixels. The terms are handed over as ``loss_terms``: the style term falls by orders of magnitude while the content
term rises from near zero, the trade-off the method is about."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.corpus.data import generator
from benchmarks.corpus.program import Program, Run

SIZE = 32


def _pictures(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A content picture (smooth shapes) and a style picture (high-frequency stripes), ``[1, 3, SIZE, SIZE]``."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    g = generator(seed)
    centre = torch.rand(2, generator=g) - 0.5
    disc = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 < 0.25).float()
    content = torch.stack([disc, 0.5 * (xs + 1) * (1 - disc), 0.3 + 0.2 * ys]).unsqueeze(0)
    stripes = torch.sin(12 * (xs * 0.8 + ys * 0.6)) * torch.cos(5 * ys)
    style = torch.stack([stripes, -stripes, stripes.roll(3, 1)]).unsqueeze(0) * 0.5 + 0.5
    return content, style


def _gram(features: torch.Tensor) -> torch.Tensor:
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class StyleTransfer(L.LightningModule):
    """The picture (``[1, 3, 32, 32]``) is the parameter; three frozen conv stages give the features."""

    def __init__(self, content: torch.Tensor, style: torch.Tensor, style_weight: float = 1e3) -> None:
        super().__init__()
        self.style_weight = style_weight
        self.picture = nn.Parameter(content + 0.1 * torch.randn_like(content))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2) if i else nn.Identity())
            for i, (a, b) in enumerate(((3, 16), (16, 32), (32, 32)))
        )
        self.stages.requires_grad_(False)
        self.register_buffer("content", content)
        with torch.no_grad():
            self.register_buffer("content_features", self.features(content)[-1])
            for i, features in enumerate(self.features(style)):
                self.register_buffer(f"style_gram_{i}", _gram(features))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        features = self.features(self.picture)
        content = F.mse_loss(features[-1], self.content_features)
        style = sum(F.mse_loss(_gram(f), getattr(self, f"style_gram_{i}")) for i, f in enumerate(features))
        terms = {"content": content, "style": self.style_weight * style}
        loss = terms["content"] + terms["style"]
        self.log_dict({"train_loss": loss, "content": content, "style": terms["style"]})
        return {"loss": loss, "loss_terms": {name: value.detach() for name, value in terms.items()}}

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam([self.picture], lr=0.02)


def _build(seed: int) -> Run:
    torch.manual_seed(seed)
    content, style = _pictures(seed)
    steps = TensorDataset(torch.zeros(300, 1))  # the data is the picture itself: each item is one optimisation step
    return Run(StyleTransfer(content, style), DataLoader(steps, batch_size=1), trainer={"max_epochs": 1})


PROGRAMS = [
    Program(
        "style_transfer_pixels_h",
        "style transfer (optimising the input)",
        "Gatys-style neural style transfer: the picture's pixels are the only parameter, content and Gram-matrix style "
        "losses from a frozen conv extractor, handed over as loss_terms; Adam 0.02, one step per dummy item",
        _build,
        faults=("lr_x1000", "flipped_sign", "no_zero_grad"),
    )
]
