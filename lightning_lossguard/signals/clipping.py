"""The gradients of a manually optimized module, read before the module clips them.

Under manual optimization the module clips inside ``training_step`` (``self.clip_gradients(opt, ...)``), before
``opt.step()`` and so before ``on_before_optimizer_step``, where LossGuard reads gradients: it would see only
clipped norms, and a blow-up would stay under the clip value (a bilevel search clipping at 5 hid a 1000x learning
rate that way). ``LightningModule.clip_gradients`` ends in the precision plugin's ``clip_gradients``; wrapping that
method on the trainer's plugin instance (never the user's module, which may be pickled) lets LossGuard read the
norms just before they are clipped. Automatic optimization needs none of this: Lightning calls
``on_before_optimizer_step`` before it clips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_NAME = "clip_gradients"


class ClipWatch:
    """Calls ``before_clip(optimizer)`` (as the module passed it: a Lightning wrapper or the torch optimizer)
    each time the plugin is about to clip by a positive value; :meth:`remove` restores the plugin as it was."""

    def __init__(self, plugin: Any, before_clip: Callable[[Any], None]) -> None:
        self._plugin = plugin
        self._shadowed = vars(plugin).get(_NAME)  # someone else's wrapper on the instance, put back on removal
        original = getattr(plugin, _NAME)

        def clip_gradients(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            clip_val = args[0] if args else kwargs.get("clip_val", 0.0)
            if isinstance(clip_val, (int, float)) and clip_val > 0:
                before_clip(optimizer)
            return original(optimizer, *args, **kwargs)

        self._wrapper = clip_gradients
        setattr(plugin, _NAME, clip_gradients)

    def remove(self) -> None:
        if vars(self._plugin).get(_NAME) is not self._wrapper:
            return  # replaced since: leave what is there
        if self._shadowed is None:
            delattr(self._plugin, _NAME)
        else:
            setattr(self._plugin, _NAME, self._shadowed)
