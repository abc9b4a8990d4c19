"""Scalars a ``training_step`` logs (``self.log``/``self.log_dict``), kept on timed batches for the report.

Many losses are sums of terms that the step logs but does not hand over (``{"loss": total, "loss_terms": ...}``): a
VQ-VAE's reconstruction and codebook losses, a VAE's reconstruction and KL. Kept here as the device tensors they are
(detached: a logged loss must not keep its graph alive), on the batches LossGuard times anyway, and read back with the
interval's other signals. Which of them are terms of the loss is decided by the detectors, from the numbers alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
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

    def pop_row(self, row: int) -> dict[str, torch.Tensor | float]:
        """Take out the values logged for ``row``: its batch returned no loss, so they belong to no loss row (left
        in, the next batch's would be keyed to them)."""
        taken = {name: self._values.pop((row, name), None) for name in self._names}
        return {name: value for name, value in taken.items() if value is not None}

    def clear(self) -> None:
        self._values, self._names = {}, {}

    def take(self, device: torch.device) -> LoggedTake:
        """The window's logged values; the buffer starts over. Tensors are stacked on ``device`` (no copy to the host
        here: they join the interval's one read-back); numbers logged as Python floats stay on the host."""
        names = list(self._names)
        rows = sorted({row for row, _ in self._values})
        values = self._values
        self.clear()
        row_of = {row: i for i, row in enumerate(rows)}
        column_of = {name: j for j, name in enumerate(names)}
        host = np.full((len(rows), len(names)), math.nan)
        present = np.zeros((len(rows), len(names)), dtype=bool)
        tensors: list[torch.Tensor] = []
        at_rows: list[int] = []
        at_columns: list[int] = []
        for (row, name), value in values.items():
            present[row_of[row], column_of[name]] = True
            if isinstance(value, torch.Tensor):
                tensors.append(value.reshape(()).to(device=device, dtype=torch.float32))
                at_rows.append(row_of[row])
                at_columns.append(column_of[name])
            else:
                host[row_of[row], column_of[name]] = value
        on_device = torch.stack(tensors) if tensors else torch.zeros(0, device=device)
        positions = (np.asarray(at_rows, int), np.asarray(at_columns, int))
        return LoggedTake(rows, names, on_device, positions, host, present)


@dataclass
class LoggedTake:
    """One window's logged values: ``rows`` (loss indices), ``names``, the tensor-valued cells on the device (at
    ``positions``) and the rest on the host (NaN where a name was not logged)."""

    rows: list[int]
    names: list[str]
    on_device: torch.Tensor
    positions: tuple[np.ndarray, np.ndarray]
    host: np.ndarray
    present: np.ndarray  # [rows, names]: the cells that were logged (a logged NaN is not a missing value)

    def matrix(self, read: np.ndarray) -> np.ndarray:
        """``[rows, names]``, given ``on_device`` read back."""
        values = self.host.copy()
        values[self.positions] = read
        return values


def nonfinite_logged(
    steps: list[int], names: list[str], values: np.ndarray, present: np.ndarray
) -> list[tuple[int, tuple[str, ...]]]:
    """Of batches that returned no loss (their ``steps``; ``[steps, names]`` logged ``values`` and which of them were
    logged), those that logged a value that is not finite: (step, those names)."""
    found = []
    for i, step in enumerate(steps):
        bad = tuple(name for j, name in enumerate(names) if present[i, j] and not math.isfinite(values[i, j]))
        if bad:
            found.append((step, bad))
    return found
