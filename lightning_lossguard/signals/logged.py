"""Scalars a ``training_step`` logs (``self.log``/``self.log_dict``), kept on timed batches for the report.

Many losses are sums of terms that the step logs but does not hand over (``{"loss": total, "loss_terms": ...}``): a
VQ-VAE's reconstruction and codebook losses, a VAE's reconstruction and KL. Kept here as the device tensors they are
(detached: a logged loss must not keep its graph alive), on the batches LossGuard times anyway, and read back with the
interval's other signals. Which of them are terms of the loss is decided by the detectors, from the numbers alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch

MAX_NAMES = 32
"""Logged names kept per window at most: a step that logs dozens of metrics keeps its first ones (terms come first)."""


class LoggedScalars:
    """``(row, name) -> value`` for the window: ``row`` is the index the batch's loss will have among the window's
    losses (it is recorded at the batch's end, after the step logged)."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, str], torch.Tensor | float] = {}
        self._names: dict[str, None] = {}

    def capture(self, row: int, name: Any, value: Any) -> None:
        """Keep a scalar tensor or a number; anything else (a torchmetrics ``Metric``, a dict) is left alone."""
        if not isinstance(name, str):
            return
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                return
            kept: torch.Tensor | float = value.detach() if value.requires_grad else value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            kept = float(value)
        else:
            return
        if name not in self._names:
            if len(self._names) >= MAX_NAMES:
                return
            self._names[name] = None
        self._values[(row, name)] = kept

    def clear(self) -> None:
        self._values, self._names = {}, {}

    def take(self, device: torch.device) -> tuple[list[int], list[str], torch.Tensor]:
        """The window's rows (loss indices), names and values ``[rows, names]`` (NaN where a name was not logged), on
        ``device``, ready to join the interval's one read-back; the buffer starts over."""
        names = list(self._names)
        rows = sorted({row for row, _ in self._values})
        values = self._values
        self.clear()
        if not rows:
            return [], [], torch.zeros(0, 0)
        nan = torch.tensor(math.nan, device=device)
        cells = [
            _scalar(values[(row, name)], device) if (row, name) in values else nan for row in rows for name in names
        ]
        return rows, names, torch.stack(cells).reshape(len(rows), len(names))


def _scalar(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(device=device, dtype=torch.float32)
    return torch.tensor(value, device=device, dtype=torch.float32)
