"""Sums up predictions and targets on the device for ``output_range_mismatch``; read back once per window."""

from __future__ import annotations

import torch

from lightning_lossguard.detectors.output_range_mismatch import RangeCounts
from lightning_lossguard.outputs.convention import Layout

_ATOL = 1e-6  # ties and the [0, 1] bounds are exact up to float noise
_RTOL = 1e-5
_SUM_TOL = 1e-3  # a probability row sums to 1 within this


class RangeProbe:
    """Per-batch device work only: a few reductions added into two small device tensors.

    Slots: ``[at_floor, at_ceiling, below_floor, above_ceiling, negative_targets, positive_targets, outside_unit,
    squashed]`` (int64) and ``[-pred_min, pred_max, -target_min, target_max]`` (float32, so one ``fmax`` keeps
    all four extremes).
    Sample counts come from shapes, on the host. A window holds one kind; batches of another are skipped.
    """

    def __init__(self, margin: float) -> None:
        self.margin = margin
        self.layout: Layout | None = None
        self.predictions = 0
        self.targets = 0
        self.rows = 0
        self._counts: torch.Tensor | None = None
        self._extremes: torch.Tensor | None = None

    def add(self, layout: Layout, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            return
        p = preds.detach().float()
        t = target.detach().float().reshape(-1)
        flat = p.reshape(-1)
        lo, hi = torch.aminmax(flat)
        zero = torch.zeros((), dtype=torch.long, device=flat.device)
        at_floor = at_ceiling = below = above = negative = positive = outside = squashed = zero
        if layout.kind == "regression":
            # The extreme itself is always attained once: only further ties mean a clamp.
            at_floor = ((flat <= lo + (_ATOL + _RTOL * lo.abs())).sum() - 1).clamp_min(0)
            at_ceiling = ((flat >= hi - (_ATOL + _RTOL * hi.abs())).sum() - 1).clamp_min(0)
            gap = self.margin * t.std(correction=0)
            below = (t < lo - gap).sum()
            above = (t > hi + gap).sum()
            negative = (t < -gap).sum()
            positive = (t > gap).sum()
        elif layout.kind == "probabilities":
            outside = ((flat < -_ATOL) | (flat > 1 + _ATOL)).sum()
        else:
            in_unit = (p >= -_ATOL) & (p <= 1 + _ATOL)
            if layout.class_dim:
                rows = in_unit.all(dim=1) & ((p.sum(dim=1) - 1).abs() <= _SUM_TOL)
                squashed = rows.sum()
                self.rows += rows.numel()
            else:
                squashed = in_unit.sum()
                self.rows += in_unit.numel()
        counts = torch.stack([at_floor, at_ceiling, below, above, negative, positive, outside, squashed])
        extremes = torch.stack([-lo, hi, -t.min(), t.max()])
        if self._counts is None or self._extremes is None or self._counts.device != counts.device:
            self._counts, self._extremes = counts, extremes
        else:
            self._counts += counts
            self._extremes = torch.fmax(self._extremes, extremes)  # fmax: a NaN batch does not hide the rest
        self.predictions += flat.numel()
        self.targets += t.numel()

    def take(self) -> RangeCounts | None:
        """The window so far (one device-to-host copy), and start a new one. None when empty."""
        layout, counts, extremes = self.layout, self._counts, self._extremes
        if layout is None or counts is None or extremes is None or not self.predictions:
            return None
        values = torch.cat([counts.double(), extremes.double()]).cpu().tolist()
        result = RangeCounts(
            kind=layout.kind,
            predictions=self.predictions,
            targets=self.targets,
            at_floor=int(values[0]),
            at_ceiling=int(values[1]),
            below_floor=int(values[2]),
            above_ceiling=int(values[3]),
            negative_targets=int(values[4]),
            positive_targets=int(values[5]),
            outside_unit=int(values[6]),
            squashed=int(values[7]),
            rows=self.rows,
            classes=layout.classes if layout.class_dim else 0,
            pred_min=-values[8],
            pred_max=values[9],
            target_min=-values[10],
            target_max=values[11],
        )
        self.reset()
        return result

    def reset(self) -> None:
        self.layout = None
        self.predictions = self.targets = self.rows = 0
        self._counts = self._extremes = None
