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
already after the collapse. A collapse from the first window that reached the layers nearest the loss as well was
lost at the output, not on the way down a deep stack: what the loss hands the model went flat (a regression head with
an ``exp`` driven towards 0, batches of one: every layer fell 1e7-fold and more, the head too, while the loss stayed
at 1.65). It is told with the output activation first. The first window is counted in optimizer steps, so gradients
sampled on a stride do not stretch it into the run.
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
        output_layers: Sequence[int] = (),
    ) -> list[Diagnosis]:
        """Judge one window.

        Args:
            layer_norms: ``[steps, layers]`` per-layer norms.
            paths: ``(first layer, last layer, comparable layers on the path)`` for each gradient path: the
                depth rule only compares the two ends of one path (one optimizer, one chain of ops).
            output_layers: the layers nearest the loss (indices into ``layers``): a collapse that reaches them
                started at the output, not on the way down the stack.
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
        return self._depth(decided, layers, paths) or self._collapse(decided, layers, output_layers)

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

    def _collapse(self, decided: int, layers: Sequence[str], output_layers: Sequence[int]) -> list[Diagnosis]:
        """The global norm fell by ``collapse_ratio`` from a reference while the loss stayed within ``loss_flat`` of
        the reference's loss. Two references: the first optimizer step, the model before any update (a learning rate
        far too high can saturate it on its first update, and then every window, the first included, is after the
        collapse: a capsule network's norm fell 1e4-fold there and its loss jumped 4.8x and stayed), then the first
        window's levels. A collapse from the first window that reached the layers nearest the loss as well started at
        the output: what the loss hands the model went flat (an exp on a regression head driven towards 0)."""
        t = self.thresholds
        if len(self.early_losses) < t.min_steps or len(self.losses) < t.min_steps:
            return []
        now, loss_now = median(self.norms), median(self.losses)
        references = [(self.early_norms[0], self.early_losses[0], True)]
        if self.early_over and self._early_measured(len(self.early_norms)):
            references.append((median(self._on_every_step(self.early_norms)), median(self.early_losses), False))
        for norm, loss, before_update in references:
            if norm > 0 and now / norm < t.collapse_ratio and loss > 0 and loss_now >= t.loss_flat * loss:
                collapse = Collapse(norm, now, loss, loss_now)
                if before_update:
                    return [self._collapsed_from_start(decided, collapse)]
                return [self._collapsed(decided, collapse, self._output_collapse(layers, output_layers))]
        return []  # no collapse, or the loss fell with it: small gradients of a converging run

    def _output_collapse(self, layers: Sequence[str], output_layers: Sequence[int]) -> tuple[str, float, float] | None:
        """(a layer nearest the loss, its first-window level, its level now) when every such layer that had a gradient
        in the first window has lost it by ``collapse_ratio`` as well; None otherwise, or when it cannot be told."""
        t = self.thresholds
        if not output_layers or not self.layer_rows or not self.early_rows:
            return None
        early_rows, rows = np.asarray(self._on_every_step(self.early_rows)), np.asarray(self.layer_rows)
        if early_rows.ndim != 2 or rows.ndim != 2 or not early_rows.shape[1] == rows.shape[1] == len(layers):
            return None
        early, latest = _layer_levels(early_rows), _layer_levels(rows)
        found: tuple[str, float, float] | None = None
        for i in output_layers:
            if not (0 <= i < len(layers) and np.isfinite(early[i]) and early[i] > 0):
                continue
            level = float(latest[i]) if np.isfinite(latest[i]) else 0.0  # no gradient at all lately: it fell to 0
            if level / early[i] >= t.collapse_ratio:
                return None
            if found is None or early[i] > found[1]:
                found = (layers[i], float(early[i]), level)
        return found

    def _collapsed(self, decided: int, collapse: Collapse, at_output: tuple[str, float, float] | None) -> Diagnosis:
        message = (
            f"The gradient norm collapsed from {collapse.norm:.3g} to {collapse.norm_now:.3g}{collapse.smaller} while "
            f"the loss barely moved ({collapse.loss:.4g} -> {collapse.loss_now:.4g})."
        )
        evidence: dict[str, float] = {
            "early_grad_norm": collapse.norm,
            "grad_norm": collapse.norm_now,
            "early_loss": collapse.loss,
            "loss": collapse.loss_now,
        }
        if at_output is None:
            return self.diagnosis(decided, message, evidence)
        layer, early, now = at_output
        message += (
            f" It is lost at the output: the layer nearest the loss, {layer}, fell from {early:.3g} to {now:.3g} too. "
            "The loss hands the model almost no gradient (an exp, sigmoid, tanh or clamp on the output driven into "
            "its flat region); this is not a deep stack losing it on the way down."
        )
        evidence.update(early_output_norm=early, output_norm=now)
        return self.diagnosis(decided, message, evidence, subject=layer, remedies=list(OUTPUT_COLLAPSE_REMEDIES))

    def _collapsed_from_start(self, decided: int, collapse: Collapse) -> Diagnosis:
        message = (
            f"The gradient norm collapsed from {collapse.norm:.3g} before any update to {collapse.norm_now:.3g}"
            f"{collapse.smaller} while the loss is {collapse.loss_now:.4g} against {collapse.loss:.4g} before any "
            "update: the first updates left the model in a flat region it has not left (saturated or dead units), "
            "most likely a learning rate far too high for the start."
        )
        evidence = {
            "first_grad_norm": collapse.norm,
            "grad_norm": collapse.norm_now,
            "first_loss": collapse.loss,
            "loss": collapse.loss_now,
        }
        remedies = [
            "Lower the learning rate (try 10x lower) and add a warm-up.",
            "Clip gradients: Trainer(gradient_clip_val=1.0).",
            *code_info(self.code).remedies[:1],
        ]
        return self.diagnosis(decided, message, evidence, remedies=remedies)


@dataclasses.dataclass(frozen=True)
class Collapse:
    """The global gradient norm and the loss at the reference and now."""

    norm: float
    norm_now: float
    loss: float
    loss_now: float

    @property
    def smaller(self) -> str:
        """' (Nx smaller)', or nothing when the norm fell to exactly 0 (no factor to quote)."""
        return f" ({self.norm / self.norm_now:.3g}x smaller)" if self.norm_now > 0 else ""


OUTPUT_COLLAPSE_REMEDIES = (
    "Check the output activation: hand the loss the raw output and let the loss apply the function (logits to "
    "CrossEntropyLoss/BCEWithLogitsLoss, log-rates to PoissonNLLLoss(log_input=True)), and drop an exp, sigmoid or "
    "clamp on a regression head whose targets lie outside its range.",
    "Lower the learning rate: a step that drives the output deep into its flat region leaves it there.",
    "Smooth the loss: Huber/SmoothL1 instead of a hinge or clamp with a flat region.",
)
"""A collapse that started at the output: what to check, most likely first."""


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
