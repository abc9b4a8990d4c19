"""``nonfinite_loss``: the training loss is NaN or Inf.

Every loss ``training_step`` hands over is checked: the first non-finite one (after ``min_batches`` of them) is an
error, with its step and the last finite loss before it. A batch whose ``training_step`` returns None (the ``if not
torch.isfinite(loss): return None`` idiom) hands over no loss, so it is not seen there; when such a batch logged a
value that is not finite first (``self.log``, read on timed batches), that is reported as an info: the loss goes
non-finite, and the skip hides it (nothing is poisoned, the batch trained nothing; a gate on warnings does not fail
on a skip that may be deliberate). When the skipped batches are most of the run (``skipped_error_share`` of the
batches so far, at least ``skipped_error_batches`` of them) and most of those read logged a value that is not
finite, the skip is no longer a rare deliberate one: the run trains on almost nothing, an error.

A NaN after a finite loss ``blowup_factor`` times the first batch's (in magnitude) ends a blow-up, not a bad batch:
the learning rate (or an exp or power that overflows) first, the batch last; when that loss was negative, it fell
towards -inf, and the loss's sign comes first, and so does this diagnosis among its step's: gradients blow up with
such a loss, and a user who reads "clip gradients" first clips the symptom (a residual CNN without normalisation and a
ReZero encoder, their losses negated, fell to -8.8e13 and -1.9e10 and went NaN at steps 12 and 28, before the loss
curve's detectors had a report to judge them, their gradients alarming at the same report). In the corpus' injected
faults, none of the 98 NaN batches was read so (the last finite loss before them: at most 25); of the six NaNs that
ended a learning rate 1000x too high or an exp on the outputs, four were (their last finite loss 1.6e4x to 5e22x their
first batch's), one came on the second batch, and one after a loss of 181.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lightning_lossguard.catalog import LOSS_FELL
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.loss_divergence import UNBOUNDED_FALL_REMEDIES
from lightning_lossguard.diagnosis import Diagnosis, Severity


@dataclasses.dataclass(frozen=True)
class NonfiniteLossThresholds(Thresholds):
    min_batches: int = threshold(1, "Non-finite training losses needed before the diagnosis (1: the first).")
    skipped_error_share: float = threshold(
        0.5,
        "Batches skipped by returning None are an error, not an info, when at least this share of the run's batches "
        "so far were skipped and at least this share of those whose logged values were read logged a value that is "
        "not finite: the run trains on almost nothing.",
        high=1.0,
        open_low=True,
    )
    skipped_error_batches: int = threshold(
        20, "... and at least this many batches were skipped (a few skipped first batches are not such a run)."
    )
    blowup_factor: float = threshold(
        1e3,
        "A last finite loss at least this many times the first batch's (in magnitude) means the loss blew up before "
        "it went non-finite: the remedies then start with the learning rate, not the batch.",
        low=1,
    )


@dataclasses.dataclass(frozen=True)
class BlowUp:
    """A finite loss ``factor`` times the first batch's or more, in magnitude: the run blew up (or, negative, fell
    towards -inf) before something went non-finite."""

    growth: float
    fell: bool

    @classmethod
    def of(cls, loss: float, first_loss: float, factor: float) -> BlowUp | None:
        growth = abs(loss) / abs(first_loss) if first_loss and math.isfinite(first_loss) else math.nan
        return cls(growth, loss < 0) if math.isfinite(loss) and growth >= factor else None

    @property
    def how(self) -> str:
        return "fell towards -inf" if self.fell else "blew up"

    @property
    def why(self) -> str:
        if self.fell:  # a negated loss, or one unbounded below
            return "usually a loss maximised by mistake, or one unbounded below"
        return "a learning rate far too high, or an exp or power that overflows"

    def first(self, remedies: Sequence[str]) -> list[str]:
        """``remedies`` with the sign checks ahead of them when the loss fell."""
        return [*UNBOUNDED_FALL_REMEDIES, *remedies] if self.fell else list(remedies)


class NonfiniteLoss(Detector[NonfiniteLossThresholds]):
    """Fires on the first non-finite training loss: a NaN loss poisons the weights at the next step."""

    code = "nonfinite_loss"
    Thresholds = NonfiniteLossThresholds

    def __init__(self, thresholds: NonfiniteLossThresholds | None = None) -> None:
        super().__init__(thresholds)
        self.first_step: int | None = None
        self.nan_batches = 0
        self.inf_batches = 0
        self.last_finite: float = math.nan
        self.last_finite_step: int = -1
        self.first_finite: float = math.nan  # the run's first finite loss: the model before any update
        self.skipped_read = 0  # batches that returned no loss whose logged values were read
        self.skipped_nonfinite = 0  # ... that logged a value that is not finite
        self.skipped_first_step = -1  # ... the first of those, and what it logged so
        self.skipped_first_names = ""
        self.skipped_batches = 0  # batches that returned no loss, read or not
        self.batches = 0  # batches in all, with a loss or not

    def update(self, steps: Sequence[int], losses: Sequence[float] | np.ndarray) -> list[Diagnosis]:
        values = np.asarray(losses, dtype=np.float64)
        nonfinite = ~np.isfinite(values)
        nan = np.isnan(values)
        self.nan_batches += int(nan.sum())
        self.inf_batches += int((nonfinite & ~nan).sum())
        if math.isnan(self.first_finite) and not nonfinite.all():
            self.first_finite = float(values[int(np.argmin(nonfinite))])
        if self.first_step is None and values.size:
            # The last finite loss before the first non-finite one (or the latest, while all are finite).
            first_bad = int(np.argmax(nonfinite)) if nonfinite.any() else values.size
            finite_before = np.flatnonzero(~nonfinite[:first_bad])
            if finite_before.size:
                i = int(finite_before[-1])
                self.last_finite, self.last_finite_step = float(values[i]), int(steps[i])
            if first_bad < values.size:
                self.first_step = int(steps[first_bad])
        bad = self.nan_batches + self.inf_batches
        if self.first_step is None or bad < self.thresholds.min_batches or not steps:
            return []
        kind = "NaN" if self.nan_batches else "infinite"
        before = (
            f"; the last finite loss was {self.last_finite:.4g} at step {self.last_finite_step}"
            if self.last_finite_step >= 0
            else "; no finite loss was seen before it"
        )
        blow_up = BlowUp.of(self.last_finite, self.first_finite, self.thresholds.blowup_factor)  # None: none seen
        after = ""
        if blow_up is not None:
            after = (
                f", {blow_up.growth:.3g}x the {self.first_finite:.4g} of the first batch: the loss {blow_up.how} "
                f"before it went {kind} ({blow_up.why}), not one bad batch"
            )
        message = (
            f"The training loss became {kind} at step {self.first_step} "
            f"({bad} non-finite batch{'es' if bad != 1 else ''} so far){before}{after}."
        )
        evidence = {
            "first_step": self.first_step,
            "nan_batches": self.nan_batches,
            "inf_batches": self.inf_batches,
            "last_finite_loss": self.last_finite,
            "first_loss": self.first_finite,
        }
        if blow_up is not None and blow_up.fell:
            evidence[LOSS_FELL] = 1.0  # the cause of its step's blown-up gradients: reported ahead of them
        found = self.diagnosis(steps[-1], message, evidence)
        if blow_up is not None:  # the batch last: it was finite until the loss grew this far
            remedies = [*found.remedies[1:], found.remedies[0]]
            found = dataclasses.replace(found, remedies=blow_up.first(remedies))
        return [found]

    def skipped(
        self, read: int, nonfinite: Sequence[tuple[int, tuple[str, ...]]], skipped: int = 0, batches: int = 0
    ) -> list[Diagnosis]:
        """Batches that returned no loss: ``read`` of them had their logged values read, ``nonfinite`` (step, names)
        logged a value that is not finite; ``skipped`` of the window's ``batches`` returned no loss, read or not. An
        info once any has logged a value that is not finite, an error when they are most of the run (see the
        module)."""
        t = self.thresholds
        self.skipped_read += read
        self.skipped_nonfinite += len(nonfinite)
        self.skipped_batches += skipped
        self.batches += batches
        if nonfinite and self.skipped_first_step < 0:
            self.skipped_first_step, names = nonfinite[0]
            self.skipped_first_names = ", ".join(names)
        if not self.skipped_nonfinite:
            return []
        step = self.skipped_first_step
        most = (
            self.skipped_batches >= t.skipped_error_batches
            and self.skipped_batches >= t.skipped_error_share * self.batches
            and self.skipped_nonfinite >= t.skipped_error_share * self.skipped_read
        )
        evidence = {
            "first_step": step,
            "skipped_nonfinite_batches": self.skipped_nonfinite,
            "skipped_batches_read": self.skipped_read,
            "skipped_batches": self.skipped_batches,
            "batches": self.batches,
        }
        if most:
            message = (
                f"training_step skipped {self.skipped_batches} of the {self.batches} batches so far "
                f"({self.skipped_batches / self.batches:.0%}) by returning None, and {self.skipped_nonfinite} of the "
                f"{self.skipped_read} of them whose logged values were read logged {self.skipped_first_names} not "
                f"finite (first at step {step}): the loss is not finite on most batches, so the run trains on almost "
                "nothing. Return that loss once, and this names the step where it starts."
            )
            return [self.diagnosis(step, message, evidence)]
        message = (
            f"{self.skipped_first_names} was not finite at step {step} in a batch that training_step skipped by "
            f"returning None ({self.skipped_nonfinite} of the {self.skipped_read} skipped batches whose logged values "
            "were read so far): the loss goes non-finite, and the skip hides it. Return that loss once, and this "
            "names the step where it starts."
        )
        return [dataclasses.replace(self.diagnosis(step, message, evidence), severity=Severity.INFO)]
