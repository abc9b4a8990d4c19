"""What a training batch holds and what its step returned, read on the host (no device read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def leading_rows(batch: Any) -> int:
    """Rows of the first tensor found in a batch (a tensor, or a tuple, list or dict of them); 0 when none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 0
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        if isinstance(item, (torch.Tensor, tuple, list, Mapping)):
            return leading_rows(item)
    return 0


def loss_of(outputs: Any) -> tuple[torch.Tensor | None, Mapping[str, Any] | None]:
    """The loss tensor and the optional ``loss_terms`` dict from what training_step returned."""
    if type(outputs) is dict:  # what Lightning hands over in automatic optimization: the fast path
        loss = outputs.get("loss")
        terms = outputs.get("loss_terms")
        if type(loss) is torch.Tensor and terms is None and loss.numel() == 1:
            return loss, None
    if isinstance(outputs, torch.Tensor):
        return (outputs if outputs.numel() == 1 else None), None
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        terms = outputs.get("loss_terms")
        loss = loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None
        return loss, (terms if isinstance(terms, Mapping) else None)
    return None, None
