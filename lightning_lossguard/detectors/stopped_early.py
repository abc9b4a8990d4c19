"""A run that early stopping ended before ``loss_plateau`` could judge it, or before its validation metric ever improved
on its first evaluation: judged once more at the stop.

Early stopping ends such a run after ``patience`` evaluations without a new best, which on full-batch training (one
step an epoch, as graph networks and small tabular models are trained) is a few dozen steps: too few for
``loss_plateau`` (100 batches) or for ``val_loss_rising``'s minimum rise, so the report said only "too short to judge".
The stop is evidence in itself: the run's own callback found nothing more to learn. What the training loss did names
the cause:

- flat (within ``loss_plateau``'s ``min_improvement`` of its start, not rising by ``val_loss_rising``'s
  ``train_change``), in a run ``loss_plateau`` did not have the batches to judge: ``loss_plateau``. A warning when a
  second sign says the model is stuck: steps too small to learn (``small_update``; raising the learning rate comes
  first), almost nothing trained (``min_trainable_share``), or a first batch at ln K, the loss of a classifier that
  predicts 1/K for every target (``uniform_tolerance``: an untrained one). Otherwise an info that names both readings:
  a model that learned nothing, or weights that had nothing left to learn. Fine-tuning a converged classifier on more
  of its own data ends this way, and is no alarm: a probe of 24 such runs (an MLP fine-tuned on data like its own or
  shifted, learning rates 1e-4 to 1e-2, ``EarlyStopping(patience=3)``) gave 4 infos and no warning (a first version
  without the second sign warned on one: no evaluation below the first, a loss 3.6% lower at the end). Remedies put
  the parameters that are trained first unless the steps are tiny: a frozen model's last bias takes large steps that
  change nothing.
- negative and falling while the (positive) validation metric never went below its first evaluation and climbed
  (every evaluation at or above the one before): ``val_loss_rising``, a negated training loss. Not for a stopper that
  waits for a new highest (``mode="max"``): an accuracy has no sign to compare with the loss's.
- rising by ``train_change`` or more under such a climb (for ``mode="max"``, a fall: every evaluation at or below the
  one before): ``val_loss_rising``, unstable optimisation.
- falling: nothing new. Fine-tuning whose first epoch is its best ends this way, and ``val_loss_rising`` judges its
  rise as usual.

Each quotes the evaluations and both losses. It uses the thresholds of the codes it reports; it is judged once, at the
end of a fit that early stopping ended (its patience ran out, on a loss or on an accuracy), never on the way. The
numbers of a metric that early stopping watches and ``val_loss_rising`` does not (an accuracy, a ``val_mae``) are
recorded at each validation for it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lightning_lossguard.detectors.base import diagnosis_of
from lightning_lossguard.detectors.loss_plateau import LossPlateauThresholds, uniform_classes, uniform_tolerance
from lightning_lossguard.detectors.val_loss_rising import ValLossRisingThresholds
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_change, format_share


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """An early stopper that ran out of patience: the evaluations it waited, and whether it waited for a new highest
    (``mode="max"``) rather than a new lowest."""

    patience: int
    higher_is_better: bool = False


@dataclasses.dataclass(frozen=True)
class StoppedRun:
    """What a fit that early stopping ended measured, as plain numbers.

    Attributes:
        metric: the validation metric early stopping watched.
        patience: the evaluations without a new lowest after which it stopped.
        values: this fit's evaluations of the metric, oldest first.
        first_train: the training loss's level at the very start (its first batches).
        first_batch: the loss of the very first batch, before any update (NaN when unknown).
        train_now: its level at the end (its latest batches).
        update_ratio: the latest median update/weight ratio (NaN when not measured).
        trainable_share: the share of the model's parameter elements being trained (NaN when unknown).
        plateau_judged: ``loss_plateau`` had the batches it needs before the stop (then it has judged the loss).
        higher_is_better: the stopper waited for a new highest (``mode="max"``: an accuracy, a score).
    """

    metric: str
    patience: int
    values: np.ndarray
    first_train: float
    train_now: float
    first_batch: float = math.nan
    update_ratio: float = math.nan
    trainable_share: float = math.nan
    plateau_judged: bool = False
    higher_is_better: bool = False


def judge_stopped_run(
    run: StoppedRun, step: int, plateau: LossPlateauThresholds, rising: ValLossRisingThresholds
) -> Diagnosis | None:
    """The diagnosis for a run early stopping ended (see the module), or None: fewer than ``min_evals`` evaluations, a
    training loss that fell, or one that ``loss_plateau`` judged itself."""
    values = np.asarray(run.values, dtype=np.float64)
    if values.size < rising.min_evals or not np.isfinite(values).all():
        return None
    first, last = float(values[0]), float(values[-1])
    first_train, train_now = run.first_train, run.train_now
    if not (math.isfinite(first_train) and math.isfinite(train_now)):
        return None
    worse = -values if run.higher_is_better else values  # larger is worse, whichever way the stopper waited
    best = int(np.argmin(worse))
    never = best == 0
    below, lowest = ("above", "highest") if run.higher_is_better else ("below", "lowest")
    if never:
        after = float(values[1:].max() if run.higher_is_better else values[1:].min())
        stopped = (
            f"early stopping ended the run at step {step}: {run.metric} never went {below} its first evaluation in "
            f"{values.size} evaluations ({first:.4g} first, {last:.4g} last, the {lowest} after it {after:.4g})"
        )
    else:
        stopped = (
            f"early stopping ended the run at step {step}: {run.metric} stopped improving at evaluation {best + 1} "
            f"of {values.size} ({first:.4g} first, {float(values[best]):.4g} {lowest}, {last:.4g} last)"
        )
    kind = "val_metric" if run.higher_is_better else "val_loss"  # an accuracy's numbers are not a loss's
    evidence = {
        "evaluations": values.size,
        "early_stopping_patience": run.patience,
        f"first_{kind}": first,
        f"best_{kind}": float(values[best]),
        f"current_{kind}": last,
        "initial_loss": first_train,
        "current_loss": train_now,
        "update_ratio": run.update_ratio,
        "trainable_share": run.trainable_share,
    }
    # A rise told as one (negated, unstable) must be one: every evaluation at or above the one before, the last above
    # the first (four noisy evaluations of a converged model climb like that one time in 24).
    climbed = never and bool((np.diff(worse) >= 0).all()) and worse[-1] > worse[0]
    # Negated: a negative training loss beside a positive validation loss. An accuracy has no sign to compare.
    negated = not run.higher_is_better and train_now < 0 < first and train_now < first_train
    if negated and climbed:
        message = (
            f"{stopped}, while the training loss is negative and fell ({first_train:.4g} -> {train_now:.4g}): "
            "the training loss looks negated (a score maximised by mistake, or a sign flipped in training_step only)."
        )
        remedies = [
            "Check the sign of the loss returned by training_step: minimise a loss, maximise a score (return -score).",
            "Log the loss training_step returns next to the metric you validate, and compare their signs.",
        ]
        return _diagnosis("val_loss_rising", step, message, evidence, remedies, run.metric)
    if not first_train > 0:
        return None  # relative change means nothing for a loss that is zero or negative by design
    change = (train_now - first_train) / first_train
    evidence["train_change_fraction"] = change
    if change >= rising.train_change and climbed:
        message = (
            f"{stopped}, while the training loss rose too ({first_train:.4g} -> {train_now:.4g}, "
            f"{format_change(first_train, train_now)}): "
            "unstable optimisation."
        )
        remedies = [
            "Lower the learning rate (try 10x lower) and clip gradients (gradient_clip_val=1.0).",
            "Add a learning-rate warm-up.",
        ]
        return _diagnosis("val_loss_rising", step, message, evidence, remedies, run.metric)
    if change <= -plateau.min_improvement or change >= rising.train_change or run.plateau_judged:
        return None  # it learned (or rose, not climbing), or loss_plateau had its batches: theirs to judge
    small = math.isfinite(run.update_ratio) and run.update_ratio < plateau.small_update
    share = run.trainable_share
    frozen = share < plateau.min_trainable_share
    # Before any update: by the first batches' median a full-batch run has already moved off ln K.
    classes = uniform_classes(run.first_batch, plateau) if math.isfinite(run.first_batch) else 0
    untrained = bool(classes) and abs(run.first_batch - math.log(classes)) <= uniform_tolerance(classes, plateau)
    evidence["classes_at_start"] = classes if untrained else 0
    corroborated = []
    if small:
        corroborated.append(f"each step changes the weights by a median {run.update_ratio:.2g} of their size")
    if frozen:
        corroborated.append(f"only {format_share(share)} of the model's parameters are trained")
    if untrained:
        corroborated.append(
            f"its first batch's loss was {run.first_batch:.5g}, ln {classes} = {math.log(classes):.5g}: the loss "
            f"of predicting 1/{classes} for every target (an untrained classifier)"
        )
    message = (
        f"{stopped}, and the training loss did not fall either ({first_train:.4g} at the start, {train_now:.4g} at "
        f"the end, {change:+.1%})"
    )
    if not frozen and share < 1:  # a fact worth having next to the remedies, not a sign of its own
        message += f" with {share:.1%} of the model's parameters trained"
    requires_grad = (
        "Check which parameters require a gradient and what configure_optimizers passes to the optimizer "
        "(a requires_grad_(False), a .detach(), or a filter that leaves almost everything out)."
    )
    raise_lr = "Raise the learning rate (a range test finds it), or check that a schedule does not decay it away."
    patience = (
        f"If the model learns late (a warm-up, a slow start), give early stopping more patience than {run.patience} "
        "evaluations."
    )
    remedies = [raise_lr, requires_grad, patience] if small else [requires_grad, raise_lr, patience]
    if not corroborated:
        # Fine-tuning weights that were already trained on such data ends this way too: nothing left to learn.
        message += (
            ": the model learned nothing it could validate, or it started from weights that had nothing left to "
            "learn here (fine-tuning a converged model). Nothing else says it is stuck: no tiny steps, no frozen "
            "model, no start at a classifier's chance level."
        )
        found = _diagnosis("loss_plateau", step, message, evidence, remedies)
        return dataclasses.replace(found, severity=Severity.INFO)
    # Tiny steps alone fit a pretrained model as well as an untrained one: the steps, not the model, are named.
    verdict = (
        "the steps are too small for the model to learn anything it could validate"
        if small and len(corroborated) == 1
        else "the model learned nothing it could validate"
    )
    message += f"; {'; '.join(corroborated)}: {verdict}."
    return _diagnosis("loss_plateau", step, message, evidence, remedies)


def _diagnosis(
    code: str, step: int, message: str, evidence: dict[str, float], remedies: list[str], subject: str = ""
) -> Diagnosis:
    return diagnosis_of(code, step, message[0].upper() + message[1:], evidence, subject, remedies)
