"""``val_loss_rising``: the validation loss rises by a persistent margin after a low start or a minimum.

The evidence decides which cause to name first (seed 001):
- training loss falling while validation rises: overfitting;
- validation rising from the very first evaluation, training not falling: forgetting, or a fine-tuning
  learning rate that is too high;
- training loss rising too: unstable optimisation;
- otherwise: a gap between the training and validation data;
- a negative training loss that keeps falling while a positive validation loss rises: a negated loss.

The rise must be large (``min_rise``) and beyond the validation loss's own evaluation-to-evaluation noise (``z``
robust standard deviations of its successive differences, plus sqrt(2 ln m) noise when the best is the lowest of m
evaluations within ``z`` noise of it: the minimum of a noisy plateau is low by chance, and a run validated 40 times
on its plateau warned "overfitting" from it in 4 of 4 seeds), on ``persist`` evaluations in a row, and must not be
undoing itself: a latest evaluation that came back more than ``recovered_share`` of the way from the peak to the
minimum is a transient (a validation loss near zero moves several-fold on a handful of samples), judged again at the
next evaluation.
From ``2 * level_evals`` evaluations on, the level must have risen too: the mean of the latest ``level_evals``
evaluations must be above the lowest mean of as many in a row by ``z`` noises of such a difference plus the lowest
mean's luck, with the noise measured around any steady slope over lags of up to ``level_evals`` evaluations (a model
drifting on its plateau stays high for several evaluations in a row, which neighbouring evaluations do not show).
Simulated plateaus validated 30 and 60 times warned, on single evaluations alone, in 12% and 21% of runs with 5%
noise per evaluation and in 21% and 27% with 10%; with the level, in 0.6%/1.0% and 2.6%/4.2%. Plateaus whose
evaluations keep half of the last one's deviation, 41%/81% and 54%/82% -> 7%/34% and 14%/39%: that wander stays the
hard case. Simulated rises were caught as often (98.8-100% of runs), at most 2 evaluations later.
That test is itself made at every evaluation, and over dozens of them one latest mean comes out high by chance: from
``6 * level_evals`` evaluations on, the margin also holds the luck of the highest mean since the lowest (before, the
evaluations being judged weigh too much in the noise measured, and a jump would widen its own margin). In a second
simulation (1,000 runs a cell; a decline, then a plateau), drifting plateaus with 5% noise validated 30 and 60 times
warned in 6.2%/29.2% -> 3.9%/10.3% of runs, with 10% in 12.0%/36.3% -> 9.4%/16.3%; rises of 2-10% an evaluation
were caught as often (92.6-100%), 0-2 evaluations later (3% an evaluation under 5% noise: 9 evaluations after it
began instead of 7); jumps (x1.3 to x10) after 10-50 evaluations 2-3 evaluations after them, as before.
Validated every step or few, the validation loss is smooth from one evaluation to the next and wanders over tens of
them: means of four neighbours move together, and their noise taken from lags of four or fewer was a third of how far
the level wanders (a classifier under Adam at 1e-2, validated every step for 400 steps, went up and down 15-50% over
20-40 steps and read "overfitting" on 4 of 4 seeds, every third step on 4 of 4; one seed's slow drift above a lucky
minimum, not reported validated every tenth step, is not reported now either). So the level's noise is also measured
on the means themselves, over lags of up to ``wander_share`` of the evaluations (from 30 evaluations on), from their
negative second differences only: the run's first fast fall is convex and would pass for noise at long lags. Simulated
(100 runs a cell; a fall to a level, then 5% noise keeping 70-97% of its last deviation): plateaus validated 120 and
250 times warned in 18-61% and 79-98% of runs before, 2-14% and 5-13% after; white noise 0% either way. Climbs of 2%
of the level an evaluation, from the 125th of 250: caught in every run, 11 evaluations after they began with white
noise (10 before), 8-14 with wandering noise (5-6 before, when the same wander alone warned in 79-98%); of 0.5% an
evaluation, 24-49 (7-37 before), caught in 72-100% of runs validated 120 times with wandering noise (100% before). A
short wandering plateau pays too: 50 evaluations with 5% noise keeping half of its last deviation, then a climb of 5%
or 10% of the level an evaluation, is told 8 and 5 evaluations in, not 4 and 3. Densely validated runs of other models
(not used to set ``wander_share``: SGD with momentum, a regression with a cosine schedule, 250-300 evaluations each)
warned in 5 of 6 runs before and 2 of 6 after (both early, at their 17th and 42nd evaluations, before the wander shows
at the lags that can be measured); runs that overfit for real (64 training samples, validated every 2-25 steps) were
caught at the same step as before in 10 of 10.
Until the noise can be measured (``noise_evals`` evaluations), a rise under ``sure_rise`` is reported as info, not
a warning: the minimum of a few noisy evaluations is low by chance. Measured: a converged regression validated once
an epoch, whose validation loss wobbles 5-12% from epoch to epoch, read "overfitting" at its third or fourth
evaluation in 3 of 12 runs (+11% to +19%), and a simulated flat series with 8% noise in 9-27% of runs of 3-5
evaluations (1.5-8% with ``sure_rise``). It becomes a warning at a later evaluation when the rise is beyond the
measured noise, or reaches ``sure_rise`` while every evaluation since the minimum is at least the one before: one
that fell back is what noise looks like (a forecaster validated on free-running forecasts went 0.25 -> 0.36 -> 0.31,
+25%, then on to 0.22). Simulated, a plateau with 15-25% noise validated 4-5 times: warned in 3-27% of runs, 2-15%
with that condition; a rise of 20% an evaluation at 8% noise is caught by the fifth evaluation in 88% of runs
instead of 98%, and by the eighth in 99%. A negated training loss is sure sooner: when the validation loss, at its
minimum and now, is the training loss's opposite to within ``mirror`` of its size, the two measure one quantity with
opposite signs, which noise does not do (a causal Transformer, its tied embeddings at PyTorch's default scale, whose
loss was negated went 74.6 -> 92 in four evaluations, +23%, while its training loss went -71.5 -> -89.5, and was an
info).
The training loss it is compared with is the level of the last 50 batches before the evaluation.

A reported rise that a later evaluation undoes (one at or below the minimum it rose from) gets a note at the end of
the fit saying it was a transient, with that evaluation; the warning itself stands as it was reported.

A run continued by a second ``trainer.fit`` without ``ckpt_path`` starts over: each such fit's evaluations are
compared among themselves. Its new optimizer bumps the loss for an evaluation or two (a fresh Adam's first steps
are large), and a new stage often validates on new data, whose level says nothing about the old minimum (a
resume from a checkpoint continues the curve).

A run that keeps its best model handles overfitting itself: when a checkpoint keeps the model at the metric's lowest
(:class:`ModelSelection`, read from the run's callbacks), a rise told as overfitting from a minimum after the first
evaluation is info, not a warning, and says so (with the early stopping that ends the run, if any). Runs of a small
classifier under ``EarlyStopping(patience=10)`` and a best checkpoint warned in 5 of 8, and in 8 of 8 with patience 20:
the rise is what the patience waits through. Early stopping alone still warns: it ends the run with the weights of
its last evaluation, past the best, and the first remedy is then the checkpoint. A checkpoint that keeps another
metric's best (the most accurate epoch, ``mode="max"``) selects on that metric: still a warning (the accuracy's best
epoch may be far past the loss's), whose first remedy is to check that epoch against the loss's best, not to add the
checkpoint the run would be told to keep without it. A rise from the first evaluation, or
with a flat or rising training loss, stays a warning whatever is kept: the kept model is the one training did not
improve.

A run that early stopping ends although its validation loss never went below its first evaluation, and climbed at
every evaluation, is judged at the stop without ``min_rise``: a negative training loss that fell is a negated loss, a
training loss that rose by ``train_change`` unstable optimisation (:mod:`lightning_lossguard.detectors.stopped_early`).
A stop on an accuracy that fell at every evaluation is judged the same way, but never as a negated loss: an accuracy
has no sign to compare with the training loss's.

Not judged under ``Trainer(overfit_batches=...)``: that sanity check memorises a few batches on purpose, so its
validation loss rises by design (the report notes it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import convex_curvature_noise, curvature_noise, step_noise
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_change


@dataclasses.dataclass(frozen=True)
class ValLossRisingThresholds(Thresholds):
    min_rise: float = threshold(0.10, "Relative rise above the best validation loss that counts (0.10 = 10%).")
    persist: int = threshold(2, "Consecutive latest evaluations that must all be min_rise above the best.", low=1)
    z: float = threshold(
        2.0, "... and this many robust standard deviations of the evaluation-to-evaluation noise above it.", low=0
    )
    recovered_share: float = threshold(
        0.5,
        "... and not recovering: the latest evaluation came back at most this share of the way from the peak "
        "since the minimum to the minimum.",
        low=0,
        high=1,
    )
    min_evals: int = threshold(3, "Evaluations needed before judging.", low=2)
    noise_evals: int = threshold(6, "Evaluations needed before the noise is estimated (until then: min_rise).", low=3)
    level_evals: int = threshold(
        4,
        "From twice this many evaluations on, the mean of the latest this many must also be above the lowest mean "
        "of this many in a row, beyond their noise and luck (1: off).",
        low=1,
    )
    wander_share: float = threshold(
        0.15,
        "The level's noise is also measured over lags of up to this share of the evaluations: evaluations close "
        "together in training time move together, and only longer lags show how far the level wanders (0: off).",
        high=0.5,
    )
    sure_rise: float = threshold(
        0.25,
        "Until the noise is estimated, a rise under this (0.25 = 25%), or one whose latest evaluation fell back, is "
        "info, not a warning: the minimum of a few noisy evaluations is low by chance.",
        low=0,
    )
    mirror: float = threshold(
        0.2,
        "A negated training loss: a validation loss within this fraction of its own size of the training loss's "
        "opposite, at its minimum and now, is sure before the noise is estimated (one quantity, two signs).",
        low=0,
        high=1,
    )
    train_change: float = threshold(
        0.05,
        "Relative change of the training loss that counts as falling or rising (differential diagnosis).",
    )


@dataclasses.dataclass(frozen=True)
class ModelSelection:
    """How the run keeps its best model on one validation metric, as plain data.

    Attributes:
        best_kept: a checkpoint keeps the model at the metric's lowest (``ModelCheckpoint(monitor=..., mode="min")``).
        stops_after: the evaluations without a new lowest after which early stopping ends the run (None: no early
            stopping on the metric).
        kept_instead: where no checkpoint keeps this metric's lowest, the metric whose best one keeps instead
            (``ModelCheckpoint(monitor="val_acc", mode="max")``); "" when none does.
    """

    best_kept: bool = False
    stops_after: int | None = None
    kept_instead: str = ""


class ValLossRising(Detector[ValLossRisingThresholds]):
    """Tracks one validation metric across evaluations and explains a persistent rise."""

    code = "val_loss_rising"
    Thresholds = ValLossRisingThresholds
    derived = ("_rows", "_count", "_best_index")  # rebuilt from the evaluations' rows on load

    def __init__(self, thresholds: ValLossRisingThresholds | None = None, metric: str = "val_loss") -> None:
        super().__init__(thresholds)
        self.metric = metric
        # One row per evaluation, [step, epoch, val, train (nan when unknown)], in an array grown by doubling, and
        # the index of the (first) lowest: judging an evaluation goes over the history in numpy, never in Python
        # (in Python loops, a run validated 10,000 times paid ~2.5 ms an evaluation), and one costs 32 bytes.
        self._rows = np.empty((64, 4))
        self._count = 0
        self._best_index = 0

    @property
    def evals(self) -> np.ndarray:
        """The evaluations so far, one row each: [step, epoch, val, train (nan when unknown)] (a view)."""
        return self._rows[: self._count]

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_evals)
        return None if len(self.evals) >= need else f"needs {need} validation runs, saw {len(self.evals)}"

    def restart(self) -> None:
        """A new ``trainer.fit`` continued the run without a checkpoint: the curve starts over (see the module)."""
        self._count = self._best_index = 0

    def update(
        self,
        step: int,
        epoch: int,
        value: float,
        train_loss: float = math.nan,
        selection: ModelSelection | None = None,
    ) -> list[Diagnosis]:
        """Add one evaluation. ``train_loss``: a robust recent training-loss level at that time; ``selection``: how the
        run keeps its best model on this metric (None: unknown, judged as if nothing kept it)."""
        if not math.isfinite(value):
            return []  # a non-finite validation loss follows a non-finite model; other codes report it
        evals = self._append(step, epoch, value, train_loss)
        t = self.thresholds
        if len(evals) < t.min_evals:
            return []
        best_index = self._best_index
        best_step, best_epoch, best, train_at_best = evals[best_index].tolist()
        values = evals[:, 2]
        scale = abs(best) if best != 0 else 1.0
        margin = t.min_rise * scale
        latest = values[-int(t.persist) :]
        if len(evals) - 1 - best_index < t.persist or not (latest >= best + margin).all():
            return []  # the noise only widens the margin: most evaluations end here, before it is measured
        # The evaluation-to-evaluation noise, once there are enough evaluations to tell it from the trend.
        noise = step_noise(values) if len(values) >= t.noise_evals else math.nan
        if math.isfinite(noise):
            margin = max(margin, t.z * noise + self._luck(values, best))
            if not (latest >= best + margin).all():
                return []
        peak = float(values[best_index:].max())
        if peak - value > t.recovered_share * (peak - best):
            return []  # coming back down: a transient so far
        if t.level_evals > 1 and len(values) >= 2 * t.level_evals and not self._level_rose(values):
            return []  # two high evaluations, but the level has not left the noise yet
        current, train_now = value, float(train_loss)
        rise = (current - best) / scale
        train_delta = _relative_change(train_at_best, train_now)
        cause, remedies = self._cause(best_index, train_delta)
        negated = train_now < 0 < best and train_now < train_at_best
        mirrored = negated and _mirrors(best, train_at_best, t.mirror) and _mirrors(current, train_now, t.mirror)
        if negated:
            # The training loss is negative and falls while the (positive) validation loss rises: they measure
            # opposite things.
            cause = (
                "the training loss is negative and keeps falling while the validation loss rises: the training "
                "loss looks negated (a score maximised by mistake, or a sign flipped in training_step only)"
            )
            remedies = [
                "Check the sign of the loss returned by training_step: minimise a loss, maximise a score "
                "(return -score).",
                *remedies[:1],
            ]
        keep = f"the best checkpoint is from epoch {best_epoch:.0f} (step {best_step:.0f}, {self.metric}={best:.4g})"
        overfitting = train_delta <= -t.train_change and best_index > 0
        handled = False
        if selection is not None and overfitting and not train_now < 0 < best:
            keep, remedies, handled = self._selected(selection, keep, remedies, best_epoch)
        train_text = _train_change(train_at_best, train_now)
        # Before the noise is measured, a latest evaluation below the one before it is what noise looks like.
        after_best = values[best_index + 1 :].tolist()
        climbing = all(later >= earlier for earlier, later in itertools.pairwise(after_best))
        sure = math.isfinite(noise) or ((rise >= t.sure_rise or mirrored) and climbing)
        unsure = "" if sure else f" (in {len(evals)} evaluations, too few to tell it from their noise)"
        by = format_change(best, current)  # empty from a minimum of 0 or below
        message = (
            f"{self.metric} rose {by + ' ' if by else ''}from its minimum {best:.4g} to {current:.4g}{unsure}"
            f"{train_text}: {cause}; {keep}."
        )
        evidence = {
            "best_val_loss": best,
            "best_step": best_step,
            "best_epoch": best_epoch,
            "current_val_loss": current,
            "rise_fraction": rise,
            "train_change_fraction": train_delta,
            "evaluations": len(evals),
            "noise": noise,
        }
        if selection is not None:
            evidence["best_kept"] = float(selection.best_kept)
            evidence["early_stopping_patience"] = float(selection.stops_after or 0)
        found = self.diagnosis(step, message, evidence, subject=self.metric, remedies=remedies)
        return [found if sure and not handled else dataclasses.replace(found, severity=Severity.INFO)]

    def _selected(
        self, selection: ModelSelection, keep: str, remedies: list[str], best_epoch: float
    ) -> tuple[str, list[str], bool]:
        """An overfitting rise told with how the run keeps its best model: the message's checkpoint clause, the
        remedies, and whether the run handles it (a checkpoint keeps the best)."""
        stops = selection.stops_after
        without_checkpoint_remedy = [r for r in remedies if r != self._checkpoint_remedy()]
        if selection.best_kept:
            stopping = (
                f", and its early stopping ends the run after {stops} evaluations without a new minimum"
                if stops
                else ""
            )
            keep = keep.replace("the best checkpoint is", "the run's checkpoint keeps the best,", 1) + stopping
            sooner = [] if stops else [f"Stop sooner: EarlyStopping(monitor='{self.metric}', mode='min', patience=3)."]
            return f"{keep}: handled", [*without_checkpoint_remedy, *sooner], True
        if selection.kept_instead:
            # The run selects its model on another metric: whether that epoch is near this one's best decides.
            keep += f"; the run's checkpoint keeps the best {selection.kept_instead} instead"
            first = (
                f"Check that the checkpoint of the best {selection.kept_instead} is near epoch {best_epoch:.0f}, or "
                f"keep the lowest {self.metric} too: ModelCheckpoint(monitor='{self.metric}', mode='min')."
            )
            return keep, [first, *without_checkpoint_remedy], False
        if stops:
            keep += (
                f"; early stopping ends the run after {stops} evaluations without a new minimum, with the weights of "
                "the last one: no checkpoint keeps the best"
            )
            first = (
                f"Keep the best model: ModelCheckpoint(monitor='{self.metric}', mode='min'), then "
                "trainer.test(ckpt_path='best') (early stopping alone keeps the last weights)."
            )
            return keep, [first, *without_checkpoint_remedy], False
        return keep, remedies, False

    def state_dict(self) -> dict[str, Any]:
        """The evaluations as rows of four numbers, the format of earlier versions: a checkpoint written by either
        loads in the other (the array, its count and the lowest's index are rebuilt from them)."""
        return {**super().state_dict(), "evals": self.evals.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "evals"})
        self._count = self._best_index = 0
        for step, epoch, value, train_loss in state.get("evals", []):
            self._append(step, epoch, value, train_loss)

    def _append(self, step: int, epoch: int, value: float, train_loss: float) -> np.ndarray:
        """Add a finite evaluation (and update the lowest's index); the evaluations so far."""
        count = self._count
        if count == len(self._rows):
            self._rows = np.concatenate([self._rows, np.empty_like(self._rows)])
        self._rows[count] = (step, epoch, value, train_loss)
        if count and value < self._rows[self._best_index, 2]:
            self._best_index = count
        self._count += 1
        return self.evals

    def undone_by(self, diagnosis: Diagnosis) -> str | None:
        """Hindsight on a rise this detector reported: a later evaluation at or below the minimum it rose from undid
        it, so it was a transient that the evaluations then could not tell from a lasting rise. A note for the end of
        the fit; the diagnosis stands as it was reported. None when no later evaluation came back that far."""
        best = diagnosis.evidence.get("best_val_loss", math.nan)
        evals = self.evals
        back_at = np.flatnonzero((evals[:, 0] > diagnosis.step) & (evals[:, 2] <= best))
        if not back_at.size:
            return None
        back = evals[back_at[0]].tolist()
        rise = diagnosis.evidence.get("rise_fraction", math.nan)
        return (
            f"{self.code} at step {diagnosis.step} was a transient: {self.metric} came back to {back[2]:.4g} at step "
            f"{back[0]:.0f}, at or below the minimum {best:.4g} it had risen {rise:+.0%} from "
            f"(latest evaluation {self.evals[-1][2]:.4g})."
        )

    def _luck(self, values: np.ndarray, best: float) -> float:
        """How far the best is below its level by chance (:func:`_chance_low`). The noise here is measured around
        any steady slope (second differences), so the smooth bottom of a real rise's U is not taken for a noisy
        plateau."""
        return _chance_low(values, best, curvature_noise(values), self.thresholds.z)

    def _level_rose(self, values: np.ndarray) -> bool:
        """Whether the mean of the latest ``level_evals`` evaluations is above the lowest such mean by the margin
        for means: ``z`` of their noise (for a difference of two) plus the luck of the lowest and, from
        ``6 * level_evals`` evaluations on, of the highest since (:func:`_chance_low` of the negated means: the
        latest is judged at every evaluation, so it is the highest of many looks; on a real climb few means are near
        the top and it adds little). The noise is measured over lags of up to ``level_evals`` evaluations: a model
        wandering on a plateau is high for several evaluations in a row, which lag-1 differences do not see. From 6
        times as many evaluations, the latest ``level_evals`` touch at most a quarter of the second differences at the
        longest lag, so a jump no longer sets the noise that would hide it."""
        t = self.thresholds
        k = int(t.level_evals)
        means = np.convolve(values, np.ones(k) / k, mode="valid")
        best_at = int(np.argmin(means))
        if best_at == means.size - 1:
            return False
        lagged = [curvature_noise(values, lag) for lag in range(1, k + 1) if len(values) >= 2 * lag + 4]
        noise = max(max(lagged, default=0.0) / math.sqrt(k), self._wander(means))
        lowest = float(means[best_at])
        luck = _chance_low(means, lowest, noise, t.z)
        if len(values) >= 6 * k:
            negated_since = -means[best_at + 1 :]
            luck += _chance_low(negated_since, float(negated_since.min()), noise, t.z)
        return bool(means[-1] >= lowest + t.z * math.sqrt(2) * noise + luck)

    def _wander(self, means: np.ndarray) -> float:
        """How far the means of ``level_evals`` evaluations wander: their noise over lags from ``level_evals`` (means
        that share no evaluation) up to ``wander_share`` of the evaluations, on a ladder growing by half: evaluations
        close together in training time move together, so neighbours' noise says nothing about how far the level
        moves. From the negative second differences only (:func:`convex_curvature_noise`): the run's first fast fall
        would otherwise dominate the long lags and hide a real rise."""
        lag, last = int(self.thresholds.level_evals), int(means.size * self.thresholds.wander_share)
        found = []
        while lag <= last:
            found.append(convex_curvature_noise(means, lag))
            lag = max(lag + 1, round(lag * 1.5))
        return max((noise for noise in found if math.isfinite(noise)), default=0.0)

    def _checkpoint_remedy(self) -> str:
        return (
            f"Keep the best checkpoint: ModelCheckpoint(monitor='{self.metric}', mode='min') and "
            f"EarlyStopping(monitor='{self.metric}', patience=3)."
        )

    def _cause(self, best_index: int, train_delta: float) -> tuple[str, list[str]]:
        t = self.thresholds
        checkpoint = self._checkpoint_remedy()
        regularise = "Regularise: weight decay, dropout, data augmentation; get more training data."
        finetune = "When fine-tuning: lower the learning rate (10x), freeze the early layers, add a warm-up."
        if train_delta <= -t.train_change:  # False for NaN
            if best_index == 0:
                return (
                    "overfitting from the first evaluation (typical of fine-tuning on a small set, or a "
                    "fine-tuning learning rate that is too high)",
                    [checkpoint, regularise, finetune],
                )
            return "overfitting (training loss falls while validation rises)", [
                checkpoint,
                regularise,
                finetune,
            ]
        if train_delta >= t.train_change:
            return (
                "unstable optimisation (the training loss rises too)",
                ["Lower the learning rate and clip gradients (gradient_clip_val=1.0).", checkpoint, finetune],
            )
        if best_index == 0:
            return (
                "the model is moving away from a good starting point: catastrophic forgetting or a fine-tuning "
                "learning rate that is too high",
                [finetune, checkpoint, regularise],
            )
        return (
            "the training loss is flat while validation rises: a gap between the training and validation "
            "data (domain shift) or a learning rate that is too high",
            [
                checkpoint,
                "Check that training and validation data come from the same distribution; augment "
                "towards the validation domain.",
                finetune,
            ],
        )


