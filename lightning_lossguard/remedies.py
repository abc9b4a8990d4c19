"""Remedies that fit the run: never advise what the run already does (clipping that is on, momentum that
plain SGD does not have, a schedule that is already there). Pure: a diagnosis and the run's settings in, the
diagnosis with its remedies rewritten out."""

from __future__ import annotations

import dataclasses
import math

from lightning_lossguard.diagnosis import Diagnosis
from lightning_lossguard.run_layout import RunSettings


def _adds_clipping(remedy: str) -> bool:
    return remedy.startswith("Clip gradients") or ("gradient_clip_val=1.0" in remedy and "Clipping is on" not in remedy)


def _clipping(settings: RunSettings) -> str | None:
    """How the run clips its gradients, in a few words (None: it does not, as far as LossGuard can tell)."""
    if settings.clip_val is not None:
        if settings.own_clipping:
            return f"the run's own code clips the norm to {settings.clip_val:.3g}"
        return f"gradient_clip_val={settings.clip_val:g}"
    if settings.clip_value is not None:
        return f"by value: gradient_clip_val={settings.clip_value:g}, gradient_clip_algorithm='value'"
    return None


def tailor(diagnosis: Diagnosis, settings: RunSettings) -> Diagnosis:
    """``diagnosis`` with remedies that contradict ``settings`` rewritten, most likely still first."""
    remedies: list[str] = []
    clipping = _clipping(settings)
    for remedy in diagnosis.remedies:
        if clipping is not None and _adds_clipping(remedy):
            remedy = f"Clipping is already on ({clipping}): lower the learning rate rather than rely on it."
        elif "momentum" in remedy and math.isfinite(settings.momentum) and settings.momentum == 0:
            if remedy.startswith("Lower the learning rate or the momentum"):
                remedy = "Lower the learning rate."
            else:
                continue  # advice about momentum for an optimizer that has none
        elif settings.scheduler and remedy.startswith("Use an LR schedule"):
            remedy = "Check the LR schedule: its peak (after warm-up, or at each restart) may be too high."
        if remedy not in remedies:
            remedies.append(remedy)
    if clipping is not None and any(r.startswith("Clipping is") for r in remedies):
        # One clipping remedy is enough (a detector may already have said how often clipping fired).
        first = next(r for r in remedies if r.startswith("Clipping is"))
        remedies = [r for r in remedies if not r.startswith("Clipping is") or r is first]
    if remedies == diagnosis.remedies:
        return diagnosis
    return dataclasses.replace(diagnosis, remedies=remedies)
