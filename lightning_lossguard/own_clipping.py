"""Clipping the run does in its own code, told from the gradient norms around sampled optimizer steps.

LossGuard reads gradients in ``on_before_optimizer_step``, before Lightning clips (``gradient_clip_val``) and before
the module's own hook of that name runs. Code ported from a plain PyTorch loop often clips there itself
(``torch.nn.utils.clip_grad_norm_``), or in ``configure_gradient_clipping`` or an ``optimizer_step`` override; the
run's settings do not show it, and remedies told it to "Clip gradients". On sampled steps the norm is read again after
the optimizer step (the gradients are still there): a norm cut to the same value on ``min_clipped`` steps is a clip by
norm at that value. Anything else (a norm that grew across the step, cuts that do not agree) is not read as clipping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

CUT = 0.99
"""A norm after the step below this share of the norm read was cut."""
AGREE = 0.02
"""Cut norms within this relative spread of each other are one clip value."""
MIN_CLIPPED = 2
"""Cut steps needed before the run is taken to clip by norm."""
GREW = 1.01
"""A norm after the step above this multiple of the norm read: the optimizer changes gradients in place (not clipping);
the run is never taken to clip."""


class OwnClipping:
    """The clip value of the run's own norm clipping, once seen (None until then, or for good after a norm grew)."""

    def __init__(self) -> None:
        self.cut: list[float] = []  # the norms after the step where a cut was seen
        self.grew = False

    def observe(self, norms_around_step: Iterable[tuple[float, float]]) -> None:
        """Sampled steps' (norm as read, norm after the optimizer step)."""
        for before, after in norms_around_step:
            if not (math.isfinite(before) and math.isfinite(after) and before > 0):
                continue  # a skipped AMP step, or no gradient
            if after > GREW * before:
                self.grew = True
            elif 0 < after < CUT * before:  # 0: cleared after the step (an optimizer_step override), not clipped
                self.cut.append(after)

    @property
    def level(self) -> float | None:
        if self.grew or len(self.cut) < MIN_CLIPPED:
            return None
        low, high = min(self.cut), max(self.cut)
        return high if high <= low * (1 + AGREE) else None