def _mirrors(val: float, train: float, tolerance: float) -> bool:
    """Whether a positive validation loss is the negative training loss's opposite, to ``tolerance`` of its size."""
    return abs(val + train) <= tolerance * abs(val)


def _chance_low(levels: np.ndarray, lowest: float, noise: float, z: float) -> float:
    """How far the lowest of ``levels`` sits below their common level by chance: the lowest of m levels that the
    noise cannot tell apart (within ``z`` of it) sits about noise * sqrt(2 ln m) below them (the expected minimum of
    m normal draws)."""
    if not math.isfinite(noise) or noise <= 0:
        return 0.0
    peers = int(np.count_nonzero(levels <= lowest + z * noise))
    return math.sqrt(2 * math.log(max(peers, 1))) * noise


def _relative_change(before: float, now: float) -> float:
    """``now`` against ``before`` as a fraction of its size; from exactly 0, an infinite rise or fall (a training
    loss that left 0 moved, however it is scaled); NaN when either is not finite."""
    if not (math.isfinite(before) and math.isfinite(now)):
        return math.nan
    if before == 0:
        return math.copysign(math.inf, now) if now != 0 else 0.0
    return (now - before) / abs(before)


def _train_change(before: float, now: float) -> str:
    """The message's clause on the training loss since the best evaluation: a relative change, or both values where
    a percentage means nothing (a loss at or below zero)."""
    if not (math.isfinite(before) and math.isfinite(now)):
        return ""
    change = format_change(before, now)
    if change:
        return f" while the training loss changed {change}"
    return f" while the training loss went {before:.4g} -> {now:.4g}"
