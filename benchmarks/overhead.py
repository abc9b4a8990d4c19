"""Per-step overhead of LossGuard against no monitoring and against the do-it-yourself Lightning answer.

    python -m benchmarks.overhead                 # table on stdout
    python -m benchmarks.overhead --write-docs    # also update docs/performance.md
    python -m benchmarks.overhead --quick         # a smoke run (CI): few steps, one repetition

Configurations, each timed over the same steady-state steps of a real ``Trainer.fit``:
- ``baseline``: no monitoring callback;
- ``lossguard``: ``LossGuard()`` with its defaults (a report every ``log_every_n_steps`` = 50 steps);
- ``diy``: Lightning's ``grad_norm`` logged every step (the documented workaround since
  ``track_grad_norm`` was removed) plus ``EarlyStopping(check_finite=True)``.
Runs are paired and interleaved (every repetition runs each configuration once, in a shuffled order) and
the reported number is the median over repetitions of ``time(config) / time(baseline)``. Both the process
CPU time and the wall time of the steady-state steps are measured; CPU time is the headline because a
shared host's noise (other tenants, frequency changes) moves wall time by ±10% between runs, while CPU
time of a single-process CPU training run is what the monitoring itself adds.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.utilities import grad_norm
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.docs import replace_section
from lightning_lossguard import LossGuard


class Model(L.LightningModule):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class DoItYourself(Callback):
    """The common recipe: every parameter's gradient norm logged on every step."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        pl_module.log_dict(grad_norm(pl_module, norm_type=2))


class StepClock(Callback):
    """CPU and wall time of the steady-state steps: from batch ``skip`` to the end of training."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = (0.0, 0.0)
        self.seconds = (0.0, 0.0)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.skip:
            self.start = (time.process_time(), time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = (time.process_time() - self.start[0], time.perf_counter() - self.start[1])


@dataclass(frozen=True)
class Workload:
    name: str
    widths: list[int]
    batch: int
    steps: int


WORKLOADS = [
    Workload("small (MLP 32-64-64-10, batch 32)", [32, 64, 64, 10], 32, 1000),
    Workload("medium (MLP 256-1024-1024-10, batch 128)", [256, 1024, 1024, 10], 128, 300),
]
SKIP = 20


HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_validation_end",
    "on_train_end",
)


class Attributed:
    """Time spent inside LossGuard itself during a real fit: its hooks (reports included) and its forward
    marks. Unlike a difference of two noisy end-to-end timings, this does not depend on the host's drift."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, guard: LossGuard) -> LossGuard:
        for name in HOOKS:
            setattr(guard, name, self._timed(getattr(guard, name)))
        return guard

    def _timed(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


ATTRIBUTED = Attributed()


def make_callbacks(config: str) -> list[Callback]:
    if config == "lossguard":
        return [ATTRIBUTED.wrap(LossGuard(verbose=False))]
    if config == "diy":
        return [DoItYourself(), EarlyStopping(monitor="train_loss", check_finite=True, patience=10**9)]
    return []


class LoggedModel(Model):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)  # every configuration logs the loss, as real training does
        return loss


def timed_fit(workload: Workload, config: str, steps: int, root: str) -> tuple[float, float, float]:
    """(CPU, wall, inside-LossGuard) seconds per step of one fit (the last is 0 without LossGuard)."""
    ATTRIBUTED.seconds = 0.0
    torch.manual_seed(0)
    x = torch.randn(workload.batch * 50, workload.widths[0])
    y = torch.randint(0, workload.widths[-1], (len(x),))
    loader = DataLoader(TensorDataset(x, y), batch_size=workload.batch, shuffle=True)
    clock = StepClock(SKIP)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=L.pytorch.loggers.TensorBoardLogger(root, name=config),
        callbacks=[*make_callbacks(config), clock],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(LoggedModel(workload.widths), loader)
    return clock.seconds[0] / (steps - SKIP), clock.seconds[1] / (steps - SKIP), ATTRIBUTED.seconds / steps


Timing = tuple[float, float, float]  # (CPU, wall, inside LossGuard) seconds per step


def measure(workload: Workload, repeats: int, steps: int, configs: list[str]) -> dict[str, list[Timing]]:
    """Per configuration, per repetition, timings from :func:`timed_fit`; repetitions interleave configs."""
    times: dict[str, list[Timing]] = {c: [] for c in configs}
    order = list(configs)
    with tempfile.TemporaryDirectory() as root:
        for _ in range(repeats):
            random.shuffle(order)
            for config in order:
                times[config].append(timed_fit(workload, config, steps, root))
    return times


def median_ratio(times: dict[str, list[Timing]], config: str, kind: int) -> float:
    """Median over repetitions of config / baseline; ``kind`` 0 = CPU time, 1 = wall time."""
    return statistics.median(a[kind] / b[kind] for a, b in zip(times[config], times["baseline"]))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} torch threads, torch {torch.__version__}, Lightning {L.__version__}, CPU only"


def run(repeats: int, quick: bool, log: Callable[[str], None] = print, workloads: list[Workload] | None = None) -> str:
    """Run the workloads (default: all); return the markdown table."""
    configs = ["baseline", "lossguard", "diy"]
    rows = [
        "| workload | baseline ms/step | inside LossGuard, µs/step | LossGuard(), attributed "
        "| LossGuard(), CPU-time ratio | LossGuard(), wall-time ratio | grad_norm every step + EarlyStopping |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in workloads or WORKLOADS:
        steps = SKIP + 30 if quick else workload.steps
        times = measure(workload, repeats, steps, configs)
        base = statistics.median(t[1] for t in times["baseline"]) * 1e3
        inside = statistics.median(t[2] for t in times["lossguard"]) * 1e6
        attributed = 1 + inside / 1e3 / base
        cpu, wall = median_ratio(times, "lossguard", 0), median_ratio(times, "lossguard", 1)
        diy = median_ratio(times, "diy", 1)
        rows.append(
            f"| {workload.name} | {base:.2f} | {inside:.0f} | {attributed:.3f}x | {cpu:.3f}x | {wall:.3f}x "
            f"| {diy:.2f}x |"
        )
        log(rows[-1])
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one repetition")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)  # fixed, so runs are comparable across machines and repetitions
    table = run(1 if args.quick else args.repeats, args.quick)
    print(table)
    if args.write_docs and not args.quick:
        stamp = time.strftime("%Y-%m-%d")
        body = (
            f"Measured {stamp} on {machine()} (`python -m benchmarks.overhead --write-docs`, "
            f"{args.repeats} paired, interleaved repetitions).\n\n{table}"
        )
        replace_section("overhead", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
