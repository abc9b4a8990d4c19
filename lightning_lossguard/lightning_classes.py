"""Lightning's classes from either of its packages: ``lightning.pytorch`` and the standalone ``pytorch_lightning``.

Much Lightning code imports the standalone package (``import pytorch_lightning as pl``). The two packages hold
copies of the same code, so a ``pytorch_lightning`` Trainer hands LossGuard its own classes (its TensorBoard
logger, its GradScaler plugin, its wrapped optimizers), none of them an instance of the ``lightning.pytorch``
twin, and its ``LightningCLI`` accepts only subclasses of its own ``Callback``. LossGuard checks against both.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # its hooks name its own Trainer and LightningModule: to mypy, other types than LossGuard's

    class StandaloneCallback:
        """The standalone package's ``Callback``, as far as type checking goes."""

else:
    try:  # installed with ``lightning`` (a dependency of it); importing it after lightning.pytorch costs ~0.1 s
        from pytorch_lightning.callbacks import Callback as StandaloneCallback
    except ImportError:  # pragma: no cover - a Lightning without the standalone package

        class StandaloneCallback:
            """Stands in for the standalone package's ``Callback`` where that package is not installed."""


T = TypeVar("T")

_FOUND: dict[type, tuple[type, ...]] = {}


def lightning_classes(cls: type[T]) -> tuple[type[T], ...]:
    """``cls``, a ``lightning.pytorch`` class, and its copy in the standalone package when that is installed: a
    tuple for ``isinstance``. Typed as ``cls``: the copy has the same attributes."""
    if cls not in _FOUND:
        found: tuple[type, ...] = (cls,)
        twin_module = cls.__module__.replace("lightning.pytorch", "pytorch_lightning", 1)
        # Not installed, or a version without it: its runs cannot use it either.
        with contextlib.suppress(ImportError, AttributeError):
            found += (getattr(importlib.import_module(twin_module), cls.__qualname__),)
        _FOUND[cls] = found
    return _FOUND[cls]
