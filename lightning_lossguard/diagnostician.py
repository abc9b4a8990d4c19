"""Feeds each window of signals to the enabled detectors and keeps the run's diagnoses.

Applies the user's choices (suppressed codes, severity overrides, thresholds), reports each finding once
(again only if it escalates), and orders findings of one step cause-first. Knows nothing of Lightning.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from lightning_lossguard.catalog import CATALOG, CAUSE_ORDER, cause_rank, code_info
from lightning_lossguard.detectors import (
    DETECTORS,
    DeadGradients,
    ExpensiveLoss,
    ExplodingGradients,
    LossDivergence,
    LossOscillation,
    LossPlateau,
    LossScaleShift,
    LossTermImbalance,
    MemoryGrowth,
    NonfiniteGradients,
    NonfiniteLoss,
    RankStraggler,
    SlowingLossStep,
    TinyUpdates,
    VanishingGradients,
)
from lightning_lossguard.detectors.base import Detector, apply_overrides
from lightning_lossguard.detectors.logged_terms import LoggedTerms
from lightning_lossguard.detectors.rank_attribution import RankAttribution
from lightning_lossguard.detectors.stats import finite, median, model_update_ratio
from lightning_lossguard.detectors.stopped_early import EarlyStop, StoppedRun, judge_stopped_run
from lightning_lossguard.detectors.term_levels import TermLevels
from lightning_lossguard.detectors.val_loss_rising import ModelSelection, ValLossRising
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.own_clipping import OwnClipping
from lightning_lossguard.remedies import tailor
from lightning_lossguard.run_layout import RunLayout, RunSettings
from lightning_lossguard.signals.gradients import NO_GRADIENT
from lightning_lossguard.signals.window import Window

__all__ = ["BROKEN", "CONSEQUENCES", "Diagnostician", "RunLayout", "RunSettings"]


D = TypeVar("D", bound=Detector[Any])
V = TypeVar("V")

BROKEN = frozenset({"nonfinite_loss", "loss_divergence", "exploding_gradients"})
"""Codes after which the run is broken: later gradient and loss-shape findings are its consequences."""

DEFAULT_VAL_METRIC = "val_loss"
VAL_LOSS_SPELLINGS = ("val_loss", "val/loss", "valid_loss", "valid/loss", "validation_loss", "validation/loss")
"""The default ``val_metric`` watches the first of these a run logs (``val/loss`` is lightning-hydra-template's
spelling, and that of many projects built on it); a ``val_metric`` given by name watches that name only."""

CONSEQUENCES = frozenset(
    {
        "nonfinite_gradients",
        "dead_gradients",
        "vanishing_gradients",
        "tiny_updates",
        "loss_plateau",
        "loss_oscillation",
        "loss_scale_shift",
        "prediction_collapse",
    }
)
"""Symptoms a broken run produces (saturated or NaN weights): reported only before it broke."""


def _doubt_after_the_break(diagnosis: Diagnosis) -> bool:
    """An info-level finding of a breaking code after the run broke: the detector's "maybe legitimate" reading of a
    blow-up already diagnosed (its block medians lag the blow-up), a consequence, not news."""
    return diagnosis.code in BROKEN and diagnosis.severity is Severity.INFO


_PER_SUBJECT = {
    "val_loss_rising",
    "memory_growth",
    "loss_divergence",
    "loss_scale_shift",
    "stalled_training",
    "tiny_updates",
}
"""Codes reported once per subject (metric, memory kind, direction) instead of once per run."""


class Diagnostician:
    """Runs the detectors over windows of signals; collects diagnoses (oldest first).

    Args:
        suppress: codes never reported (their detectors are not even built).
        severity: per-code severity overrides.
        thresholds: per-code threshold overrides, e.g. ``{"exploding_gradients": {"spike_factor": 20}}``.
        val_metric: the validation metric watched by ``val_loss_rising`` (also matched per dataloader as
            ``<val_metric>/dataloader_idx_N``; the default also as ``val/loss`` and the other
            :data:`VAL_LOSS_SPELLINGS`).
    """

    def __init__(
        self,
        suppress: Iterable[str] = (),
        severity: Mapping[str, str] | None = None,
        thresholds: Mapping[str, Mapping[str, float]] | None = None,
        val_metric: str = DEFAULT_VAL_METRIC,
    ) -> None:
        self.suppress = frozenset(suppress)
        for code in self.suppress:
            code_info(code)
        self.severity = {code_info(c).code: _severity(s, c) for c, s in (severity or {}).items()}
        thresholds = dict(thresholds or {})
        for code in thresholds:
            code_info(code)
            if code == "stalled_training":
                raise ValueError("stalled_training has no thresholds: its timeout is LossGuard(stall_timeout=...).")
            if code not in DETECTORS:
                raise ValueError(
                    f"{code!r} has no LossGuard thresholds: a monitor's codes take them in the monitor, "
                    "e.g. OutputMonitor(thresholds=...)."
                )
        self._thresholds = {
            code: apply_overrides(cls.Thresholds(), thresholds.get(code, {}), code) for code, cls in DETECTORS.items()
        }
        # val_loss_rising is built per validation metric (judge_validation), the others once.
        self.detectors: dict[str, Detector[Any]] = {
            code: cls(self._thresholds[code])
            for code, cls in DETECTORS.items()
            if code not in self.suppress and code != "val_loss_rising"
        }
        self.val_metric = val_metric
        self._val_names = VAL_LOSS_SPELLINGS if val_metric == DEFAULT_VAL_METRIC else (val_metric,)
        self.val_detectors: dict[str, ValLossRising] = {}
        self.model_selection: dict[str, ModelSelection] = {}  # per validation metric: how the run keeps its best
        self.checkpointed: list[str] = []  # the metrics whose best a checkpoint keeps, in either mode
        self.stopper_values: dict[str, list[float]] = {}  # early stopping's metrics val_loss_rising does not judge
        self.stopped_by = ""  # set when early stopping ended the fit: which stopper, at which step (for the notes)
        self.restart_step: int | None = None  # a later fit of this record started here without a checkpoint
        self.validation_off: str | None = None  # why this fit's validation is not judged (a note says so)
        self.diagnoses: list[Diagnosis] = []
        self._reported: dict[str, int] = {}
        self.consequences: set[str] = set()
        self._train_losses: deque[float] = deque(maxlen=50)
        self._early_losses: list[float] = []
        self._update_ratio = math.nan  # the latest update/weight ratio sampled (median over the model's weights)
        self.settings = RunSettings()
        self.own_clipping = OwnClipping()  # clipping the run's own code does, seen around sampled optimizer steps
        self.steps_judged = 0
        self.batches_judged = 0  # training batches with a loss, over every fit of this record
        divergence = self._thresholds["loss_divergence"]
        self.rank_attribution = RankAttribution(divergence.rise, divergence.block, divergence.start_blocks)  # type: ignore[attr-defined]
        # The terms a step logs but does not hand over, once their weighted sum is found to be the loss.
        self.logged_terms = LoggedTerms(divergence.term_sum_tolerance)  # type: ignore[attr-defined]
        self.term_levels = TermLevels(
            divergence.block,  # type: ignore[attr-defined]
            divergence.term_share,  # type: ignore[attr-defined]
            divergence.term_fall,  # type: ignore[attr-defined]
            divergence.z,  # type: ignore[attr-defined]
        )

    # -- judging ------------------------------------------------------------------------------------
    def _on(self, cls: type[D]) -> D | None:
        """The enabled detector of this class, typed (None when its code is suppressed)."""
        detector = self.detectors.get(cls.code)
        return detector if isinstance(detector, cls) else None

    def judge(
        self, window: Window, layout: RunLayout, learning_rate: float = math.nan, slowest_lr: float = math.nan
    ) -> list[Diagnosis]:
        """Run every enabled detector over one window; return the new diagnoses. ``learning_rate``: the largest of
        the parameter groups' rates; ``slowest_lr``: the smallest (quoted with it when the groups differ)."""
        found: list[Diagnosis] = []
        self.steps_judged += len(window.optimizer_steps) or len(window.batch_steps)
        self.batches_judged += len(window.batch_steps)
        finite_losses = window.loss[np.isfinite(window.loss)].tolist()
        self._train_losses.extend(finite_losses)
        self._early_losses.extend(finite_losses[: max(0, 50 - len(self._early_losses))])
        self.own_clipping.observe(window.norms_around_step)
        self.settings = layout.settings
        clipped = self.settings.clip_val is not None or self.settings.clip_value is not None
        if not clipped and (level := self.own_clipping.level) is not None:
            self.settings = dataclasses.replace(self.settings, clip_val=level, own_clipping=True)
        if window.update_ratio is not None:
            # Every weight counts once (tiny_updates' statistic): zero-initialised biases read near 1 at any rate.
            ratio = model_update_ratio(window.update_ratio, np.asarray(layout.param_sizes, dtype=np.float64))
            self._update_ratio = ratio if math.isfinite(ratio) else self._update_ratio
        if window.rank_loss is not None:
            self.rank_attribution.update(window.batch_steps, window.rank_loss)
        # A run hands its terms over from its first loss or never: without them, the ones it logs, if they add up.
        terms = window.loss_terms or self.logged_terms.terms(window.loss, window.logged_rows, window.logged)
        self.term_levels.extend(terms)
        trade_off = self.term_levels.trade_off()
        found += self._judge_gradients(window, layout, trade_off)
        found += self._judge_loss_curve(window, layout, (learning_rate, slowest_lr), trade_off, explained=found)
        found += self._judge_time_and_memory(window, layout)
        return self.accept(self.rank_attribution.attribute(found))

    def _judge_gradients(self, window: Window, layout: RunLayout, trade_off: str | None) -> list[Diagnosis]:
        opt = window.optimizer_steps
        found: list[Diagnosis] = []
        if (nonfinite_loss := self._on(NonfiniteLoss)) and window.batch_steps:
            found += nonfinite_loss.update(window.batch_steps, window.loss)
        if nonfinite_loss:  # what batches that returned None logged, and their share of the run
            batches = len(window.batch_steps) + window.skipped_batches
            found += nonfinite_loss.skipped(
                window.skipped_read, window.skipped_nonfinite, window.skipped_batches, batches
            )
        if not opt:
            return found
        norms = window.grad_norms
        layers = window.layer_grad_norms(layout.layer_of, len(layout.layers))
        depth = list(layout.layer_of)
        if nonfinite := self._on(NonfiniteGradients):
            bad_loss_steps = {s for s, v in zip(window.batch_steps, window.loss) if not math.isfinite(v)}
            found += nonfinite.update(
                opt,
                window.param_norms,
                layout.param_names,
                depth,
                scaler_active=layout.scaler_active,
                scale=window.scaler_scale,
                nonfinite_loss_steps=bad_loss_steps,
                loss_steps=window.batch_steps,
                losses=window.loss,
            )
        if exploding := self._on(ExplodingGradients):
            found += exploding.update(
                opt,
                norms,
                layers,
                layout.layers,
                layout.clip_val,
                window.loss,
                window.leftover_grad_norm,
                layout.settings.manual,
                _optimizer_name(layout.settings.optimizers, window.leftover_optimizer),
                trade_off,
                loss_steps=window.batch_steps,
            )
        if vanishing := self._on(VanishingGradients):
            found += vanishing.update(
                opt, layers, layout.layers, layout.depth_paths(), norms, window.loss, layout.output_layers()
            )
        if dead := self._on(DeadGradients):
            output_layers = set(layout.output_layers())
            # Steps whose loss is exactly 0 after it was positive: every margin met, nothing to learn (a loss that
            # is 0 from the start is a flat region: those steps stay in).
            rows = _without_zero_loss_steps(window) if self.first_level > 0 else window.param_norms
            share = None if self._zero_loss_at(window, window.sample_step) else window.dead_unit_share
            if any(layout.pruned):  # pruned weights get no gradient by design: not judged (the report notes it)
                rows = _unjudged(rows, layout.pruned)
                share = _unjudged(share, layout.pruned) if share is not None else None
            found += dead.update(
                opt,
                rows,
                layout.param_names,
                layout.param_sizes,
                layout.layer_names_per_param,
                depth,
                share,
                layout.param_units,
                outputs=[i for i, layer in enumerate(layout.layer_of) if layer in output_layers],
                loss_jump=self.early_jump,
                first_share=window.dead_unit_first,
                upstream=layout.upstream,
                pruned=layout.pruned,
                planned_steps=layout.total_steps,
            )
        return found

    def _judge_loss_curve(
        self,
        window: Window,
        layout: RunLayout,
        rates: tuple[float, float],
        trade_off: str | None,
        explained: list[Diagnosis],
    ) -> list[Diagnosis]:
        learning_rate, slowest_lr = rates
        found: list[Diagnosis] = []
        batches = window.batch_steps
        tiny = self._on(TinyUpdates)
        starved = any(starves(d) for d in [*explained, *self.diagnoses])
        if tiny and window.update_ratio is not None and window.sample_step is not None and not starved:
            found += tiny.update(
                window.sample_step,
                window.update_ratio,
                self.train_level,
                learning_rate,
                self.initial_level,
                sizes=np.asarray(layout.param_sizes, dtype=np.float64),
                unmoved=window.unmoved_share,
                weight_dtype=layout.settings.weight_dtype,
                slowest_lr=slowest_lr,
            )
        if tiny and window.unstepped:
            unstepped = {u.name: (u.elements, u.read_by_trained, u.training) for u in window.unstepped}
            found += tiny.update_unstepped(window.last_step, unstepped, layout.model_elements)
        if not batches:
            return found
        if divergence := self._on(LossDivergence):
            found += divergence.update(
                batches,
                window.loss,
                window.optimizer_steps,
                window.grad_norms,
                layout.first_batch_rows,
                trade_off,
            )
        if oscillation := self._on(LossOscillation):
            found += oscillation.update(batches, window.loss, window.learning_rate)
        if plateau := self._on(LossPlateau):
            # The run's length in batches as the callback counts it now (a scheduled accumulation, a reloaded loader
            # and several optimizers' steps under max_steps make Lightning's step estimate another number).
            planned = self.batches_judged + window.batches_left if window.batches_left is not None else None
            found += plateau.update(
                batches,
                window.loss,
                planned,
                self._update_ratio,
                learning_rate,
                layout.trainable_share,
                batches_differ=layout.settings.batches_per_epoch != 1,
                slowest_lr=slowest_lr,
            )
        if (imbalance := self._on(LossTermImbalance)) and window.loss_terms:
            found += imbalance.update(batches, window.loss_terms)
        if shift := self._on(LossScaleShift):
            found += shift.update(batches, window.loss, window.optimizer_steps, window.grad_norms)
        return found

    def _judge_time_and_memory(self, window: Window, layout: RunLayout) -> list[Diagnosis]:
        found: list[Diagnosis] = []
        if window.timing_steps and window.phase_ms:
            loss_ms, label = self._loss_time(window)
            if slowing := self._on(SlowingLossStep):
                forward = window.phase_ms.get("forward")
                measured = forward is not None and bool(np.isfinite(forward).any())
                control = forward if measured else window.phase_ms.get("optimizer")
                found += slowing.update(
                    window.timing_steps,
                    loss_ms,
                    layout.total_steps,
                    label,
                    control_ms=control,
                    control="forward pass" if measured else "optimizer step",
                    cpu_ms=window.cpu_ms.get("loss" if label == "loss" else "training_step"),
                )
            if (expensive := self._on(ExpensiveLoss)) and label.startswith("loss"):
                found += expensive.update(
                    window.timing_steps,
                    window.phase_ms["loss"],
                    window.phase_ms["step"],
                    exact="loss" in window.section_ms,
                    forward_ms=window.phase_ms.get("forward"),
                    cpu_loss_ms=window.cpu_ms.get("loss"),
                    cpu_step_ms=window.cpu_ms.get("step"),
                )
        if (straggler := self._on(RankStraggler)) and window.rank_phase_ms:
            found += straggler.update(window.timing_steps, window.rank_phase_ms)
        host_kind, host_mb, free = "host RSS", window.host_rss_mb, window.allocator_free_mb
        if host_mb is not None and free is not None:
            # Freed memory malloc keeps rises as the allocator settles, and no object holds it. NaN: not read at this
            # report (a costly read is spaced out), so no host sample rather than the RSS under another name.
            host_kind, host_mb = "host memory in use", host_mb - free if math.isfinite(free) else None
        memory = {host_kind: host_mb, "CUDA allocated": window.device_allocated_mb}
        if (growth := self._on(MemoryGrowth)) and any(v is not None for v in memory.values()):
            found += growth.update(window.last_step, memory)
        return found

    def fit_restarted(self, step: int) -> None:
        """A later ``trainer.fit`` of this record continues at ``step`` without a checkpoint: a new optimizer, maybe
        new validation data. The validation curves start over."""
        self.restart_step = step
        for detector in self.val_detectors.values():
            detector.restart()
        self.stopper_values.clear()

    def judge_validation(
        self, step: int, epoch: int, metrics: Mapping[str, float], recent_losses: Sequence[float] | np.ndarray = ()
    ) -> list[Diagnosis]:
        """Add one validation run's metrics (only the watched metric and its per-dataloader variants), compared with
        the training loss's level: the losses judged so far and ``recent_losses``, those recorded since."""
        if "val_loss_rising" in self.suppress or self.validation_off:
            return []
        found: list[Diagnosis] = []
        keep = self._train_losses.maxlen or 50
        recent = finite(recent_losses)[-keep:]  # only the latest make the level: a run validated each batch
        level = median([*self._train_losses, *recent.tolist()][-keep:]) if recent.size else self.train_level
        for name, value in self.watched_metrics(metrics).items():
            detector = self.val_detectors.get(name)
            if detector is None:
                detector = ValLossRising(self._thresholds["val_loss_rising"], metric=name)  # type: ignore[arg-type]
                self.val_detectors[name] = detector
            found += detector.update(step, epoch, float(value), level, self._selection(name))
        return self.accept(found)

    def _selection(self, metric: str) -> ModelSelection | None:
        """How the run keeps its best model on ``metric``; where no checkpoint keeps its lowest, the metric whose
        best one keeps instead (None: nothing known, judged as if nothing kept it)."""
        selection = self.model_selection.get(metric)
        if selection is not None and selection.best_kept:
            return selection
        instead = next((m for m in self.checkpointed if m != metric), "")
        if not instead:
            return selection
        return dataclasses.replace(selection or ModelSelection(), kept_instead=instead)

    def record_stopper_metrics(self, metrics: Mapping[str, float]) -> None:
        """One validation's numbers of the metrics early stopping watches (``metrics``) that ``val_loss_rising`` does
        not judge (an accuracy, a ``val_mae``; the validation loss too when that code is suppressed): kept for
        :meth:`judge_stopped_early`."""
        if self.validation_off:
            return
        judging = "val_loss_rising" not in self.suppress
        for name, value in metrics.items():
            if not (judging and self.watches(name)):
                self.stopper_values.setdefault(name, []).append(float(value))

    def judge_stopped_early(
        self, step: int, stopped: Mapping[str, EarlyStop], trainable_share: float
    ) -> list[Diagnosis]:
        """At the end of a fit that early stopping ended (``stopped``: the metrics it ran out of patience on): a
        training loss that did not fall in a run too short for ``loss_plateau``, or a watched metric that never
        improved on its first evaluation under a negated or rising one
        (:mod:`~lightning_lossguard.detectors.stopped_early`).
        The training loss's levels are the medians of its first and latest batches, up to ``start_batches`` of each
        and a third of a short run (a dozen full-batch steps), so that the two do not overlap."""
        self.stopped_by = "; ".join(
            f"early stopping ended it at step {step}, after {stop.patience} evaluations without a new "
            f"{'highest' if stop.higher_is_better else 'lowest'} {name}"
            for name, stop in stopped.items()
        )
        if self.broken_by is not None or self.validation_off or not self._early_losses:
            return []
        plateau, rising = self._thresholds["loss_plateau"], self._thresholds["val_loss_rising"]
        keep = max(1, min(int(plateau.start_batches), len(self._early_losses) // 3))  # type: ignore[attr-defined]
        first_train, train_now = median(self._early_losses[:keep]), median(list(self._train_losses)[-keep:])
        evaluations = {name: detector.evals[:, 2] for name, detector in self.val_detectors.items()}
        for name, values in self.stopper_values.items():
            evaluations.setdefault(name, np.asarray(values, dtype=np.float64))
        plateau_detector = self._on(LossPlateau)
        plateau_judged = plateau_detector.judged if plateau_detector is not None else True  # suppressed: not ours
        found: list[Diagnosis] = []
        for name, stop in stopped.items():
            if name not in evaluations:
                continue
            run = StoppedRun(
                name,
                stop.patience,
                evaluations[name],
                first_train,
                train_now,
                self._early_losses[0],
                self._update_ratio,
                trainable_share,
                plateau_judged=plateau_judged,
                higher_is_better=stop.higher_is_better,
            )
            diagnosis = judge_stopped_run(run, step, plateau, rising)  # type: ignore[arg-type]
            if diagnosis is not None:
                found.append(diagnosis)
        return self.accept(found)

    def watched_metrics(self, metrics: Mapping[str, V]) -> dict[str, V]:
        """The logged metrics ``val_loss_rising`` judges (per dataloader too): one spelling per run, the one judged
        so far or else the first logged."""
        watched = {name: value for name, value in metrics.items() if self.watches(name)}
        first = _without_dataloader(next(iter(watched))) if watched else ""
        return {name: value for name, value in watched.items() if _without_dataloader(name) == first}

    def watches(self, metric: str) -> bool:
        """Whether ``val_loss_rising`` watches this logged metric (per dataloader too): one spelling per run, the
        first one judged."""
        spelling = _without_dataloader(metric)
        judged = {_without_dataloader(name) for name in self.val_detectors}
        return spelling in self._val_names and (not judged or spelling in judged)

    @property
    def scale_shift(self) -> LossScaleShift | None:
        """The loss_scale_shift detector (it compares consecutive fits of one model)."""
        return self._on(LossScaleShift)

    @property
    def broken_by(self) -> Diagnosis | None:
        """The first error after which the run counts as broken (a corroborated blow-up), if any."""
        return next((d for d in self.diagnoses if d.code in BROKEN and d.severity is Severity.ERROR), None)

    def band(self) -> tuple[float, float] | None:
        """The gradient norm's current normal band (for the dashboard), when the baseline exists."""
        detector = self._on(ExplodingGradients)
        return detector.band() if detector is not None else None

    def _zero_loss_at(self, window: Window, step: int | None) -> bool:
        """The loss of the batch at ``step`` was exactly 0 after the run started positive: every gradient is 0 then,
        and a sample of "dead units" taken there says nothing."""
        if step is None or not self.first_level > 0:
            return False
        return any(s == step and v == 0.0 for s, v in zip(window.batch_steps, window.loss))

    def new_layout(self) -> None:
        """The watched parameters changed (added, unfrozen, frozen): per-parameter and per-layer state starts over,
        and so does the gradient-norm baseline (a different set of parameters has a different norm)."""
        for cls in (ExplodingGradients, VanishingGradients, DeadGradients):
            if cls.code in self.detectors:
                self.detectors[cls.code] = cls(self._thresholds[cls.code])  # type: ignore[arg-type]

    def unjudged(
        self,
        layout: RunLayout,
        timed_forward: bool = True,
        gradients_watched: bool = True,
        budget: tuple[float, int] | None = None,
        unhooked_because: str = "",
        timed_backward: bool = True,
    ) -> list[str]:
        """Plain notes on what could not be judged: runs too short, signals that never arrived. Without watched
        gradients (``gradients_watched`` False: a coverage gap says why) the gradient codes are not "too short".
        ``timed_forward``: a hooked forward call was seen in a training batch; ``unhooked_because``: why the forward
        was not hooked at all ("": it was), which says why the loss time is missing. ``timed_backward``: a backward
        ran through Lightning on a timed batch (where the loss's time ends); without one, expensive_loss is not
        "too short" either.
        ``budget`` (its share, the stride it chose): past a stride of 1, the run's length is not the only reason."""
        notes: list[str] = []
        broken = self.broken_by
        if broken is not None:
            # A code held back once and then reported (escalated to an error) is not "not reported".
            unreported = self.consequences - {d.code for d in self.diagnoses}
            if unreported:
                notes.append(
                    f"The run broke at step {broken.step} ({broken.code}); its later symptoms are not reported "
                    f"separately: {', '.join(sorted(unreported))}."
                )
            return notes  # "too short to judge" means nothing for a broken run
        short = []
        gradient_codes = {"exploding_gradients", "vanishing_gradients", "dead_gradients", "tiny_updates"}
        reported = {d.code for d in self.diagnoses}
        for code, detector in self.detectors.items():
            if code in reported or (code in gradient_codes and (not layout.param_names or not gradients_watched)):
                continue
            if code == ExpensiveLoss.code and not timed_backward:
                continue
            reason = detector.unjudged()
            if reason:
                short.append(f"{code} ({reason})")
        if short:
            why = f" ({self.stopped_by})" if self.stopped_by else ""
            note = f"Run too short to judge{why}: " + "; ".join(short) + "."
            if budget is not None and budget[1] > 1:
                share, stride = budget
                note += (
                    f" The cost budget timed one batch in {stride} and measured gradients on one optimizer step in "
                    f"{stride}, to stay within {share:.0%} of the step time: a larger LossGuard(budget=...) "
                    "measures more."
                )
            notes.append(note)
        if "val_loss_rising" not in self.suppress and not self.validation_off:
            if not self.val_detectors:
                others = f" (nor {', '.join(self._val_names[1:])})" if len(self._val_names) > 1 else ""
                notes.append(
                    f"No '{self.val_metric}'{others} was logged in validation (or there was no validation): "
                    f"val_loss_rising was not judged. Log it with self.log('{self.val_metric}', loss) in "
                    "validation_step, or set LossGuard(val_metric=...)."
                )
            else:
                for name, detector in self.val_detectors.items():
                    reason = detector.unjudged()
                    if reason:
                        notes.append(f"val_loss_rising for '{name}' not judged: {reason}.")
        expensive = self._on(ExpensiveLoss)
        if expensive is None or expensive.loss_ms or not self.steps_judged:
            return notes
        if not timed_backward:
            notes.append(
                "No backward ran through Lightning (manual optimization whose step writes the gradients itself, "
                "without self.manual_backward, as per-example gradients from torch.func do): the loss's time was not "
                "measured, and expensive_loss was not judged."
            )
        elif not timed_forward:
            why = unhooked_because or "the model's forward was not called from training_step"
            notes.append(
                f"The loss time could not be separated from the forward pass ({why}): expensive_loss needs "
                "`with lightning_lossguard.timed('loss'):` around the loss."
            )
        return notes

    def hindsight(self) -> list[str]:
        """End-of-fit notes on reported warnings that the run undid later (a validation rise it came back from, a
        training loss that came back down or began to fall); the diagnoses stand as they were reported. None for a
        run that broke (:attr:`broken_by`): a loss that comes back after a corroborated blow-up is a model that
        collapsed (a learning rate x1000 that leaves only the output bias sits near the start's loss), not a
        transient."""
        notes: list[str] = []
        if self.broken_by is not None:
            return notes
        for diagnosis in self.diagnoses:
            detector: Detector[Any] | None = (
                self.val_detectors.get(diagnosis.subject)
                if diagnosis.code == "val_loss_rising"
                else self.detectors.get(diagnosis.code)
            )
            if detector is not None and diagnosis.severity.at_least(Severity.WARNING):
                note = detector.undone_by(diagnosis)
                if note is not None:
                    notes.append(note)
        return notes

    @property
    def train_level(self) -> float:
        """Robust recent training-loss level (median of the last 50 finite batch losses)."""
        return median(self._train_losses) if self._train_losses else math.nan

    @property
    def first_level(self) -> float:
        """The loss of the very first batches (median of the first 3): the level before anything happened. When the
        first update blew the loss up (the next two batches both ``blowup`` times the first, by dead_gradients'
        thresholds), the first batch alone: the median would be the blow-up's level."""
        if not self._early_losses:
            return math.nan
        first, *after = self._early_losses[:3]
        blowup = self._thresholds["dead_gradients"].blowup  # type: ignore[attr-defined]
        if first > 0 and len(after) == 2 and min(after) >= blowup * first:
            return first
        return median(self._early_losses[:3])

    @property
    def early_jump(self) -> float:
        """How far the loss shot up in the first steps: the level of batches 10-30 over the first batches' level,
        when it is still that high now (NaN before 30 batches)."""
        if len(self._early_losses) < 30 or not self.first_level > 0:
            return math.nan
        jump = median(self._early_losses[10:30]) / self.first_level
        return min(jump, self.train_level / self.first_level)

    @property
    def initial_level(self) -> float:
        """Training-loss level at the very start (median of the first 5 finite batch losses): before a fast fall."""
        return median(self._early_losses[:5]) if self._early_losses else math.nan

    @staticmethod
    def _loss_time(window: Window) -> tuple[np.ndarray, str]:
        loss = window.phase_ms.get("loss")
        if loss is not None and np.isfinite(loss).any():
            return loss, "loss"
        return window.phase_ms["training_step"], "training_step (forward + loss)"

    # -- reporting policy -----------------------------------------------------------------------------
    def shown(self, diagnosis: Diagnosis) -> Diagnosis | None:
        """``diagnosis`` as it would be reported (severity override applied), None when its code is suppressed;
        not kept (a preview for a report written before the diagnosis is final)."""
        if diagnosis.code in self.suppress:
            return None
        if diagnosis.code in self.severity:
            diagnosis = dataclasses.replace(diagnosis, severity=self.severity[diagnosis.code])
        return diagnosis

    def accept(self, found: list[Diagnosis]) -> list[Diagnosis]:
        """Apply suppression, severity overrides, report-once and cause-first order; keep and return the news."""
        new: list[Diagnosis] = []
        for diagnosis in sorted(found, key=cause_rank):
            if diagnosis.code in self.suppress:
                continue
            broken = self.broken_by is not None
            if broken and (diagnosis.code in CONSEQUENCES or _doubt_after_the_break(diagnosis)):
                self.consequences.add(diagnosis.code)
                continue
            if diagnosis.code in self.severity:
                diagnosis = dataclasses.replace(diagnosis, severity=self.severity[diagnosis.code])
            diagnosis = tailor(diagnosis, self.settings)
            key = f"{diagnosis.code}|{diagnosis.subject}" if diagnosis.code in _PER_SUBJECT else diagnosis.code
            if key in self._reported and self._reported[key] >= diagnosis.severity.rank:
                continue  # reported already; only an escalation is news
            self._reported[key] = diagnosis.severity.rank
            self.diagnoses.append(diagnosis)
            new.append(diagnosis)
        return new

    # -- checkpointing --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "detectors": {code: det.state_dict() for code, det in self.detectors.items()},
            "val_detectors": {name: det.state_dict() for name, det in self.val_detectors.items()},
            "stopper_values": {name: list(values) for name, values in self.stopper_values.items()},
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "reported": dict(self._reported),
            "consequences": sorted(self.consequences),
            "train_losses": list(self._train_losses),
            "early_losses": list(self._early_losses),
            "steps_judged": self.steps_judged,
            "batches_judged": self.batches_judged,
            "rank_attribution": self.rank_attribution.state_dict(),
            "term_levels": self.term_levels.state_dict(),
            "logged_terms": self.logged_terms.state_dict(),
            "restart_step": self.restart_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for code, det_state in state.get("detectors", {}).items():
            if code in self.detectors:
                self.detectors[code].load_state_dict(det_state)
        for name, det_state in state.get("val_detectors", {}).items():
            detector = ValLossRising(self._thresholds["val_loss_rising"], metric=name)  # type: ignore[arg-type]
            detector.load_state_dict(det_state)
            self.val_detectors[name] = detector
        self.stopper_values = {str(k): [float(v) for v in vs] for k, vs in state.get("stopper_values", {}).items()}
        self.diagnoses = [Diagnosis.from_dict(d) for d in state.get("diagnoses", [])]
        self._reported = {str(k): int(v) for k, v in state.get("reported", {}).items()}
        for key in [k for k in self._reported if k in _PER_SUBJECT]:  # saved before the code went per subject:
            self._reported.setdefault(f"{key}|", self._reported[key])  # what it reported was the subject-less one
        self.consequences = set(state.get("consequences", []))
        self._train_losses = deque(state.get("train_losses", []), maxlen=50)
        self._early_losses = list(state.get("early_losses", []))
        self.steps_judged = int(state.get("steps_judged", 0))
        self.batches_judged = int(state.get("batches_judged", 0))
        self.rank_attribution.load_state_dict(state.get("rank_attribution", {}))
        self.term_levels.load_state_dict(state.get("term_levels", {}))
        self.logged_terms.load_state_dict(state.get("logged_terms", {}))
        restart = state.get("restart_step")
        self.restart_step = int(restart) if restart is not None else None


def _without_zero_loss_steps(window: Window) -> np.ndarray:
    """Gradient rows, with the steps whose loss was exactly 0 marked "no gradient": a triplet or hinge loss with
    every margin met has nothing to learn from that batch, which is not a dead unit."""
    if not window.loss.size or not (window.loss == 0.0).any():
        return window.param_norms
    nonzero = {s for s, v in zip(window.batch_steps, window.loss) if v != 0.0}
    zero = {s for s, v in zip(window.batch_steps, window.loss) if v == 0.0} - nonzero
    rows = window.param_norms.copy()
    for i, step in enumerate(window.optimizer_steps):
        if step in zero:
            rows[i] = NO_GRADIENT
    return rows


def _without_dataloader(metric: str) -> str:
    """``val_loss/dataloader_idx_1`` -> ``val_loss``."""
    return metric.split("/dataloader_idx_")[0]


def _severity(value: str, code: str) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Severity)
        raise ValueError(f"Severity for {code!r} must be one of {allowed}; got {value!r}.") from None


assert set(CAUSE_ORDER) == set(CATALOG), "every code needs a place in CAUSE_ORDER"


def starves(diagnosis: Diagnosis) -> bool:
    """Whether ``diagnosis`` explains small updates better than a low learning rate does (``tiny_updates`` then
    stays quiet): dead or vanishing gradients. Not parameters cut off from the loss: the update ratio leaves out the
    parameters an optimizer step did not touch, so what it measures is the rest's steps."""
    return diagnosis.code in ("dead_gradients", "vanishing_gradients") and "absent_params" not in diagnosis.evidence


def _unjudged(values: np.ndarray, columns: Sequence[bool]) -> np.ndarray:
    """``values`` (per-parameter rows, or one row) with the ``columns`` set to "no gradient": not judged."""
    if len(columns) != values.shape[-1]:
        return values
    values = np.array(values, dtype=np.float64)
    values[..., np.asarray(columns, dtype=bool)] = NO_GRADIENT
    return values


def _optimizer_name(optimizers: Sequence[str], index: int | None) -> str:
    """``optimizer 1 (Adam)``: how a diagnosis names one of the run's optimizers ("" when unknown)."""
    if index is None or not 0 <= index < len(optimizers):
        return ""
    return f"optimizer {index} ({optimizers[index]})"
