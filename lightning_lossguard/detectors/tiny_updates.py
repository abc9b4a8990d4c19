"""``tiny_updates``: each optimizer step changes the weights by a tiny fraction: the learning rate is
too low to learn.

Measured, not estimated: on report steps the weights are compared before and after the optimizer step
(``||w_after - w_before|| / ||w_before||`` per parameter), so it is right for any optimizer. The run's ratio
is the median over the model's weights, each element counting once (the per-parameter ratios weighted by
their sizes): a zero-initialised bias or embedding-bias table is still the size of its own first updates, so
its ratio reads near 1 whatever the learning rate, and a plain median over parameter tensors, half of them
such biases, would hide a learning rate of 1e-8 on the weight matrices. Reported only while the loss is not
improving either: slow but productive fine-tuning stays quiet. A learning rate under ``decayed_lr`` of the run's
largest is told as a schedule that decayed it away (a per-epoch scheduler stepped every batch), checking the schedule
first: raising the rate would be undone by the same schedule. Steps that grow ``waking`` times or more per unit of
learning rate from each sample to the next are not judged yet: behind a zero-initialised head or residual gain the
gradient reaches the rest of the model only as those weights grow (a normalizer-free CNN under SGD read 8e-9, 8e-7 and
5e-6 of its size at its first three samples with the loss at ln 10, then learned: 2.29 -> 0.94). In the corpus's 70
runs at a learning rate divided by 1e6 none grew that fast at two samples in a row (the most: 3.3x, then 1.7x), and
each is found at the same step as before.

Parameters that no optimizer holds take no step at all, whatever the rate. Ones that got a gradient and did not
move in ``min_samples`` reports in a row are reported on their own (the loss does not matter: the rest of the model
may learn around them). Where trained parameters read their output (an encoder under a trained head, an embedding
table) and their module is in training mode, ``configure_optimizers`` left part of the model out
(``self.head.parameters()``): a warning, giving them to an optimizer first. Where nothing trained reads it (a loss
network such as a perceptual VGG, a distillation teacher, a learned weight of the loss) or its module is kept in eval
mode (a fixed feature extractor under a trained head), the usual reason is a fixed part left unfrozen: an info,
freezing it first (its gradients cost backward time and pile up). Where the graph was not read (a compiled step, a
graph too large), an info too. A parameter moved by hand (an EMA copy, a multiplier stepped in a hook) is never
reported: the measurement drops it.

Weights stored in 16 bits (``Trainer(precision="bf16-true")``, a model cast with ``.half()``) keep their value when an
update is under half their spacing (bfloat16: about 0.4% of a weight; float16: 0.05%): the update rounds away. The
sampled elements a step left exactly unchanged are counted on the same report steps, and ``rounded_share`` of them
unchanged in ``min_samples`` samples in a row, with the loss not improving by the same tests, is reported too, even when
the median change is not tiny: the weights that do move jump by at least one spacing, but most never move. The cause is
then the storage, not the rate: a causal Transformer in bfloat16 at learning rate 1e-5 left 96-97% of its weights
unchanged at every sample and its loss went 54.25 -> 53.25 in 256 steps, where float32 weights at the same rate moved
every element and took it to 45.3 (a healthy bfloat16 run of it at 3e-3 left 60-72% unchanged). Keeping the weights in
float32 (``precision="bf16-mixed"``) comes first, then the rate; when the median change is tiny as well, the rate comes
first. Checked on nine corpus programs not used to set it (classifiers, an autoencoder, an LSTM and a Transformer LM,
tabular MLPs), each run under ``bf16-true``: at their own rates none alarmed; at a hundredth of them, the eight whose
rate the change reached warned "rounded away" (92-98% unchanged) and the same nine in float32 had no ``tiny_updates``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.stats import model_update_ratio
from lightning_lossguard.diagnosis import Diagnosis, Severity, format_share


@dataclasses.dataclass(frozen=True)
class TinyUpdatesThresholds(Thresholds):
    max_ratio: float = threshold(1e-5, "Median update/weight ratio below this is tiny (healthy: ~1e-4..1e-2).")
    min_samples: int = threshold(3, "Consecutive report-step samples below max_ratio.")
    max_improvement: float = threshold(
        0.02, "Reported only if the loss improved less than this fraction over those samples ..."
    )
    hopeless: float = threshold(
        1e-3,
        "Steps below max_ratio x this are reported whatever the loss does (nothing learns at that rate).",
        open_low=True,
        high=1,
    )
    min_loss_fraction: float = threshold(
        0.5, "... and is still above this fraction of its early level (a converged run is not starved)."
    )
    rounded_share: float = threshold(
        0.9,
        "16-bit weights: a share of sampled weight elements left exactly unchanged by a step at or above this, in "
        "min_samples samples in a row, is updates rounding away (healthy bfloat16 training: 0.6-0.75).",
        low=0,
        high=1,
    )
    decayed_lr: float = threshold(
        1e-3,
        "A learning rate below this fraction of the run's largest is decayed away (a schedule stepped too often): "
        "steps below max_ratio x hopeless are then reported even after the loss fell; at a learning rate the run "
        "still has, they are a converged optimizer's own choice (LBFGS stops at its tolerances).",
        open_low=True,
        high=1,
    )
    waking: float = threshold(
        3.0,
        "Steps per unit of learning rate that grew by at least this factor from each of the min_samples samples to "
        "the next are a gradient still reaching the weights (a zero-initialised head or residual gain): not judged "
        "while they grow that fast.",
        low=1,
        open_low=True,
    )


LEFT_OUT = "left out of the optimizer"
"""The subject of the warning on parameters no optimizer holds that trained ones read (the plain report has none)."""

UNUSED = "gradients no optimizer uses"
"""The subject of the info on parameters no optimizer holds that no trained one reads."""

GIVE_TO_AN_OPTIMIZER = (
    "Give them to an optimizer: configure_optimizers passes only part of the model (self.head.parameters(), a "
    "filtered list, one submodule of two). Return e.g. torch.optim.Adam(self.parameters()), or add a param group for "
    "them."
)
FREEZE_IF_FIXED = (
    "If they are meant to stay fixed, freeze them (module.requires_grad_(False)) or run that part under "
    "torch.no_grad(): their gradients cost backward time and memory, and pile up, never zeroed."
)
GIVE_IF_MEANT = (
    "If they are meant to learn (part of the model, a learned weight of the loss), give them to an optimizer in "
    "configure_optimizers."
)

ROUNDED_AWAY = "rounded away"
"""The subject of the warning on 16-bit weights that most steps leave unchanged."""

WEIGHTS_IN_FLOAT32 = (
    "Keep the weights in float32 and compute in 16 bits: Trainer(precision='bf16-mixed') instead of 'bf16-true' (or "
    "'16-mixed' instead of '16-true', or no .half() on the model); or use an optimizer that keeps float32 master "
    "weights or compensates the rounding (Kahan summation)."
)

DECAYED_SCHEDULE_REMEDY = (
    "Check the learning-rate schedule: it took the rate to ~0. A per-epoch scheduler (StepLR, ExponentialLR, "
    "MultiStepLR) stepped every batch decays that fast: return it with 'interval': 'epoch' from configure_optimizers, "
    "or give it fewer decay steps and a floor (eta_min)."
)


def rate_text(learning_rate: float, slowest_lr: float = math.nan) -> str:
    """How a message quotes the rate: " at learning rate 0.001"; where the parameter groups run at different rates
    (layer-wise decay, a slower backbone), the span, the largest last. "" when unknown."""
    if not math.isfinite(learning_rate):
        return ""
    if math.isfinite(slowest_lr) and slowest_lr < learning_rate * (1 - 1e-6):
        return f" at learning rates {slowest_lr:.3g} to {learning_rate:.3g} (by parameter group)"
    return f" at learning rate {learning_rate:.3g}"


def decayed_by_schedule(learning_rate: float, peak_lr: float, share: float) -> str:
    """For a message: how far a learning rate under ``share`` of the run's largest so far fell ("" when it did not
    fall that far, or either is unknown)."""
    if not (peak_lr > 0 and 0 <= learning_rate < share * peak_lr):
        return ""
    if learning_rate == 0:
        return f", down from the {peak_lr:.3g} it had earlier"
    return f", {peak_lr / learning_rate:.2g}x below the {peak_lr:.3g} it had earlier"


class TinyUpdates(Detector[TinyUpdatesThresholds]):
    """Update-to-weight ratios sampled at report steps, judged together with the loss trend."""

    code = "tiny_updates"
    Thresholds = TinyUpdatesThresholds

    def __init__(self, thresholds: TinyUpdatesThresholds | None = None) -> None:
        super().__init__(thresholds)
        # [step, ratio, loss, unmoved share, learning rate]
        self.samples: deque[list[float]] = deque(maxlen=int(self.thresholds.min_samples))
        self.peak_lr = 0.0  # the largest learning rate seen at a sample
        self.unstepped_reports: dict[str, int] = {}  # parameter in no optimizer -> reports in a row it sat unmoved
        self.unstepped_told: list[str] = []

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_samples)
        seen = len(self.samples)
        return None if seen >= need else f"needs {need} report-step samples, saw {seen}"

    def update(
        self,
        step: int,
        update_ratio: np.ndarray,
        loss_level: float,
        learning_rate: float = math.nan,
        early_loss: float = math.nan,
        sizes: np.ndarray | None = None,
        unmoved: np.ndarray | None = None,
        weight_dtype: str = "",
        slowest_lr: float = math.nan,
    ) -> list[Diagnosis]:
        """Add one sample. ``update_ratio``: per parameter (-1 where not measured); ``loss_level``: a robust
        recent training-loss level; ``early_loss``: the loss level at the start of the run; ``sizes``: elements
        per parameter (the median then counts every weight once; without them every parameter counts once);
        ``unmoved``: per 16-bit parameter, the share of its sampled elements the step left unchanged (-1 elsewhere);
        ``weight_dtype``: the weights' storage type when it is 16-bit ("bfloat16", "float16"), for the message;
        ``learning_rate``: the largest parameter group's rate, ``slowest_lr`` the smallest (both quoted)."""
        ratio = model_update_ratio(update_ratio, sizes)
        if math.isfinite(learning_rate):
            self.peak_lr = max(self.peak_lr, learning_rate)
        if not math.isfinite(ratio):
            return []
        self.samples.append([float(step), ratio, float(loss_level), _unmoved_share(unmoved, sizes), learning_rate])
        t = self.thresholds
        tiny = all(s[1] < t.max_ratio for s in self.samples) and not self._waking()
        rounded = all(_unmoved_of(s) >= t.rounded_share for s in self.samples)
        if len(self.samples) < t.min_samples or not (tiny or rounded):
            return []
        first_loss, last_loss = self.samples[0][2], self.samples[-1][2]
        # Relative to the loss's magnitude (a loss near zero or negative by design has no meaningful ratio to 0).
        magnitude = max(abs(first_loss), abs(last_loss))
        known = math.isfinite(first_loss) and math.isfinite(last_loss) and magnitude > 0
        improvement = (first_loss - last_loss) / magnitude if known else 0.0
        if improvement >= t.max_improvement and ratio >= t.max_ratio * t.hopeless:
            return []  # it still learns; only steps far below any learning rate are reported anyway
        converged = early_loss > 0 and last_loss < t.min_loss_fraction * early_loss
        if converged and ratio >= t.max_ratio * t.hopeless:
            return []  # the loss already fell a lot: small steps of a converged run
        # No step at a rate the run still has, after a positive loss fell to a fraction of itself (a loss near 0
        # that changes sign, a negative cosine, has not "fallen"): the optimizer stopped on its own (LBFGS tolerances).
        decayed = decayed_by_schedule(learning_rate, self.peak_lr, t.decayed_lr)
        if converged and last_loss >= 0 and learning_rate > 0 and not decayed:
            return []
        lr_text = rate_text(learning_rate, slowest_lr) + decayed  # both "" for an unknown rate
        if rounded and not decayed:
            return [self._rounded(step, ratio, lr_text, improvement, learning_rate, weight_dtype, tiny)]
        message = (
            f"Each optimizer step changes the weights by a median {ratio:.2g} of their size{lr_text} "
            f"(healthy training: ~1e-4 to 1e-2), over {len(self.samples)} samples since step "
            f"{self.samples[0][0]:.0f}, and the loss "
            + (f"improved only {format_share(improvement)}" if improvement > 0 else "did not improve")
            + (": a schedule decayed the learning rate away." if decayed else ".")
        )
        evidence = {
            "update_ratio": ratio,
            "max_layer_ratio": float(np.max(update_ratio[update_ratio >= 0])),
            "learning_rate": learning_rate,
            "loss_improvement": improvement,
            "since_step": self.samples[0][0],
        }
        if not decayed:
            return [self.diagnosis(step, message, evidence)]
        evidence["peak_learning_rate"] = self.peak_lr
        return [self.diagnosis(step, message, evidence, remedies=[DECAYED_SCHEDULE_REMEDY, *self._catalog_rest()])]

    def _waking(self) -> bool:
        """Whether the step per unit of learning rate grew by ``waking`` or more from each sample to the next: the
        gradient is still reaching the weights (behind a zero-initialised head, every layer's gradient starts at zero
        and grows as the head does), so the steps are tiny for now, not because of the rate."""
        per_rate = [s[1] / s[4] if len(s) > 4 and s[4] > 0 else math.nan for s in self.samples]
        if not all(math.isfinite(q) and q > 0 for q in per_rate):
            return False
        return all(later >= self.thresholds.waking * earlier for earlier, later in itertools.pairwise(per_rate))

    def _rounded(
        self, step: int, ratio: float, lr_text: str, improvement: float, learning_rate: float, dtype: str, tiny: bool
    ) -> Diagnosis:
        """Most 16-bit weights never move: the updates round away. The storage comes first, unless the median change
        is tiny too (a rate that would starve float32 weights as well)."""
        shares = [_unmoved_of(s) for s in self.samples]
        stored = f"stored in {dtype}" if dtype else "stored in 16 bits"
        low, high = format_share(min(shares)), format_share(max(shares))
        healthy = " (healthy training: ~1e-4 to 1e-2)" if tiny else ""
        message = (
            f"Each optimizer step leaves {low if low == high else f'{low} to {high}'} of the weights "
            f"exactly as they were, over {len(self.samples)} samples since step {self.samples[0][0]:.0f}: they are "
            f"{stored}, where an update under half a weight's spacing rounds away. The median change is {ratio:.2g} "
            f"of their size{lr_text}{healthy}, and the loss "
            + (f"improved only {format_share(improvement)}." if improvement > 0 else "did not improve.")
        )
        evidence = {
            "update_ratio": ratio,
            "unchanged_share": min(shares),
            "learning_rate": learning_rate,
            "loss_improvement": improvement,
            "since_step": self.samples[0][0],
        }
        rate = code_info(self.code).remedies[0]
        remedies = [rate, WEIGHTS_IN_FLOAT32] if tiny else [WEIGHTS_IN_FLOAT32, rate]
        return self.diagnosis(step, message, evidence, subject=ROUNDED_AWAY, remedies=remedies)

    def update_unstepped(
        self, step: int, unstepped: dict[str, tuple[int, bool | None, bool]], model_elements: int = 0
    ) -> list[Diagnosis]:
        """One report's parameters that got a gradient, are in no optimizer and have not moved since the run began
        (``unstepped``: name -> (elements, whether a trained parameter reads their output (None when the graph was not
        read), whether their module is in training mode); ``model_elements``: the whole model's, 0 when unknown)."""
        self.unstepped_reports = {name: self.unstepped_reports.get(name, 0) + 1 for name in unstepped}
        need = int(self.thresholds.min_samples)
        due = [n for n, seen in self.unstepped_reports.items() if seen >= need and n not in self.unstepped_told]
        self.unstepped_told += due
        read = [n for n in due if unstepped[n][1] is True and unstepped[n][2]]  # read in training mode: the model's
        found = [self._left_out(step, read, unstepped, model_elements)] if read else []
        if beside := [n for n in due if n not in read]:
            found.append(self._beside(step, beside, unstepped, model_elements))
        return found

    def _left_out(
        self, step: int, names: list[str], unstepped: dict[str, tuple[int, bool | None, bool]], model_elements: int
    ) -> Diagnosis:
        """Parameters that trained layers read: part of the model left out of the optimizer (a warning)."""
        what, evidence = _unstepped_evidence(names, unstepped, model_elements)
        message = (
            f"{what} got gradients, but no optimizer holds them: they have not moved since the run began "
            f"({self.thresholds.min_samples} reports in a row, to step {step}), and trained parameters read their "
            "output, so that part of the model is not being trained."
        )
        remedies = [GIVE_TO_AN_OPTIMIZER, FREEZE_IF_FIXED]
        return self.diagnosis(step, message, evidence, subject=LEFT_OUT, remedies=remedies)

    def _beside(
        self, step: int, names: list[str], unstepped: dict[str, tuple[int, bool | None, bool]], model_elements: int
    ) -> Diagnosis:
        """Parameters no trained one reads, or kept in eval mode (a loss network, a teacher, a fixed feature
        extractor, a weight of the loss): an info."""
        what, evidence = _unstepped_evidence(names, unstepped, model_elements)
        why = (
            "Whether trained parameters read their output could not be read from the graph (a compiled step, a graph "
            "too large)"
            if any(unstepped[n][1] is None and unstepped[n][2] for n in names)  # unknown, in training mode
            else "No trained parameter reads their output, or their modules are kept in eval mode"
        )
        message = (
            f"{what} got gradients that no optimizer uses: no optimizer holds them and they have not moved since the "
            f"run began ({self.thresholds.min_samples} reports in a row, to step {step}). {why}: most likely a fixed "
            "part left unfrozen (a loss network, a teacher, a feature extractor), or a weight of the loss meant to "
            "learn."
        )
        found = self.diagnosis(step, message, evidence, subject=UNUSED, remedies=[FREEZE_IF_FIXED, GIVE_IF_MEANT])
        return dataclasses.replace(found, severity=Severity.INFO)

    def _catalog_rest(self) -> list[str]:
        """The catalog's remedies but raising the rate (the schedule took it down) and the vaguer schedule check."""
        return [
            r
            for r in code_info(self.code).remedies
            if not r.startswith(("Raise the learning rate", "Check that the LR"))
        ]


