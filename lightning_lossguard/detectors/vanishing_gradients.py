"""``vanishing_gradients``: early layers learn orders of magnitude slower than late ones, or the
gradient norm collapses while the loss has not improved.

Depth rule (after AUTOTRAINER): the median ratio first-layer norm / last-layer norm over a window, on
dense weight layers only (embeddings get sparse gradients and are not comparable). A first layer that got its
share of the gradient at the start, in a run whose loss has since fallen by ``settled_fall``, learned and then
settled: info, not a warning. Saturating units and decided discrete codes pass little gradient once learned
(measured: a Gumbel-softmax autoencoder at its noise floor, its encoder's ratio 0.08 over the first 50 steps and
1e-4 by the end while the loss fell 89%, warned on 2 of 3 seeds); a net whose early layers never got a gradient
(a deep sigmoid stack) is below the ratio from its first window and keeps the warning. A first layer that got its
share before any update, in a run whose loss has since jumped ``jump`` times above its first value (the highest
median of five consecutive losses), lost its gradient once training began: the warning blames a learning rate far
too high (a Set Transformer at lr x1000: 0.11 of the head's gradient before any update, ~1e-11 after its loss
jumped from 1.4 to 12). Collapse rule: the
global norm fell by ``collapse_ratio`` from its early level while the loss stayed within
``loss_flat`` of where it started; a converged run whose gradients shrink because the loss fell is
healthy and stays quiet. The collapse is also measured from the first optimizer step, the model before any update,
against the loss before any update: a learning rate far too high can leave a model saturated by its very first update
(a capsule network's norm fell 1e4-fold there and its loss jumped 4.8x and stayed), and then the first window is
already after the collapse. The first window is counted in optimizer steps, so gradients sampled on a stride do
not stretch it into the run.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import column_medians, median, row_medians
from lightning_lossguard.diagnosis import Diagnosis, Severity


@dataclasses.dataclass(frozen=True)
class VanishingGradientsThresholds(Thresholds):
    layer_ratio: float = threshold(1e-3, "First-layer norm / last-layer norm below this is vanishing.")
    min_layers: int = threshold(3, "Dense weight layers needed for the depth rule.")
    window: int = threshold(
        50,
        "Optimizer steps in the first window (the early level); the rolling median holds this many measured steps.",
    )
    min_steps: int = threshold(20, "Steps needed before judging.")
    min_early_steps: int = threshold(
        5,
        "Measured steps the first window needs, once it is over, to give an early level (gradients sampled on a "
        "stride measure fewer than min_steps of its steps).",
        low=1,
    )
    settled_fall: float = threshold(
        0.5,
        "A first layer above layer_ratio in the first window, in a run whose loss has since fallen by this share "
        "of its early level, learned and settled: info.",
        high=1.0,
    )
    collapse_ratio: float = threshold(1e-4, "Global norm now / early global norm below this is a collapse ...")
    loss_flat: float = threshold(0.9, "... when the loss is still above this fraction of its early level.")
    jump: float = threshold(
        2.0,
        "A first layer that got its share of the gradient before any update, in a run whose loss has since jumped "
        "this many times above its first value, blames a learning rate far too high.",
        low=1,
    )


class VanishingGradients(Detector[VanishingGradientsThresholds]):
    """Depth ratio of layer norms, and collapse of the global norm, each over a rolling window."""

    code = "vanishing_gradients"
    Thresholds = VanishingGradientsThresholds

    def __init__(self, thresholds: VanishingGradientsThresholds | None = None) -> None:
        super().__init__(thresholds)
        w = int(self.thresholds.window)
        self.layer_rows: deque[list[float]] = deque(maxlen=w)
        self.early_rows: list[list[float]] = []
        self.norms: deque[float] = deque(maxlen=w)
        self.early_norms: list[float] = []
        self.early_steps: list[int] = []  # the optimizer step of each early row
        self.losses: deque[float] = deque(maxlen=w)
        self.early_losses: list[float] = []
        # The first window is counted in optimizer steps, not rows: once the budget samples gradients on a stride, a
        # window of rows would reach hundreds of steps into the run and take a settled layer's ratio as the early one.
        self.early_until: int | None = None  # the first step after the first window (None: no row seen yet)
        self.early_over = False  # a row at or past early_until was seen

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_steps)
        return None if len(self.norms) >= need else f"needs {need} optimizer steps, saw {len(self.norms)}"

    def update(
        self,
        steps: Sequence[int],
        layer_norms: np.ndarray,
        layers: Sequence[str],
        paths: Sequence[tuple[int, int, int]],
        global_norms: Sequence[float] | np.ndarray,
        losses: Sequence[float] | np.ndarray = (),
    ) -> list[Diagnosis]:
        """Judge one window.

        Args:
            layer_norms: ``[steps, layers]`` per-layer norms.
            paths: ``(first layer, last layer, comparable layers on the path)`` for each gradient path: the
                depth rule only compares the two ends of one path (one optimizer, one chain of ops).
        """
        t = self.thresholds
        w = int(t.window)
        norms = np.asarray(global_norms, dtype=np.float64)
        keep = np.isfinite(norms)
        new_rows = np.asarray(layer_norms)[keep].tolist()
        kept = norms[keep].tolist()
        row_steps = np.asarray(steps, dtype=np.int64)[keep].tolist() if len(steps) == len(norms) else []
        self.layer_rows.extend(new_rows)
        self.norms.extend(kept)
        early = self._early_count(row_steps, len(kept))
        self.early_rows.extend(new_rows[:early])
        self.early_norms.extend(kept[:early])
        self.early_steps.extend(row_steps[:early])
        loss_values = np.asarray(losses, dtype=np.float64)
        finite_losses = loss_values[np.isfinite(loss_values)].tolist()
        self.losses.extend(finite_losses)
        self.early_losses.extend(finite_losses[: max(0, w - len(self.early_losses))])
        if len(self.norms) < t.min_steps or not steps:
            return []
        decided = int(steps[-1])
        return self._depth(decided, layers, paths) or self._collapse(decided)

    def _early_count(self, row_steps: Sequence[int], rows: int) -> int:
        """How many of ``rows`` new rows (at ``row_steps``) fall in the first ``window`` optimizer steps. Rows whose
        steps are unknown count as consecutive steps; a state saved before the window was counted in steps (its
        early rows, no end) ends the window where its rows end."""
        w = int(self.thresholds.window)
        if not rows:
            return 0
        if self.early_until is None:
            start = row_steps[0] if row_steps else 0
            self.early_until = start + max(0, w - len(self.early_rows))
        if row_steps:
            count = sum(1 for step in row_steps if step < self.early_until)
        else:
            count = max(0, min(rows, w - len(self.early_rows)))
        self.early_over = self.early_over or count < rows
        return count

    def _on_every_step(self, values: list[Any]) -> list[Any]:
        """The first window's ``values`` (one per early row) held from each measured step to the next, one per
        optimizer step: a median of them weighs a row by the steps it stands for, so a whole first report followed by
        a stride does not tilt the early level towards the first steps. As they are when their steps are unknown."""
        if len(self.early_steps) != len(values) or len(values) < 2:
            return values
        steps = np.asarray(self.early_steps)
        # A finished window runs to its end; one still filling, to its latest row.
        end = self.early_until if self.early_over and self.early_until is not None else int(steps[-1]) + 1
        grid = np.arange(int(steps[0]), end)
        return [values[i] for i in np.searchsorted(steps, grid, side="right") - 1]

    def _early_measured(self, rows: int) -> bool:
        """Whether ``rows`` measured steps of the first window give its level: ``min_steps`` of them, or, once the
        window is over, ``min_early_steps`` (all it held under a stride)."""
        t = self.thresholds
        return rows >= t.min_steps or (self.early_over and rows >= t.min_early_steps)

    def _depth(self, decided: int, layers: Sequence[str], paths: Sequence[tuple[int, int, int]]) -> list[Diagnosis]:
        t = self.thresholds
        long_paths = [p for p in paths if p[2] >= t.min_layers]
        if not long_paths or not self.layer_rows:
            return []
        rows = np.asarray(self.layer_rows)
        if rows.ndim != 2 or rows.shape[1] != len(layers):
            return []
        level = _layer_levels(rows)
        worst: tuple[float, int, int, int] | None = None
        for first, last, count in long_paths:
            a, b = level[first], level[last]
            if np.isfinite(a) and np.isfinite(b) and b > 0 and (worst is None or a / b < worst[0]):
                worst = (float(a / b), first, last, count)
        if worst is None or worst[0] >= t.layer_ratio:
            return []
        ratio, first, last, count = worst
        message = (
            f"The first layer {layers[first]} gets gradients {1 / ratio:.3g}x smaller than the last layer "
            f"{layers[last]} of the same gradient path (median over {len(rows)} steps: {level[first]:.3g} vs "
            f"{level[last]:.3g}; {count} weight layers on the path)."
        )
        evidence = {
            "first_layer_norm": float(level[first]),
            "last_layer_norm": float(level[last]),
            "ratio": ratio,
            "weight_layers": count,
        }
        settled = self._settled(first, last)
        if settled is not None:
            early_ratio, fall = settled
            span, measured = len(self._on_every_step(self.early_rows)), len(self.early_rows)
            message += (
                f" In its first {span} steps ({measured} measured) the ratio was {early_ratio:.3g} and the loss has "
                f"fallen {fall:.0%} since: the early layers learned, then settled (a saturated unit or a decided "
                "discrete code passes little gradient), so this is not holding learning back."
            )
            evidence.update(early_ratio=early_ratio, loss_fall=fall)
        lost = self._lost_after_start(first, last) if settled is None else None
        remedies = None
        if lost is not None:
            start_ratio, first_loss, peak = lost
            message += (
                f" Before any update the ratio was {start_ratio:.3g}, and the loss has since jumped to {peak:.4g} from "
                f"{first_loss:.4g}: the first layer lost its gradient once training began (saturated or dead units), "
                "most likely a learning rate far too high."
            )
            evidence.update(first_ratio=start_ratio, first_loss=first_loss, peak_loss=peak)
            remedies = [
                "Lower the learning rate (try 10x lower) and add a warm-up.",
                "Clip gradients: Trainer(gradient_clip_val=1.0).",
                *code_info(self.code).remedies[:1],
            ]
        found = self.diagnosis(decided, message, evidence, subject=layers[first], remedies=remedies)
        return [found if settled is None else dataclasses.replace(found, severity=Severity.INFO)]

    def _lost_after_start(self, first: int, last: int) -> tuple[float, float, float] | None:
        """(the ratio at the first optimizer step, the loss then, the highest loss since) when the first layer got its
        share of the gradient before any update and the loss has since jumped ``jump`` times above its first value
        (the highest median of ``PEAK_BLOCK`` consecutive losses: one noisy batch is not a jump): a learning rate far
        too high saturated or killed the units in between. None otherwise."""
        t = self.thresholds
        if not self.early_rows or not self.early_losses:
            return None
        row = self.early_rows[0]
        if max(first, last) >= len(row):
            return None
        a, b = row[first], row[last]
        first_loss = self.early_losses[0]
        peak = max(_block_peak(self.early_losses), _block_peak(self.losses))
        if not (a > 0 and b > 0 and first_loss > 0) or a / b < t.layer_ratio or peak < t.jump * first_loss:
            return None
        return float(a / b), float(first_loss), float(peak)

    def _settled(self, first: int, last: int) -> tuple[float, float] | None:
        """(the first window's ratio, the loss's fall since) when the first layer got its share of the gradient at
        the start and the loss has since fallen by ``settled_fall``; None otherwise (or when it cannot be told)."""
        t = self.thresholds
        if (
            not self._early_measured(len(self.early_rows))
            or min(len(self.early_losses), len(self.losses)) < t.min_steps
        ):
            return None
        rows = np.asarray(self._on_every_step(self.early_rows))
        if rows.ndim != 2 or max(first, last) >= rows.shape[1]:
            return None
        early = _layer_levels(rows)
        a, b = early[first], early[last]
        loss_early, loss_now = self._loss_levels()
        if not (np.isfinite(a) and np.isfinite(b) and b > 0 and loss_early > 0):
            return None
        fall = 1 - loss_now / loss_early
        if a / b < t.layer_ratio or fall < t.settled_fall:
            return None
        return float(a / b), float(fall)

    def _loss_levels(self) -> tuple[float, float]:
        """The loss's level over the first window and over the latest one."""
        return median(self.early_losses), median(self.losses)

    def _collapse(self, decided: int) -> list[Diagnosis]:
        """The global norm fell by ``collapse_ratio`` from a reference while the loss stayed within ``loss_flat`` of
        the reference's loss. Two references: the first optimizer step, the model before any update (a learning rate
        far too high can saturate it on its first update, and then every window, the first included, is after the
        collapse: a capsule network's norm fell 1e4-fold there and its loss jumped 4.8x and stayed), then the first
        window's levels."""
        t = self.thresholds
        if len(self.early_losses) < t.min_steps or len(self.losses) < t.min_steps:
            return []
        now, loss_now = median(self.norms), median(self.losses)
        references = [(self.early_norms[0], self.early_losses[0], True)]
        if self.early_over and self._early_measured(len(self.early_norms)):
            references.append((median(self._on_every_step(self.early_norms)), median(self.early_losses), False))
        for norm, loss, before_update in references:
            if norm > 0 and now / norm < t.collapse_ratio and loss > 0 and loss_now >= t.loss_flat * loss:
                return [self._collapsed(decided, norm, loss, now, loss_now, before_update)]
        return []  # no collapse, or the loss fell with it: small gradients of a converging run

    def _collapsed(
        self, decided: int, norm: float, loss: float, now: float, loss_now: float, before_update: bool
    ) -> Diagnosis:
        smaller = f"{norm / max(now, 1e-300):.3g}x smaller"
        if not before_update:
            message = (
                f"The gradient norm collapsed from {norm:.3g} to {now:.3g} ({smaller}) while the loss barely moved "
                f"({loss:.4g} -> {loss_now:.4g})."
            )
            evidence = {"early_grad_norm": norm, "grad_norm": now, "early_loss": loss, "loss": loss_now}
            return self.diagnosis(decided, message, evidence)
        message = (
            f"The gradient norm collapsed from {norm:.3g} before any update to {now:.3g} ({smaller}) while the loss "
            f"is {loss_now:.4g} against {loss:.4g} before any update: the first updates left the model in a flat "
            "region it has not left (saturated or dead units), most likely a learning rate far too high for the start."
        )
        evidence = {"first_grad_norm": norm, "grad_norm": now, "first_loss": loss, "loss": loss_now}
        remedies = [
            "Lower the learning rate (try 10x lower) and add a warm-up.",
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            *code_info(self.code).remedies[:1],
        ]
        return self.diagnosis(decided, message, evidence, remedies=remedies)


PEAK_BLOCK = 5
"""Consecutive losses whose median makes one point of the loss's peak."""


def _block_peak(losses: Sequence[float]) -> float:
    """The highest median of ``PEAK_BLOCK`` consecutive losses (non-overlapping blocks; -inf when there are none)."""
    values = np.asarray(losses, dtype=np.float64)
    blocks = len(values) // PEAK_BLOCK
    if blocks == 0:
        return -np.inf
    return float(row_medians(values[: blocks * PEAK_BLOCK].reshape(blocks, PEAK_BLOCK)).max())


def _layer_levels(rows: np.ndarray) -> np.ndarray:
    """Each layer's median gradient norm over ``rows``, counting only the steps where it had one (a zero or a missing
    gradient says nothing about its level)."""
    return column_medians(np.where(rows > 0, rows, np.nan))
