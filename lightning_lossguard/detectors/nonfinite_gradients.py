"""``nonfinite_gradients``: NaN/Inf gradients that a finite loss does not explain.

Under a 16-bit GradScaler, a step with non-finite gradients is skipped and the scale halved: that is
normal, especially early. Then only persistent skips or a collapsed scale are reported.

Without a scaler, a finite loss can still have blown up: when the loss at the first step with non-finite gradients
(or the last finite one before it) is ``blowup_factor`` times the first batch's or more, in magnitude, the gradients
overflowed because the whole model did, and the remedies start with the learning rate (the loss's sign, when it fell
towards -inf), not with the named parameter. In the corpus, four of the learning rates 1000x too high were first
named here, their gradients overflowing at steps 1-5 under losses 2.5e24x to 3.2e28x their first batch's, and answered
"look at the named parameter" first.

A backward carries a NaN/Inf from where it starts towards the input, so it reaches every layer only when it starts at
the loss: when every parameter that got a gradient has a non-finite one, across two layers or more, the loss's backward
comes first (sqrt or log at 0, or a value the forward leaves out: ``torch.where`` over a missing target still gives
``0 * NaN`` in the backward), the named parameter second. When the layer nearest the loss has a parameter with a finite
gradient beside one with a non-finite gradient (its bias beside its weight: ``dL/db`` is what the loss sent back,
``dL/dW`` multiplies it by the layer's input), the NaN came in with the values the layer was fed and the loss left out
(the corpus' margin classifier, whose ``multi_margin_loss`` ignores a NaN batch's scores): the batch comes first.

A backward that stops at a ``detach`` (a GAN's discriminator step on generated images) leaves the layers below it with
the gradients they had: when the non-finite gradients fill every parameter of the layers from the one nearest the loss
down, across two layers or more, and only parameters below them are finite, the NaN/Inf entered at the loss just the
same. When that step's loss was not recorded (manual optimization whose ``training_step`` returns nothing), a batch
with a NaN that made the loss NaN is as likely as the loss's backward, and bad data the commoner cause: the batch
comes first, the loss's backward third (the corpus' manual DCGAN with a NaN batch was told "look at the named
parameter" first, its discriminator's 7 gradients NaN beside its generator's 9 finite ones).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Collection, Sequence

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.nonfinite_loss import BlowUp
from lightning_lossguard.diagnosis import Diagnosis, first_few


@dataclasses.dataclass(frozen=True)
class NonfiniteGradientsThresholds(Thresholds):
    max_consecutive_skips: int = threshold(
        16, "With a GradScaler: consecutive skipped (non-finite) steps tolerated before the diagnosis."
    )
    max_skip_fraction: float = threshold(
        0.25, "With a GradScaler: share of skipped steps over the last skip_window steps tolerated."
    )
    skip_window: int = threshold(200, "With a GradScaler: steps over which the skip share is measured.")
    min_scale: float = threshold(
        1.0, "With a GradScaler: a loss scale below this means gradients overflow even unscaled."
    )
    blowup_factor: float = threshold(
        1e3,
        "Without a scaler: a loss at least this many times the first batch's (in magnitude) when the gradients went "
        "non-finite means the model blew up first: the remedies then start with the learning rate.",
        low=1,
    )


class NonfiniteGradients(Detector[NonfiniteGradientsThresholds]):
    """Names the parameters with non-finite gradients, starting nearest the loss (where NaN enters backward)."""

    code = "nonfinite_gradients"
    Thresholds = NonfiniteGradientsThresholds

    def __init__(self, thresholds: NonfiniteGradientsThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.streak = 0
        self.longest_streak = 0
        self.recent: deque[bool] = deque(maxlen=int(self.thresholds.skip_window))
        self.skipped = 0
        self.first_step: int | None = None
        self.first_loss = math.nan  # the run's first finite loss: the model before any update
        self.last_loss = (-1, math.nan)  # (step, value) of the latest finite loss of the windows so far
        self.loss_before = (-1, math.nan)  # ... of the finite loss at first_step or the last one before it

    def update(
        self,
        steps: Sequence[int],
        param_norms: np.ndarray,
        names: Sequence[str],
        depth: Sequence[int],
        scaler_active: bool = False,
        scale: float | None = None,
        nonfinite_loss_steps: Collection[int] = (),
        loss_steps: Sequence[int] | None = None,
        losses: Sequence[float] | np.ndarray | None = None,
    ) -> list[Diagnosis]:
        """Judge one window of per-parameter norms (rows: optimizer steps; -1: no gradient).

        Args:
            depth: per parameter, its layer's position from the input side (higher = nearer the loss).
            scaler_active: a 16-bit GradScaler skips non-finite steps.
            scale: the scaler's loss scale at the end of the window, when known.
            nonfinite_loss_steps: steps whose loss was non-finite (reported as ``nonfinite_loss`` instead).
            loss_steps: the steps whose loss was recorded (None: all of them). Of another step the message does
                not say the loss was finite: it was not seen (manual optimization whose training_step returns
                nothing).
            losses: the loss of each of ``loss_steps``' batches, when known (to tell a model that blew up).
        """
        t = self.thresholds
        found: tuple[int, np.ndarray, np.ndarray] | None = None  # the first bad row: step, non-finite, graded
        rows_bad = (~np.isfinite(param_norms)).any(axis=1) if len(param_norms) else np.zeros(0, bool)
        if not rows_bad.any():  # the usual window: every gradient finite, no row to look at one by one
            self.recent.extend([False] * len(rows_bad))
            self.streak = 0 if len(rows_bad) else self.streak
            rows_bad = rows_bad[:0]
        for step, row, row_bad in zip(steps, param_norms, rows_bad):
            is_bad = bool(row_bad) and int(step) not in nonfinite_loss_steps
            self.recent.append(is_bad)
            if is_bad:
                self.streak += 1
                self.skipped += 1
                self.longest_streak = max(self.longest_streak, self.streak)
                if self.first_step is None:
                    self.first_step = int(step)
                    self.loss_before = self._loss_at(int(step), loss_steps, losses)
                if found is None:
                    found = (int(step), ~np.isfinite(row), row != -1)
            else:
                self.streak = 0
        self._remember_losses(loss_steps, losses)
        if found is None and not (scaler_active and scale is not None and scale < t.min_scale and self.skipped):
            return []
        none = np.zeros(len(names), bool)
        step_bad, mask, graded = found if found is not None else (int(steps[-1]) if steps else 0, none, none)
        culprits = [int(i) for i in np.flatnonzero(mask)]
        culprits.sort(key=lambda i: -depth[i])
        named = first_few([names[i] for i in culprits], 3)
        share = sum(self.recent) / max(len(self.recent), 1)
        evidence: dict[str, float] = {
            "first_step": self.first_step if self.first_step is not None else step_bad,
            "nonfinite_params": len(culprits),
            "watched_params": len(names),
        }
        subject = names[culprits[0]] if culprits else ""
        decided = int(steps[-1]) if steps else step_bad
        if not scaler_active:
            seen = loss_steps is None or step_bad in loss_steps
            loss = "while the loss was finite" if seen else "(its loss was not recorded: finite or not is unknown)"
            message = (
                f"Gradients became NaN/Inf at step {step_bad} {loss}, in {len(culprits)} of "
                f"{len(names)} parameters, starting at {named or 'an unnamed parameter'} (nearest the loss)."
            )
            why, remedies = self._where_it_started(culprits, mask, graded, depth, names, evidence, seen)
            return [self.diagnosis(decided, message + why, evidence, subject=subject, remedies=remedies)]
        evidence.update(
            {
                "consecutive_skips": self.longest_streak,
                "skip_fraction": share,
                "loss_scale": scale if scale is not None else math.nan,
            }
        )
        collapsed = scale is not None and scale < t.min_scale
        persistent = self.longest_streak >= t.max_consecutive_skips
        frequent = len(self.recent) >= self.recent.maxlen // 2 and share > t.max_skip_fraction  # type: ignore[operator]
        if not (collapsed or persistent or frequent):
            return []  # ordinary GradScaler skips
        why = (
            f"the loss scale collapsed to {scale:.3g}"
            if collapsed
            else f"{self.longest_streak} consecutive steps were skipped"
            if persistent
            else f"{share:.0%} of the last {len(self.recent)} steps were skipped"
        )
        message = (
            f"The GradScaler keeps finding NaN/Inf gradients: {why}, first at step {evidence['first_step']:.0f}"
            + (f", starting at {named}" if named else "")
            + "."
        )
        return [self.diagnosis(decided, message, evidence, subject=subject)]

    def _where_it_started(
        self,
        culprits: list[int],
        mask: np.ndarray,
        graded: np.ndarray,
        depth: Sequence[int],
        names: Sequence[str],
        evidence: dict[str, float],
        loss_seen: bool = True,
    ) -> tuple[str, list[str]]:
        """Without a scaler: what the evidence says about where the NaN/Inf started (a sentence for the message, or
        none), and the catalog's remedies in that order (see the module). Adds the blow-up's numbers to ``evidence``.
        ``loss_seen``: the loss of that step was recorded (and finite)."""
        named_first, backward, batch, lower_rate, *rest = code_info(self.code).remedies
        loss_step, loss_then = self.loss_before
        blow_up = BlowUp.of(loss_then, self.first_loss, self.thresholds.blowup_factor)
        if blow_up is not None:
            evidence.update({"loss_then": loss_then, "loss_then_step": loss_step, "first_loss": self.first_loss})
            return (
                f" The loss {blow_up.how} before them: {loss_then:.4g} at step {loss_step}, {blow_up.growth:.3g}x the "
                f"{self.first_loss:.4g} of the first batch ({blow_up.why}): the whole model overflowed, not one "
                "parameter.",
                blow_up.first([lower_rate, named_first, backward, batch, *rest]),
            )
        layers = {depth[i] for i in culprits}
        below = self._below_a_nan_top(mask, graded, depth)
        if below is not None and len(layers) >= 2:
            # The loss first when its value was seen (finite: the backward made the NaN); unseen, a NaN batch that
            # made the loss NaN is as likely, and data is the commoner cause.
            first, third = (backward, batch) if loss_seen else (batch, backward)
            how = (
                f"Every parameter that got a gradient got a non-finite one, across its {len(layers)} layers: the "
                "NaN/Inf entered at the loss, which every gradient passes through, not in one layer."
                if below == 0
                else f"Every parameter of the {len(layers)} layers nearest the loss got a non-finite gradient, while "
                f"the {below} below them kept finite ones (stale, or another optimizer's): the NaN/Inf entered at the "
                "loss and went as far as this backward did, not in one layer."
            )
            return f" {how}", [first, named_first, third, lower_rate, *rest]
        if (fed := self._fed_a_nan(mask, graded, depth)) is not None:
            return (
                f" Beside them, {names[fed]} got a finite gradient: the gradient the loss sent back to its layer was "
                "finite, so the NaN/Inf most likely came with the values the layer was fed (the batch, or an "
                "activation before it), which the loss left out (a margin or masked loss), or from an op on the weight "
                "itself.",
                [batch, named_first, backward, lower_rate, *rest],
            )
        return "", [named_first, backward, batch, lower_rate, *rest]

    @staticmethod
    def _below_a_nan_top(mask: np.ndarray, graded: np.ndarray, depth: Sequence[int]) -> int | None:
        """When the non-finite gradients fill every parameter with a gradient in a block of layers from the one nearest
        the loss down: how many parameters with a finite gradient lie below it (0: none, every gradient non-finite);
        None when they are no such block. A NaN that a backward carries from the loss reaches every layer it passes;
        a backward that stops at a ``detach`` (a GAN's discriminator step) leaves the layers below with the gradients
        they had."""
        with_grad = [int(i) for i in np.flatnonzero(graded)]
        if not mask.any() or not with_grad:
            return None
        lowest_bad = min(depth[int(i)] for i in np.flatnonzero(mask))
        if not all(mask[i] for i in with_grad if depth[i] >= lowest_bad):
            return None
        return sum(1 for i in with_grad if depth[i] < lowest_bad)

    @staticmethod
    def _fed_a_nan(mask: np.ndarray, graded: np.ndarray, depth: Sequence[int]) -> int | None:
        """A parameter with a finite gradient in the layer nearest the loss beside one with a non-finite gradient
        (None when there is none). In ``y = W a + b``, ``dL/db`` is the gradient the loss sent back and ``dL/dW``
        multiplies it by the input ``a``: a finite one beside a NaN one means the NaN came in with ``a``."""
        with_grad = [int(i) for i in np.flatnonzero(graded)]
        if not with_grad:
            return None
        top = max(depth[i] for i in with_grad)
        layer = [i for i in with_grad if depth[i] == top]
        finite = [i for i in layer if not mask[i]]
        return finite[0] if finite and len(finite) < len(layer) else None

    def _loss_at(
        self, step: int, loss_steps: Sequence[int] | None, losses: Sequence[float] | np.ndarray | None
    ) -> tuple[int, float]:
        """(step, value) of the finite loss of ``step``'s batch, or of the last finite one before it."""
        values, at = self._finite(loss_steps, losses)
        before = np.flatnonzero(at <= step)
        return (int(at[before[-1]]), float(values[before[-1]])) if before.size else self.last_loss

    def _remember_losses(self, loss_steps: Sequence[int] | None, losses: Sequence[float] | np.ndarray | None) -> None:
        values, at = self._finite(loss_steps, losses)
        if values.size:
            self.first_loss = float(values[0]) if math.isnan(self.first_loss) else self.first_loss
            self.last_loss = (int(at[-1]), float(values[-1]))

    @staticmethod
    def _finite(
        loss_steps: Sequence[int] | None, losses: Sequence[float] | np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The finite losses and their steps (none when the losses were not handed over)."""
        if loss_steps is None or losses is None:
            return np.zeros(0), np.zeros(0, np.int64)
        values = np.asarray(losses, dtype=np.float64)
        keep = np.isfinite(values)
        return values[keep], np.asarray(loss_steps, dtype=np.int64)[keep]
