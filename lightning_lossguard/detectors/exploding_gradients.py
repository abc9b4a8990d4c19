"""``exploding_gradients``: the pre-clip gradient norm leaves its own recent baseline and keeps growing.

The baseline is the median and MAD of log10(norm) over the ordinary steps of the last ``baseline_window``
optimizer steps: a run is compared with its own recent past, never with the whole run (early training is
legitimately wild). Recent is counted in optimizer steps, not in measured rows (at least ``min_history`` rows),
and the baseline is refreshed every ``refresh_every`` rows or steps, whichever come first: under the cost budget's
stride the same rows reach back further, to a level a run whose norm climbs as it learns has left behind (a norm
climbing 20x over 150 steps as it learns was warned when measured every 8th step, not when measured on every step).

A spike must be both unusual (``z`` MADs) and large (``spike_factor``), must persist, and must keep growing: by
``growth_factor`` from the first spike to the last, and by ``growth_z`` of the baseline's robust standard deviations
(two spikes of a noisy norm differ by chance); and spikes short of ``severe_factor`` must not have fallen back below the
first of them, yet not below the baseline, by the end of the report's window (a noisy norm climbing 6x to a higher level
as a run learns spikes on the way there and settles: an S4D classifier's norm reached 39x its baseline on one step and
was back at 2x by the report; whether the budget's stride caught that step decided the verdict). A burst of
``severe_factor`` or more, or one after which the norm fell below its baseline (a model the burst may have killed), is
reported even when it receded, unless it is being absorbed: its loss jumped with its first spike at least as many times
as the norm did, and since then the norm has only shrunk and the loss has come down (a large error the optimizer is
reducing, as when a Q-learner copies its online network into its target network: the corpus' DQN, 100x in one step with
its loss 1,500x, was an error on every seed when every step was measured; a learning rate x1000 on SwAV took the norm
300x and the loss only 3x). A norm that jumps once and then holds steady at a new level is a scale shift, not an
explosion, and becomes the new baseline. Spikes near a level the earlier norms already reached on ``usual_share`` of
their steps are one of the run's usual levels (tasks of different gradient scales taking turns), not an explosion.
Before ``min_history`` steps exist, a provisional baseline of the first steps only counts spikes of ``severe_factor``
(runs that blow up in their first steps). One step ``catastrophe_factor`` above the baseline is reported on its own.
A norm above the ``ceiling`` from the first steps, under a loss of ``large_loss`` or more on each of the first
``early_history`` batches, is told as the loss's scale (targets in raw units), with the remedy for that first; a loss
that was ordinary on its first batch and blew up after it is not a scale: a norm ordinary on the first measured step
and above the ceiling within ``early_history`` of them is told as the first updates blowing the model up (most likely
a learning rate far too high), with lowering it first.

A norm can also explode slowly, without a spike: gradients that pile up because ``zero_grad()`` is never
called grow every step, and a rolling baseline follows them. So the norm is also compared with its own
early level: ``growth_decades`` above it, with a monotone rise over the last ``trend_window`` steps
(Mann-Kendall z >= ``trend_z``), is an explosion too. Piled-up gradients are also seen directly, when they
have no early level to leave (a norm that grows from the first step): after the fit's first optimizer step and
after each report, gradients are measured where they should be empty — before the backward that starts an
accumulation window, or, under manual optimization (after reports only), before each backward between two steps of an
optimizer (empty before at least one of them). Not empty in ``uncleared_checks`` reports in a row: gradients are not
cleared. A spike or a growth in a window whose check found them not empty is told with that, and clearing them comes
first: piled-up gradients on batches of one spiked before two checks (the corpus' batch-size-one SGD and a model
frozen block by block, told "Clip gradients" first).

Severity follows corroboration: an **error** when the loss agrees (it rose ``loss_rise``-fold above its
level before the first spike, or became non-finite); a **warning** while the loss is still fine (e.g. with
clipping on), or when it rose but its ``loss_terms`` show one that made up a fair share of it still being learnt
(:class:`~lightning_lossguard.detectors.term_levels.TermLevels`, with ``loss_divergence``'s thresholds). A negative
loss that grew ``loss_rise``-fold in size with the gradients is heading to -inf: still a warning (``loss_divergence``
judges the fall), told as a negated or unbounded loss, checking its sign first (of the corpus' 66 flipped-sign faults,
7 were first told "the loss has not followed yet", clipping first).
False-alarm bound: a spike needs ``z`` = 6 robust deviations (probability ~1e-9 per step for
log-normal noise) on ``spike_persist`` of ``persist_window`` steps, and still growing.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_lossguard.catalog import code_info
from lightning_lossguard.detectors.base import Detector, Thresholds, threshold
from lightning_lossguard.detectors.loss_divergence import UNBOUNDED_FALL_REMEDIES
from lightning_lossguard.detectors.stats import MAD_TO_SIGMA, fast_median, mann_kendall, median, row_medians
from lightning_lossguard.diagnosis import Diagnosis, Severity


@dataclasses.dataclass(frozen=True)
class ExplodingGradientsThresholds(Thresholds):
    spike_factor: float = threshold(10.0, "A spike is at least this many times the baseline norm.")
    z: float = threshold(6.0, "A spike is also at least this many robust standard deviations (MAD) above it.")
    min_spread: float = threshold(0.05, "Floor of the baseline spread, in decades, for very steady norms.")
    baseline_window: int = threshold(
        100, "Optimizer steps the rolling baseline reaches back (its ordinary ones; at least min_history of them)."
    )
    min_history: int = threshold(20, "Steps for the full baseline; before that only severe_factor spikes count.")
    early_history: int = threshold(5, "Steps for the provisional baseline.")
    persist_window: int = threshold(10, "Recent steps in which spikes are counted.")
    spike_persist: int = threshold(3, "Spikes within persist_window needed for the diagnosis.")
    growth_factor: float = threshold(2.0, "The norm must have grown this much more since the first spike ...")
    growth_z: float = threshold(
        2.0,
        "... and by at least this many robust standard deviations of the baseline's log10 norm (a noisy norm's "
        "spikes differ by chance) ...",
        open_low=True,
    )
    severe_factor: float = threshold(100.0, "... or reached this many times the baseline.")
    refresh_every: int = threshold(
        25, "Measured rows or optimizer steps between recomputations of the baseline (it moves slowly)."
    )
    catastrophe_factor: float = threshold(1e4, "A single step this many times the baseline is reported at once.")
    ceiling: float = threshold(1e5, "Absolute norm ceiling: spike_persist steps above it are reported.")
    large_loss: float = threshold(
        1e4,
        "A norm above the ceiling from the first early_history steps, under a loss at least this large on every one "
        "of them, is the loss's scale (regression targets in raw units), and the report says so.",
        open_low=True,
    )
    growth_decades: float = threshold(
        2.0, "Steady growth: decades above the early level (2.0: 100x) ...", open_low=True
    )
    smooth_growth_decades: float = threshold(
        1.0,
        "... or this many decades when the norm moves smoothly from step to step (a sum piling up) ...",
        open_low=True,
    )
    smooth_step: float = threshold(
        0.01,
        "... smoothly: a median step-to-step change of log10(norm) at most this (minibatch noise is ~0.05+).",
        open_low=True,
    )
    trend_window: int = threshold(50, "... with a monotone rise over this many recent steps ...", low=10)
    trend_z: float = threshold(3.0, "... of Mann-Kendall z at least this.", low=1)
    early_steps: int = threshold(20, "Steps after the first min_history whose median is the early level.", low=1)
    uncleared_checks: int = threshold(
        2,
        "Consecutive report-step checks finding gradients not cleared before a backward.",
        low=1,
    )
    loss_rise: float = threshold(
        2.0, "The loss rising this many times its pre-spike level corroborates (error).", low=1
    )
    usual_share: float = threshold(
        0.1,
        "A level within growth_factor of the spikes that the earlier norms already reached this often is one of "
        "the run's usual levels (tasks taking turns), not an explosion.",
        high=1,
    )


SCALE_REMEDY = (
    "Standardise the regression targets (subtract their mean, divide by their standard deviation, and undo it on the "
    "predictions), or divide the loss by a constant: gradients then start near 1."
)


class ExplodingGradients(Detector[ExplodingGradientsThresholds]):
    """Compares each step's global gradient norm with a rolling robust baseline of the run's own norms."""

    code = "exploding_gradients"
    Thresholds = ExplodingGradientsThresholds

    def __init__(self, thresholds: ExplodingGradientsThresholds | None = None) -> None:
        super().__init__(thresholds)
        t = self.thresholds
        self.history: deque[float] = deque(maxlen=int(t.baseline_window))
        self.history_steps: deque[int] = deque(maxlen=int(t.baseline_window))  # the step of each history row
        self.layer_history: deque[list[float]] = deque(maxlen=int(t.baseline_window))
        # [step, log10 norm, excess, spike, loss at that step (NaN: not known)]
        self.recent: deque[list[float]] = deque(maxlen=int(t.persist_window))
        # Every log10 norm, spikes included: the steady-growth trend and the levels the norm usually visits.
        self.levels: deque[float] = deque(maxlen=int(max(t.baseline_window, t.trend_window)))
        self.ceiling_hits: deque[int] = deque(maxlen=int(t.persist_window))
        self.steps_seen = 0
        self.zero_rows = 0  # measured optimizer steps whose gradient norm was exactly zero (not in steps_seen)
        # [median, spike threshold, steps_seen and latest step when computed, robust standard deviation]
        self.cached: list[float] = []
        self.clipped = 0
        self.clip_checked = 0
        self.early: list[float] = []  # log10 norms of the early steps (after min_history)
        self.losses: deque[float] = deque(maxlen=50)  # recent losses while the norm was ordinary
        self.early_losses: list[float] = []  # the first such losses
        self.loss_bad = False  # a non-finite loss was seen
        self.uncleared = 0  # consecutive checks that found gradients left over before a backward
        self.warned: dict[str, Any] | None = None  # the last warning, escalated to an error if the run then blows up
        self.start_loss = math.nan  # the lowest loss of the run's first batches
        self.first_ceiling_row = 0  # the finite row (1-based) where the norm first reached the ceiling (0: never)

    def unjudged(self) -> str | None:
        need = int(self.thresholds.min_history) + int(self.thresholds.spike_persist)
        # A step with no gradient at all (a loss at exactly zero) was looked at: nothing on it can explode.
        return (
            None if self.steps_seen + self.zero_rows >= need else f"needs {need} optimizer steps, saw {self.steps_seen}"
        )

    def band(self) -> tuple[float, float] | None:
        """The current normal band of the norm: below the lower or above the upper edge is a spike."""
        baseline = self._baseline()  # the provisional one too: a run can leave its band in the first steps
        if baseline is None:
            return None
        return 10 ** (baseline[0] - baseline[1]), 10 ** (baseline[0] + baseline[1])

    def update(
        self,
        steps: Sequence[int],
        norms: Sequence[float] | np.ndarray,
        layer_norms: np.ndarray | None = None,
        layers: Sequence[str] = (),
        clip_val: float | None = None,
        losses: Sequence[float] | np.ndarray = (),
        leftover: float | None = None,
        manual: bool = False,
        leftover_source: str = "",
        trade_off: str | None = None,
        loss_steps: Sequence[int] = (),
    ) -> list[Diagnosis]:
        """Judge one window of global pre-clip norms (non-finite rows are skipped: another code's job).

        Args:
            layer_norms: ``[steps, layers]`` per-layer norms, to name the layer that grew most.
            clip_val: ``gradient_clip_val`` when norm clipping is on.
            losses: the window's batch losses, to corroborate (error) or not (warning).
            leftover: the gradient norm found right after Lightning's zero_grad, before a backward (should be 0);
                with ``manual``, the smallest norm of one optimizer's gradients before any backward between two of
                its steps (0 when its zero_grad ran in between).
            manual: the module zeroes its gradients itself (manual optimization).
            leftover_source: which optimizer ``leftover`` was measured on ("optimizer 1 (Adam)"; "" unknown).
            trade_off: what the loss's terms did (:class:`~lightning_lossguard.detectors.term_levels.TermLevels`;
                None: the run hands over none): a term still being learnt keeps a rise of the loss from
                corroborating the gradients.
            loss_steps: the optimizer step of each of ``losses`` (to read the loss at a spike's step; empty: unknown).
        """
        t = self.thresholds
        found: Diagnosis | None = None
        receded_below = math.nan  # found on persistent spikes alone: log10 norm the window must not end below
        window_losses = np.asarray(losses, dtype=np.float64)
        values = np.asarray(norms, dtype=np.float64)
        nonfinite = bool((~np.isfinite(window_losses)).any() or (~np.isfinite(values)).any())
        self.loss_bad = self.loss_bad or nonfinite
        if self.warned is not None and nonfinite:
            # The explosion reported as a warning has now made the gradients or the loss non-finite.
            warned, self.warned = Diagnosis.from_dict(self.warned), None
            message = warned.message + " Since then the gradients or the loss became non-finite."
            evidence = {**warned.evidence, "nonfinite_after": 1.0}
            step = int(steps[-1]) if len(steps) else warned.step
            return [dataclasses.replace(warned, severity=Severity.ERROR, step=step, message=message, evidence=evidence)]
        if math.isnan(self.start_loss):
            first = window_losses[np.isfinite(window_losses)][: int(t.early_history)]
            # The lowest, not the median: a loss in raw units is large from its first batch on, while a learning
            # rate far too high leaves the first batch ordinary and blows the next ones up (Adam at 3.0 on a
            # 4-class cross entropy: 1.4, then ~1e8 from the second step; their median read as a raw-units loss).
            self.start_loss = float(first.min()) if first.size else math.nan
        self.zero_rows += int((values == 0).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where((values > 0) & np.isfinite(values), np.log10(values), np.nan)
            layer_logs = np.log10(np.maximum(layer_norms, 1e-30)) if layer_norms is not None else None
        baseline = self._baseline()
        finite = ~np.isnan(logs)
        calm_window = (
            baseline is not None
            and len(self.history) >= t.min_history
            and bool(finite.all())
            and not (logs - baseline[0] >= baseline[1]).any()
            and not (values >= t.ceiling).any()
        )
        if calm_window:
            # The usual case: no step leaves the band. Taken in bulk (a per-step loop costs a report ~1 ms).
            self._take_calm(steps, values, logs, layer_logs, clip_val, baseline)  # type: ignore[arg-type]
        # The loss at each step, for the spikes' rows (a calm window has none).
        aligned = not calm_window and len(loss_steps) == len(window_losses)
        loss_at = dict(zip(loss_steps, window_losses.tolist())) if aligned else {}
        for i, step in enumerate(steps if not calm_window else ()):
            x, norm = float(logs[i]), float(values[i])
            if math.isnan(x):
                continue
            self.steps_seen += 1
            if clip_val:
                self.clip_checked += 1
                self.clipped += int(norm > clip_val)
            layer_row = layer_logs[i].tolist() if layer_logs is not None else []
            excess, spike = 0.0, False
            baseline = self._baseline()
            if baseline is not None:
                excess = x - baseline[0]
                spike = excess >= baseline[1]
            self.recent.append([int(step), x, excess, float(spike), loss_at.get(int(step), math.nan)])
            if norm >= t.ceiling:
                self.ceiling_hits.append(int(step))
                self.first_ceiling_row = self.first_ceiling_row or self.steps_seen
            if not spike:
                self.history.append(x)
                self.history_steps.append(int(step))
                if layer_row:
                    self.layer_history.append(layer_row)
            if len(self.history) >= t.min_history and len(self.early) < t.early_steps:
                self.early.append(x)
            self.levels.append(x)
            if found is None and (spike or norm >= t.ceiling):  # nothing else can complete a finding
                judged = self._judge(int(steps[-1]), layer_row, layers, clip_val)
                found, receded_below = judged if judged is not None else (None, math.nan)
            if spike and found is None and len(self.recent) == self.recent.maxlen and all(r[3] for r in self.recent):
                # A whole window at a new, steady level: adopt it as the baseline (a scale shift).
                self.history.clear()
                self.history.extend(r[1] for r in self.recent)
                self.history_steps.clear()
                self.history_steps.extend(int(r[0]) for r in self.recent)
                self.cached = []
                self.layer_history.clear()
                for r in self.recent:
                    r[2], r[3] = 0.0, 0.0
        if found is not None and self.recent[-1][2] >= 0 and self.recent[-1][1] < receded_below:
            # Modest spikes receded before the window ended, below where they started but not below the baseline: the
            # norm is not "still growing" when it is reported (a noisy norm climbing to a higher level as the run
            # learns spikes on the way there). One that fell below its baseline may have killed the model: reported.
            found = None
        if found is None:
            found = self._growth(int(steps[-1]) if len(steps) else 0, layers, clip_val)
        piled_up = found is not None and leftover is not None and leftover > 0
        if found is None and leftover is not None:
            found = self._not_cleared(int(steps[-1]) if len(steps) else 0, leftover, clip_val, manual, leftover_source)
        if found is None:
            calm = window_losses[np.isfinite(window_losses)]
            if not any(r[3] for r in self.recent):
                self.losses.extend(calm.tolist())
                self.early_losses.extend(calm[: max(0, 50 - len(self.early_losses))].tolist())
            return []
        found = self._corroborate(found, window_losses, trade_off)
        if piled_up and leftover is not None:
            found = self._piled_up(found, leftover, manual, leftover_source)
        return [found]

    def _piled_up(self, found: Diagnosis, leftover: float, manual: bool, source: str) -> Diagnosis:
        """A spike or a growth in a window whose check found the gradients not cleared before a backward: they pile
        up across steps, which explains the explosion, so clearing them comes first."""
        where = (
            f"between two steps of {source or 'an optimizer'} they were never empty before a backward"
            if manual
            else "right after Lightning's zero_grad, before a backward, they were not empty"
        )
        message = (
            f"{found.message} The gradients are not cleared either: {where} (norm {leftover:.3g}; it should be 0), so "
            "every step adds to the previous ones."
        )
        remedies = [_uncleared_remedies(manual)[0], *found.remedies]
        evidence = {**found.evidence, "leftover_norm": leftover}
        return dataclasses.replace(found, message=message, remedies=remedies, evidence=evidence)

    def _take_calm(
        self,
        steps: Sequence[int],
        values: np.ndarray,
        logs: np.ndarray,
        layer_logs: np.ndarray | None,
        clip_val: float | None,
        baseline: tuple[float, float],
    ) -> None:
        """A window without a spike: what the per-step loop would have recorded, in bulk."""
        t = self.thresholds
        n = len(logs)
        self.steps_seen += n
        if clip_val:
            self.clip_checked += n
            self.clipped += int((values > clip_val).sum())
        k = self.recent.maxlen or n  # only the last persist_window rows are kept
        excess = (logs - baseline[0])[-k:]
        tail = zip(np.asarray(steps)[-k:].tolist(), logs[-k:].tolist(), excess.tolist())
        self.recent.extend([int(s), x, e, 0.0, math.nan] for s, x, e in tail)
        self.history.extend(logs.tolist())
        self.history_steps.extend(np.asarray(steps, dtype=np.int64).tolist())
        if layer_logs is not None:
            self.layer_history.extend(layer_logs.tolist())
        missing = int(t.early_steps) - len(self.early)
        if missing > 0:
            self.early.extend(logs[:missing].tolist())
        self.levels.extend(logs.tolist())

    def _growth(self, decided: int, layers: Sequence[str], clip_val: float | None) -> Diagnosis | None:
        """The norm climbed steadily far above its early level, without ever spiking."""
        t = self.thresholds
        recent = list(self.levels)[-int(t.trend_window) :]
        if len(self.early) < t.early_steps or len(recent) < t.trend_window:
            return None
        early = median(self.early)
        now = median(recent[-10:])
        # Minibatch gradients jump from step to step; a sum that piles up moves smoothly.
        smooth = median(np.abs(np.diff(recent)).tolist()) <= t.smooth_step
        if now - early < (t.smooth_growth_decades if smooth else t.growth_decades):
            return None
        z = mann_kendall(recent)
        if z < t.trend_z:
            return None
        message = (
            f"The gradient norm (pre-clip) grew steadily from {10**early:.3g} to {10**now:.3g} "
            f"({10 ** (now - early):.3g}x its early level) and is still rising (trend z={z:.1f} over the last "
            f"{len(recent)} steps): gradients that pile up (zero_grad() not called, or accumulated on purpose) "
            "or a learning rate that slowly destabilises the run."
        )
        evidence = {
            "grad_norm": 10**now,
            "early_norm": 10**early,
            "ratio": 10 ** (now - early),
            "trend_z": z,
        }
        remedies = [
            "Check that every optimizer's zero_grad() is called once per step (manual optimization: "
            "opt.zero_grad() before manual_backward).",
            *self._remedies(clip_val),
        ]
        return self.diagnosis(decided, message, evidence, remedies=remedies)

    def _not_cleared(
        self, decided: int, leftover: float, clip_val: float | None, manual: bool = False, source: str = ""
    ) -> Diagnosis | None:
        """Gradients still there when a backward should start from zero: they pile up across optimizer steps."""
        t = self.thresholds
        self.uncleared = self.uncleared + 1 if leftover > 0 else 0
        if self.uncleared < t.uncleared_checks:
            return None
        where = (
            f"from one step of {source or 'an optimizer'} to its next (around step {decided}), its gradients were "
            f"never empty before a backward: their norm was at least {leftover:.3g} before each (it should be 0 "
            "before one)"
            if manual
            else f"right after Lightning's zero_grad, before the backward of step {decided}, they still had a norm "
            f"of {leftover:.3g} (it should be 0)"
        )
        message = (
            f"Gradients are not cleared between optimizer steps: {where}, in {self.uncleared} checks in a row. "
            "Every step adds to all the previous ones, so the gradient keeps growing and the optimizer steps with "
            "a stale sum."
        )
        remedies = [*_uncleared_remedies(manual), *self._remedies(clip_val)[:1]]
        return self.diagnosis(
            decided, message, {"leftover_norm": leftover, "checks": self.uncleared}, remedies=remedies
        )

    def _corroborate(self, found: Diagnosis, window_losses: np.ndarray, trade_off: str | None) -> Diagnosis:
        """An error when the loss agrees with the gradients; a warning while it does not (yet), or when it rose but
        ``trade_off`` says one of its terms is still being learnt."""
        t = self.thresholds
        before = self._loss_before()
        finite = window_losses[np.isfinite(window_losses)]
        now = fast_median(finite) if finite.size else math.nan
        rose = before > 0 and now >= t.loss_rise * before
        # A negative loss whose size grew as much runs the other way: towards -inf (a negated loss, or one unbounded
        # below), with the gradients growing along.
        fell = before < 0 and now <= t.loss_rise * before
        evidence = {**found.evidence, "loss_before": before, "loss_now": now}
        if self.loss_bad or (rose and not trade_off):
            self.warned = None
            return dataclasses.replace(found, evidence=evidence, severity=Severity.ERROR)
        if rose:
            note = f" The loss rose with it ({before:.4g} -> {now:.4g}), but {trade_off}."
        elif fell:
            note = (
                f" The loss fell with it ({before:.4g} -> {now:.4g}): a loss heading to -inf as its gradients grow is "
                "usually maximised by mistake (a negated sign) or unbounded below."
            )
            found = dataclasses.replace(found, remedies=[*UNBOUNDED_FALL_REMEDIES, *found.remedies])
        elif math.isfinite(before) and math.isfinite(now):
            note = f" The loss has not followed yet ({before:.4g} -> {now:.4g})."
        else:
            note = ""
        warned = dataclasses.replace(found, evidence=evidence, severity=Severity.WARNING, message=found.message + note)
        self.warned = warned.to_dict()  # plain data: the detector's state stays checkpoint-safe
        return warned

    def _loss_before(self) -> float:
        """The loss's level while the norm was ordinary: the lower of the early and the recent calm level (a loss that
        climbed along with the norm still shows)."""
        levels = [median(x) for x in (self.losses, self.early_losses) if x]
        return min(levels) if levels else math.nan

    def _absorbed(self, spikes: list[list[float]]) -> bool:
        """Whether a burst is a large error the optimizer is reducing rather than an optimisation out of control: the
        loss jumped with its first spike at least as many times as the norm did (the gradient grew no more than the
        error: a moved target, as when a Q-learner copies its online network into its target network), and since then
        the norm has only shrunk and the loss has come down. An explosion's norm outgrows its loss (the weights or
        activations blow up) and it grows or holds; its loss does not come down. A loss not known at a spike's step
        (NaN) decides nothing."""
        first, last = spikes[0], spikes[-1]
        if len(first) < 5 or len(last) < 5:  # rows of a state saved before losses were kept
            return False
        before = self._loss_before()
        if not (before > 0 and first[4] / before >= 10 ** first[2] and first[4] > last[4]):
            return False
        return last[1] < first[1] and all(r[1] <= first[1] for r in spikes)

    def _remedies(self, clip_val: float | None) -> list[str]:
        remedies = list(code_info(self.code).remedies)
        if clip_val:
            fraction = self.clipped / max(self.clip_checked, 1)
            remedies = [
                f"Clipping is on (gradient_clip_val={clip_val:g}) and fired on {fraction:.0%} of steps: "
                "lower the learning rate rather than rely on it.",
                *remedies[1:],
            ]
        return remedies

    def _baseline(self) -> tuple[float, float] | None:
        """(median log10 norm, spike threshold in decades), or None before early_history steps.

        Recomputed every ``refresh_every`` measured rows or optimizer steps, whichever comes first, once the full
        baseline exists: a median of 100 steps hardly moves in 10, and recomputing it on every step would dominate
        the report's cost."""
        t = self.thresholds
        n = len(self.history)
        if n < t.early_history:
            return None
        if n < t.min_history:
            return median(self.history), math.log10(t.severe_factor)
        latest = self.history_steps[-1] if self.history_steps else self.steps_seen
        if (
            len(self.cached) < 5  # none yet, or one saved before the step and the deviation were kept
            or self.steps_seen - self.cached[2] >= t.refresh_every
            or latest - self.cached[3] >= t.refresh_every
        ):
            history = np.fromiter(self.history, dtype=np.float64)
            # The last baseline_window optimizer steps, however many of them were sampled (at least min_history
            # rows): on a stride, the same number of rows would reach back further, to a level the run has left.
            steps = np.fromiter(self.history_steps, dtype=np.int64)
            if len(steps) == len(history):  # a state saved before the steps were kept has rows only
                recent = steps > steps[-1] - t.baseline_window
                history = history[recent] if recent.sum() >= t.min_history else history[-int(t.min_history) :]
            center = fast_median(history)
            spread = MAD_TO_SIGMA * fast_median(np.abs(history - center))
            width = max(math.log10(t.spike_factor), t.z * max(spread, t.min_spread))
            self.cached = [center, width, float(self.steps_seen), float(latest), max(spread, t.min_spread)]
        return self.cached[0], self.cached[1]

    def _deviation(self) -> float:
        """The robust standard deviation of log10(norm) the full baseline was last computed with (``min_spread``
        before one exists: the provisional baseline only counts ``severe_factor`` spikes)."""
        return self.cached[4] if len(self.cached) >= 5 else self.thresholds.min_spread

    def _judge(
        self, decided: int, layer_row: list[float], layers: Sequence[str], clip_val: float | None
    ) -> tuple[Diagnosis, float] | None:
        """The finding the latest row completes, if any, and, when it rests on persistent spikes short of
        ``severe_factor`` alone (not a catastrophe nor the ceiling), the first spike's log10 norm (NaN otherwise)."""
        t = self.thresholds
        spikes = [r for r in self.recent if r[3]]
        latest = self.recent[-1]
        growing = bool(spikes) and (
            spikes[-1][1] - spikes[0][1] >= max(math.log10(t.growth_factor), t.growth_z * self._deviation())
            or (latest[2] >= math.log10(t.severe_factor) and not self._absorbed(spikes))
        )
        over_ceiling = [s for s in self.ceiling_hits if s > latest[0] - t.persist_window]
        catastrophe = latest[3] and latest[2] >= math.log10(t.catastrophe_factor)
        persistent = len(spikes) >= t.spike_persist and growing and latest[3] and not self._usual(spikes)
        if not (catastrophe or persistent or len(over_ceiling) >= t.spike_persist):
            return None
        norm = 10 ** latest[1]
        baseline = 10 ** (latest[1] - latest[2]) if latest[2] else math.nan
        subject, layer_ratio = self._grown_layer(layer_row, layers)
        evidence: dict[str, float] = {
            "grad_norm": norm,
            "baseline_norm": baseline,
            "ratio": norm / baseline if baseline == baseline else math.nan,
            "first_spike_step": spikes[0][0] if spikes else over_ceiling[0],
            "spike_steps": len(spikes),
        }
        if layer_ratio == layer_ratio:
            evidence["layer_ratio"] = layer_ratio
        remedies = self._remedies(clip_val)
        if clip_val:
            fraction = self.clipped / max(self.clip_checked, 1)
            evidence.update({"gradient_clip_val": clip_val, "clip_fraction": fraction})
        if catastrophe and not persistent:
            what = (
                f"The gradient norm (pre-clip) jumped to {norm:.3g} at step {latest[0]:.0f}, "
                f"{norm / baseline:.3g}x its recent baseline of {baseline:.3g}, in a single step"
            )
        elif persistent:
            what = (
                f"The gradient norm (pre-clip) reached {norm:.3g}, {norm / baseline:.0f}x its recent baseline of "
                f"{baseline:.3g}, and is still growing ({len(spikes)} spikes since step {spikes[0][0]:.0f})"
            )
        elif 0 < self.first_ceiling_row <= t.early_history and self.start_loss >= t.large_loss:
            what = (
                f"The gradient norm (pre-clip) has been above the ceiling {t.ceiling:.3g} since the first steps "
                f"({norm:.3g} at step {latest[0]:.0f}) under a loss of {self.start_loss:.3g} or more from the first "
                "batch on: the loss's scale makes the gradients this large (regression targets in raw units, such as "
                "prices or counts, or a loss summed over many elements), not an instability"
            )
            evidence["loss_at_start"] = self.start_loss
            remedies = [SCALE_REMEDY, *remedies]
        elif 1 < self.first_ceiling_row <= t.early_history and math.isfinite(self.start_loss):
            what = (
                f"The gradient norm (pre-clip) went above the ceiling {t.ceiling:.3g} in the first steps and stayed "
                f"there ({norm:.3g} at step {latest[0]:.0f}), while the loss of the first batches was an ordinary "
                f"{self.start_loss:.3g}: the first updates blew the model up, most likely a learning rate far too high"
            )
            evidence["loss_at_start"] = self.start_loss
            remedies = sorted(remedies, key=lambda remedy: not remedy.startswith("Lower the learning rate"))
        else:
            what = (
                f"The gradient norm (pre-clip) stayed above the ceiling {t.ceiling:.3g} "
                f"({norm:.3g} at step {latest[0]:.0f})"
            )
        grew = subject and layer_ratio >= self.thresholds.spike_factor
        where = f"; layer {subject} grew most ({layer_ratio:.3g}x its own baseline)." if grew else "."
        # Spikes short of severe_factor can be a noisy climb to a higher level: re-checked at the window's end.
        on_spikes = (
            persistent
            and not catastrophe
            and len(over_ceiling) < t.spike_persist
            and max(r[2] for r in spikes) < math.log10(t.severe_factor)
        )
        first_spike = spikes[0][1] if on_spikes else math.nan
        return self.diagnosis(decided, what + where, evidence, subject=subject, remedies=remedies), first_spike

    def _usual(self, spikes: list[list[float]]) -> bool:
        """Whether the norms before the recent spikes already came near their level (the spikes' median, within
        ``growth_factor``) often: a norm with two usual levels, as when tasks of different gradient scales take
        turns, whose upper level a median baseline calls a spike every time it comes round. An explosion climbs
        past every earlier level."""
        t = self.thresholds
        earlier = list(self.levels)[-int(t.baseline_window) : -len(self.recent)]
        if len(earlier) < t.min_history:
            return False
        near = median([r[1] for r in spikes]) - math.log10(t.growth_factor)
        return sum(x >= near for x in earlier) >= t.usual_share * len(earlier)

    def _grown_layer(self, layer_row: list[float], layers: Sequence[str]) -> tuple[str, float]:
        if not layer_row or not self.layer_history or len(layers) != len(layer_row):
            return "", math.nan
        base = row_medians(np.asarray(self.layer_history).T)
        growth = np.asarray(layer_row) - base
        growth[~np.isfinite(growth)] = -np.inf
        best = int(np.argmax(growth))
        return layers[best], float(10 ** growth[best])


def _uncleared_remedies(manual: bool) -> list[str]:
    """What to do about gradients that are not cleared between optimizer steps, most likely first."""
    if manual:
        return [
            "Call opt.zero_grad() for each optimizer before its self.manual_backward(...) (or right after its "
            "opt.step()).",
            "To accumulate on purpose, step and zero the gradients together every N batches.",
        ]
    return [
        "Let the optimizer's zero_grad() run: check an overridden optimizer_zero_grad or a zero_grad that was "
        "replaced or skipped.",
        "To accumulate on purpose, use Trainer(accumulate_grad_batches=N) instead.",
    ]
