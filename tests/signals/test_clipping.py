from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from benchmarks.fault_zoo.scenarios import loader, regression_data
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.clipping import ClipWatch
from tests.conftest import events, trainer


class Plugin:
    def __init__(self) -> None:
        self.clipped: list[tuple[Any, float]] = []

    def clip_gradients(self, optimizer: Any, clip_val: float = 0.0, gradient_clip_algorithm: str = "norm") -> None:
        self.clipped.append((optimizer, clip_val))


def test_the_watch_reads_before_a_positive_clip_and_restores_the_plugin() -> None:
    plugin, seen = Plugin(), []
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    watch = ClipWatch(plugin, seen.append)
    plugin.clip_gradients(optimizer, 0.5, "norm")
    plugin.clip_gradients(optimizer, 0.0)  # Lightning's "no clipping": nothing to read
    plugin.clip_gradients(optimizer, clip_val=2.0)
    assert seen == [optimizer, optimizer]
    assert [v for _, v in plugin.clipped] == [0.5, 0.0, 2.0]  # every call still clips
    watch.remove()
    assert "clip_gradients" not in vars(plugin)  # the class's method again


def test_a_wrapper_already_on_the_plugin_is_put_back() -> None:
    plugin, theirs = Plugin(), []
    plugin.clip_gradients = lambda *a, **k: theirs.append(a)  # type: ignore[method-assign]
    own = plugin.clip_gradients
    watch = ClipWatch(plugin, lambda _: None)
    plugin.clip_gradients(None, 1.0)
    watch.remove()
    assert plugin.clip_gradients is own and len(theirs) == 1


class ManualClipping(L.LightningModule):
    """Manual optimization clipping at 1e-3 a gradient whose norm is ~1-10: what it steps with is clipped."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
        self.norms: list[float] = []  # the unclipped norms, as the module saw them

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()  # a LightningOptimizer: LossGuard unwraps it to match the step's optimizer
        x, y = batch
        loss = 10 * ((self.net(x) - y) ** 2).mean()
        opt.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self.clip_gradients(opt, gradient_clip_val=1e-3, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
        opt.step()  # type: ignore[union-attr]
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_manual_optimization_gradients_are_read_before_the_module_clips_them(tmp_path: Path) -> None:
    module = ManualClipping()
    guard = LossGuard(report_every=5, budget=None, verbose=False)
    t = trainer(tmp_path, [guard], max_steps=30)
    t.fit(module, loader(regression_data()))
    logged = [e.value for e in events(t.logger.log_dir).Scalars("lossguard/grad_norm")]  # type: ignore[union-attr]
    # One point per report, the median of its 5 steps: the unclipped norms (after clipping they would be 1e-3).
    expected = [statistics.median(module.norms[i : i + 5]) for i in range(0, 30, 5)]
    assert logged == pytest.approx(expected, rel=1e-4)
    assert min(logged) > 0.1
    assert "clip_gradients" not in vars(t.precision_plugin)  # the plugin as it was, after the fit
