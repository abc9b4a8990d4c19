"""What a training batch holds, read from its tensors' shapes on the host (no device read)."""

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
