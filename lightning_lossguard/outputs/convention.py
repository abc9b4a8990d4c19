"""How predictions reach the monitor: the step-output convention and what the predictions are.

A ``training_step`` or ``validation_step`` returns ``{"loss": loss, "preds": preds, "target": target}``,
with ``preds`` exactly as the loss receives them and ``target`` what it compares them with. The layout is
read from shapes and dtypes only (host metadata, no device read):

- ``preds [N, C, ...]`` with integer ``target [N, ...]``: class scores (``logits`` unless told otherwise);
- ``preds`` and ``target`` with as many values: ``regression`` for a float target; with ``kind="logits"`` or
  ``"probabilities"``, element-wise binary decisions (binary or multi-label classification).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lightning_lossguard.detectors.output_range_mismatch import KINDS


@dataclass(frozen=True)
class Layout:
    """What a batch of predictions is: its kind and, for classification, the number of classes."""

    kind: str  # one of KINDS
    classes: int  # 0 for regression, 2 for element-wise binary decisions, C for class scores
    class_dim: bool  # predictions carry a class dimension (dim 1)


def step_pair(outputs: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(preds, target)`` from a step's outputs, or None when the step did not return both."""
    if not isinstance(outputs, Mapping):
        return None
    preds, target = outputs.get("preds"), outputs.get("target")
    if isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor) and preds.numel() and target.numel():
        return preds, target
    return None


def resolve(kind: str, preds: torch.Tensor, target: torch.Tensor) -> Layout | None:
    """The layout of one batch (``kind`` is ``"auto"`` or one of KINDS); None when it cannot be told."""
    if not preds.is_floating_point():
        return None
    class_scores = (
        preds.ndim == target.ndim + 1
        and not target.is_floating_point()
        and preds.shape[0] == target.shape[0]
        and preds.shape[2:] == target.shape[1:]
        and preds.shape[1] >= 2
    )
    if class_scores:
        if kind == "regression":
            return None
        return Layout("logits" if kind == "auto" else kind, int(preds.shape[1]), True)
    if preds.numel() != target.numel():
        return None
    if kind == "auto":
        return Layout("regression", 0, False) if target.is_floating_point() else None
    if kind not in KINDS:
        raise ValueError(f"kind must be 'auto' or one of {', '.join(KINDS)}; got {kind!r}.")
    return Layout(kind, 0 if kind == "regression" else 2, False)


def class_labels(layout: Layout, preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true class indices, flattened (device tensors; classification layouts only)."""
    if layout.class_dim:
        return preds.detach().argmax(dim=1).reshape(-1), target.detach().reshape(-1).long()
    cut = 0.0 if layout.kind == "logits" else 0.5
    return (preds.detach().reshape(-1) > cut).long(), (target.detach().reshape(-1) > 0.5).long()


def describe(preds: torch.Tensor, target: torch.Tensor) -> str:
    """Shapes and dtypes, for a note."""
    return (
        f"preds {tuple(preds.shape)} {str(preds.dtype).replace('torch.', '')}, "
        f"target {tuple(target.shape)} {str(target.dtype).replace('torch.', '')}"
    )
