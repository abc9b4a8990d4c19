"""The training loss (and named loss terms) per batch, kept on the device until the report step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np
import torch

from lightning_lossguard.signals.buffer import DeviceRows


class LossProbe:
    """One row per training batch: ``[loss, term_1, ..., term_T]``.

    Term names are fixed by the first batch that returns ``loss_terms``; a term missing later is stored
    as NaN (ignored by the term detectors), new names are collected in ``unknown_terms`` and ignored.
    """

    def __init__(self) -> None:
        self.term_names: tuple[str, ...] | None = None
        self.rows: DeviceRows | None = None
        self.unknown_terms: set[str] = set()
        self._plain: list[torch.Tensor] = []  # losses without terms: detached, stacked once at the report
        self._checked: list[torch.Tensor] = []  # plain losses the tripwire already stacked and read (1-D chunks)
        self._checked_rows = 0  # rows of a terms buffer the tripwire already read
        self._read = np.empty(0)  # the losses since the last take already read for validations (float64, host)

    def record(self, loss: torch.Tensor, terms: Mapping[str, object] | None) -> None:
        """Store the loss of one batch. Device work only (none at all for a plain loss: a reference is kept)."""
        if self.term_names is None:
            self.term_names = tuple(sorted(terms)) if terms else ()
            self.rows = DeviceRows(1 + len(self.term_names))
        if self.keep(loss):
            return
        assert self.rows is not None
        row = self.rows.next_row(loss.device)
        views = row.unbind()
        targets = [views[0]]
        sources = [loss.detach().reshape(())]
        for column, name in enumerate(self.term_names, start=1):
            value = terms.get(name) if terms else None
            if isinstance(value, torch.Tensor):
                targets.append(views[column])
                sources.append(value.detach().float().mean() if value.numel() != 1 else value.detach().reshape(()))
            elif isinstance(value, Real):
                views[column].fill_(float(value))
            else:
                views[column].fill_(float("nan"))
        torch._foreach_copy_(targets, sources)
        if terms:
            self.unknown_terms.update(set(terms) - set(self.term_names))

    def keep(self, loss: torch.Tensor) -> bool:
        """Store a loss without terms when this run's losses have none (True); else store nothing (False)."""
        if self.term_names != ():
            return False
        # Keeping the detached scalar costs less than any copy; its graph is already freed. Lightning hands over a
        # detached copy in automatic optimization: kept as it is (an op per step less).
        self._plain.append(loss.detach() if loss.requires_grad else loss)
        return True

    def any_nonfinite(self) -> bool:
        """Whether a loss recorded since the previous check (or :meth:`take`) is NaN or infinite: one host read (a
        report-interval check, for when the cost budget has stretched the interval between reports).

        Only the losses recorded since the previous check are read (the earlier ones were finite, or the report
        that followed took them), so a check costs the same whatever the interval has grown to."""
        if self._plain:
            chunk = _stacked(self._plain)
            self._plain = []
            self._checked.append(chunk)
            # The sum is non-finite when a loss is (or when finite losses overflow float32 together: a report is
            # due then too). One op fewer than isfinite().all().
            return not math.isfinite(float(chunk.sum()))
        if self.rows is not None and self.rows.count > self._checked_rows:
            fresh = self.rows.peek()[self._checked_rows :, 0]
            self._checked_rows = self.rows.count
            return not bool(fresh.isfinite().all())
        return False

    def pending(self) -> np.ndarray:
        """The losses recorded since the last :meth:`take`, on the host (float64), left in place for the report: a
        validation run compares its metric with them without a report. Only those not read by an earlier call are
        read (one device read): a run validated after every batch would otherwise read its interval again each time."""
        fresh = self._since(len(self._read))
        if fresh.numel():
            self._read = np.concatenate([self._read, fresh.float().cpu().numpy().astype(np.float64)])
        return self._read

    def _since(self, first: int) -> torch.Tensor:
        """The losses recorded since the last :meth:`take` from the ``first``-th on, on the device (1-D)."""
        if self.rows is not None and self.term_names:
            return self.rows.peek()[first:, 0]
        parts, offset = [], 0
        for chunk in self._checked:
            if offset + len(chunk) > first:
                parts.append(chunk[max(0, first - offset) :])
            offset += len(chunk)
        plain = self._plain[max(0, first - offset) :]
        if plain:
            parts.append(_stacked(plain))
        if not parts:
            return torch.empty(0)
        return parts[0] if len(parts) == 1 else torch.cat([part.float() for part in parts])

    def take(self) -> torch.Tensor:
        """Rows since the last call, on the device: ``[batches, 1 + terms]``."""
        self._checked_rows = 0
        self._read = np.empty(0)
        plain = self._plain_losses()
        if plain is not None:
            self._checked, self._plain = [], []
            return plain.reshape(-1, 1)
        if self.rows is None:
            return torch.empty(0, 1)
        return self.rows.take()

    def _plain_losses(self) -> torch.Tensor | None:
        """The plain losses since the last :meth:`take` as one float 1-D tensor (None: none, or a terms buffer)."""
        chunks = [*self._checked, _stacked(self._plain)] if self._plain else self._checked
        if not chunks:
            return None
        return (chunks[0] if len(chunks) == 1 else torch.cat(chunks)).float()


def _stacked(losses: list[torch.Tensor]) -> torch.Tensor:
    """The losses as one 1-D tensor: stacked as they are (0-d, or all of one shape such as ``[1]``), else one by one."""
    try:
        stacked = torch.stack(losses)
        return stacked if stacked.dim() == 1 else stacked.reshape(-1)  # 0-d losses: no second op
    except RuntimeError:  # mixed shapes: a loss of shape [1] among scalars
        return torch.stack([loss.reshape(()) for loss in losses])