def _unmoved_of(sample: list[float]) -> float:
    """A sample's unchanged share (NaN for a sample from a checkpoint written before it was kept)."""
    return sample[3] if len(sample) > 3 else math.nan


def _unmoved_share(unmoved: np.ndarray | None, sizes: np.ndarray | None) -> float:
    """The share of the 16-bit weights a step left unchanged, each element counting once (NaN when none was
    sampled)."""
    if unmoved is None:
        return math.nan
    seen = unmoved >= 0
    if not seen.any():
        return math.nan
    weights = np.asarray(sizes, dtype=np.float64)[seen] if sizes is not None and len(sizes) == len(unmoved) else None
    return float(np.average(unmoved[seen], weights=weights))


def _unstepped_evidence(
    names: list[str], unstepped: dict[str, tuple[int, bool | None, bool]], model_elements: int
) -> tuple[str, dict[str, float]]:
    """How many parameters, how large, which ones (for a message), and the evidence."""
    elements = sum(unstepped[n][0] for n in names)
    share = elements / model_elements if model_elements > 0 else math.nan
    of_model = f", {share:.0%} of the model" if math.isfinite(share) else ""
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    tensors = f"{len(names)} parameter tensors" if len(names) > 1 else "1 parameter tensor"
    evidence = {"unstepped_tensors": len(names), "unstepped_elements": elements, "unstepped_share": share}
    return f"{tensors} ({elements:,} elements{of_model}: {listed})", evidence
