"""LossGuard's tab in TensorBoard: a dynamic plugin, registered with the ``tensorboard_plugins`` entry point.

``tensorboard --logdir lightning_logs`` shows a **LossGuard** tab whenever a run holds LossGuard data. Importing
this package loads neither torch nor Lightning, so it costs TensorBoard nothing at start-up.
"""

from lightning_lossguard.tensorboard_plugin.plugin import LossGuardPlugin

__all__ = ["LossGuardPlugin"]
