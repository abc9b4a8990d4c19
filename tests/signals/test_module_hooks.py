"""Forward timing hooks: on for timed batches only, except where a hook ran under torch.compile; and in a real
strided fit, untimed batches run with no hook while timed ones still measure their forward."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard
from lightning_lossguard.signals.clock import HostClock
from lightning_lossguard.signals.module_hooks import ForwardHooks
from lightning_lossguard.signals.step_timer import StepTimer
from tests.conftest import trainer


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def hooked(module: nn.Module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def one_batch(net: nn.Module, timer: StepTimer, step: int) -> list[float]:
    timer.batch_start(step)
    net(torch.zeros(1, 4))
    timer.batch_end()
    return timer.drain()[1]["forward"]


def test_hooks_come_off_between_timed_batches_and_back_on_for_them() -> None:
    net, timer = Net(), StepTimer(HostClock())
    hooks = ForwardHooks(net, timer)
    assert len(one_batch(net, timer, 0)) == 1
    hooks.prune()  # the Linear child is never outermost: only the module's own hooks stay
    assert hooked(net) == 2 and hooked(net.body) == 0
    hooks.timing(False)
    assert hooked(net) == 0
    hooks.timing(True)
    assert hooked(net) == 2 and one_batch(net, timer, 1)[0] > 0
    hooks.remove()
    assert hooked(net) == 0


def test_a_hook_that_ran_under_torch_compile_stays_on() -> None:
    # Adding or removing a hook would invalidate the compiled code's guards and recompile it every few batches.
    net, timer = Net(), StepTimer(HostClock())
    hooks = ForwardHooks(net, timer)
    compiled = torch.compile(net, backend="eager")
    timer.batch_start(0)
    compiled(torch.zeros(1, 4))
    timer.batch_end()
    hooks.timing(False)
    assert hooked(net) == 2


class HookCount(L.Callback):
    """Runs after LossGuard's batch start: how many forward hooks the module has for each batch."""

    def __init__(self, guard: LossGuard) -> None:
        self.guard = guard
        self.per_batch: list[int] = []
        self.forward_marks: list[int] = []  # per timed batch, its forward spans (taken before its backward)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        self.per_batch.append(hooked(pl_module))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        assert self.guard._recorder is not None
        current = self.guard._recorder.timer._current
        if current is not None:
            self.forward_marks.append(len(current.forward))


def test_a_strided_run_times_forward_on_timed_batches_only(tmp_path: Path) -> None:
    run = build("adam_regression")
    guard = LossGuard(budget=1e-6, report_every=40, verbose=False)
    count = HookCount(guard)
    trainer(tmp_path, [guard, count], max_steps=200).fit(run.module, run.train)
    assert guard._budget is not None and guard._budget.stride > 1
    assert count.per_batch[:40] == [2] * 40  # the first interval times every batch
    assert count.per_batch.count(0) > 100  # most batches after it run PyTorch's hook-free call
    timed = count.per_batch.count(2)
    assert len(count.forward_marks) == timed and set(count.forward_marks) == {1}  # each timed batch: one forward


class CompiledBody(L.LightningModule):
    """``self.net = torch.compile(net)``: the usual way to compile part of a LightningModule (``hidden`` layers of
    16 tanh units between the input and the output layer)."""

    def __init__(self, backend: Any, hidden: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(8, 16), nn.Tanh()]
        for _ in range(hidden - 1):
            layers += [nn.Linear(16, 16), nn.Tanh()]
        self.net = torch.compile(nn.Sequential(*layers, nn.Linear(16, 1)), backend=backend)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def compilations_without_and_with(
    tmp_path: Path, build: Callable[[Any], L.LightningModule], steps: int
) -> tuple[dict[str, int], LossGuard]:
    """Fits of ``build(backend)`` without and with LossGuard, each compiled by a backend that counts its
    compilations; the counts and the LossGuard."""
    compilations: dict[str, int] = {}

    def counting(name: str) -> Any:
        def backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
            compilations[name] = compilations.get(name, 0) + 1
            return graph.forward

        return backend

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(256, 8, generator=g), torch.randn(256, generator=g))
    guard = LossGuard(verbose=False, report_every=10)
    for name in ("without", "with"):
        torch._dynamo.reset()
        callbacks = [guard] if name == "with" else []
        loader = torch.utils.data.DataLoader(data, batch_size=16)
        trainer(tmp_path / name, callbacks, max_steps=steps).fit(build(counting(name)), loader)
    return compilations, guard


def test_a_compiled_module_is_not_compiled_again_because_of_lossguard(tmp_path: Path) -> None:
    # The first batch's execution-order hooks inside the compiled module, taken off after it, made it compile a
    # second time: on a large model, a minute more per run. The order is still known, under the user's names.
    compilations, guard = compilations_without_and_with(tmp_path, CompiledBody, steps=40)
    assert compilations["with"] == compilations["without"], compilations
    assert guard._layout.layers == ("net.0", "net.2")


def test_a_fused_compiled_backward_is_said_to_hide_the_depth_of_its_layers(tmp_path: Path) -> None:
    # AOTAutograd (inductor's front end; aot_eager without the C++ compile) turns the compiled module's backward into
    # one autograd node: no gradient path between its layers, so the depth rule is silent. The report says so; where
    # the graph is intact (the eager backend), the paths are known and nothing is said.
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(256, 8, generator=g), torch.randn(256, generator=g))
    notes = {}
    for backend in ("aot_eager", "eager"):
        torch._dynamo.reset()
        guard = LossGuard(verbose=False, report_every=10)
        loader = torch.utils.data.DataLoader(data, batch_size=16)
        trainer(tmp_path / backend, [guard], max_steps=20).fit(CompiledBody(backend, hidden=2), loader)
        notes[backend] = [n for n in guard.notes if "cannot compare the depth of net's 3 layers" in n]
        assert guard.diagnoses == []
    assert len(notes["aot_eager"]) == 1 and notes["eager"] == [], notes


class CompiledWhole(L.LightningModule):
    """``trainer.fit(torch.compile(model))``: Lightning compiles the module's ``forward`` and ``training_step``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x).squeeze(1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_a_model_whose_steps_lightning_compiled_gets_no_hook_and_the_report_says_what_that_costs(
    tmp_path: Path,
) -> None:
    # Its forward hooks and the first batch's execution-order hooks ran inside the compiled step: a graph break at
    # each hooked call (Dynamo cannot trace the clock) and two more compilations (hooks added, then taken off).
    compilations, guard = compilations_without_and_with(
        tmp_path, lambda backend: torch.compile(CompiledWhole(), backend=backend), steps=60
    )
    assert compilations["with"] == compilations["without"] == 1, compilations
    assert guard._layout.layers == ("body.0", "body.2", "head")  # registration order: the right one here
    assert any("the training step is compiled, by trainer.fit(torch.compile(model))" in n for n in guard.notes)
    assert guard.diagnoses == [] and not guard.gaps
