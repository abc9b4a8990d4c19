"""What LossGuard costs per training step, on realistic workloads, against no monitoring and the DIY recipe.

    python -m benchmarks.overhead                 # tables on stdout
    python -m benchmarks.overhead --write-docs    # also update docs/performance.md
    python -m benchmarks.overhead --quick         # a smoke run (CI): few steps, one repetition
    python -m benchmarks.overhead --device cuda --write-docs   # on a GPU: per-step and per-kind tables (own section)
    python -m benchmarks.overhead --long-run --write-docs      # only the judging table of long runs (own section)

Configurations, each a real ``Trainer.fit`` timed over the same steady-state steps:
- ``baseline``: no monitoring callback (every configuration logs the loss with ``self.log``, as real code does);
- ``lossguard``: ``LossGuard()`` with its defaults (a 1% cost budget, reports every ``log_every_n_steps``);
- ``diy``: Lightning's ``grad_norm`` logged every step (the documented replacement for ``track_grad_norm``)
  plus ``EarlyStopping(check_finite=True)``: what a user would otherwise write.

Two measures of LossGuard's cost:
- **attributed**: time spent inside LossGuard (its callback hooks, reports included, plus Lightning's dispatch
  of each hook call to it; and its module hooks: the hook functions plus PyTorch's dispatch of a hooked call),
  divided by the baseline step time. It does not depend on the host's drift, so it resolves 0.1%. Time in
  Python's garbage collector is left out (a collection lands in whatever code allocates; the baseline pays it
  too).
- **end to end**: runs are paired and interleaved (each repetition runs every configuration once, in a
  shuffled order); the ratio is the median over repetitions of ``time(config) / time(baseline)``, in
  process CPU time (one thread: a shared host moves wall time by several percent between runs). On a GPU
  (``--device cuda``) both measures use wall time, the device synchronised at the marks: the host's CPU time
  leaves the device's work out. There the attributed cost is host time inside LossGuard over the step's wall
  time: exact when the host is the bottleneck (small models), an upper bound when the device is.

Three more tables: the whole of a 400-step run of the ~1 ms model and of the conv autoencoder (start-up and every
report included, what a CI smoke run pays); the time inside LossGuard per batch by what it did there (a plain
batch, a gradient pass, a report) on models of 2 to 2,002 parameter tensors; and the time of one report and of one
validation, and the detectors' memory, as a run gets long (the detectors alone, up to 100k steps: its own section
of the doc, rerun alone with ``--long-run``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import logging
import math
import platform
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.trainer import call as lightning_call
from lightning.pytorch.utilities import grad_norm
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmarks.docs import replace_section
from lightning_lossguard import LossGuard, OutputMonitor
from lightning_lossguard.diagnostician import Diagnostician, RunLayout
from lightning_lossguard.signals import step_timer
from lightning_lossguard.signals.budget import own_mark, own_since, watch_gc
from lightning_lossguard.signals.window import Window

# -- workloads: the patterns of the healthy corpus, sized from ~1 ms to ~20 ms per step on one CPU thread ---------


class Classifier(L.LightningModule):
    """A network ``net`` trained with cross-entropy (or MSE for a regression head)."""

    def __init__(self, net: nn.Module, regression: bool = False) -> None:
        super().__init__()
        self.net = net
        self.regression = regression

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        loss = F.mse_loss(out, y) if self.regression else F.cross_entropy(out.flatten(0, -2), y.reshape(-1))
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class AutoEncoder(L.LightningModule):
    """A convolutional autoencoder: encoder and decoder called in turn (two outermost forwards per step). With
    ``outputs``, its step returns the reconstruction and the input as ``preds`` and ``target`` (for OutputMonitor)."""

    def __init__(self, outputs: bool = False) -> None:
        super().__init__()
        self.outputs = outputs
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        (x,) = batch
        reconstruction = self.decoder(self.encoder(x))
        loss = F.mse_loss(reconstruction, x)
        self.log("train_loss", loss)
        return {"loss": loss, "preds": reconstruction, "target": x} if self.outputs else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class LanguageModel(nn.Module):
    def __init__(self, vocab: int, width: int, kind: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.body: nn.Module
        if kind == "lstm":
            self.body = nn.LSTM(width, width, num_layers=2, batch_first=True)
        else:
            layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, batch_first=True)
            self.body = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.kind = kind

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = self.body(h)[0] if self.kind == "lstm" else self.body(h, is_causal=False)
        return self.head(h)  # type: ignore[no-any-return]


def mlp(widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def deep_narrow(depth: int, width: int) -> nn.Module:
    """``depth`` small linear layers: 2 x ``depth`` parameter tensors, so a per-tensor cost would show."""
    return nn.Sequential(
        nn.Linear(16, width), *(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))
    )


def classification(n: int, dim: int, classes: int) -> Dataset[Any]:
    x = torch.randn(n, dim)
    return TensorDataset(x, torch.randint(0, classes, (n,)))


def tokens(n: int, length: int, vocab: int) -> Dataset[Any]:
    x = torch.randint(0, vocab, (n, length + 1))
    return TensorDataset(x[:, :-1], x[:, 1:])


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], L.LightningModule]
    data: Callable[[], Dataset[Any]]
    batch: int
    steps: int
    repeats: int = 0
    """Repetitions of this workload, at most (0: the table's): a long run of a slow model pairs fewer fits."""
    diy_steps: int = 0
    """The do-it-yourself reference's run length, when shorter than ``steps`` (0: the same), measured against a
    baseline of that length: its per-step cost does not depend on the run's length."""
    output_checks: bool = False
    """LossGuard runs with the opt-in ``OutputMonitor`` (the model returns ``preds`` and ``target``)."""


LONG = 1500
"""Steps of the 5-20 ms/step workloads: a run of known length keeps 10 reports, so a shorter one cannot stretch its
report interval far enough to reach the budget (the 400-step table shows what a short run pays)."""

WORKLOADS = [
    Workload(
        "BoringModel-sized (Linear 32-2, batch 2)",
        lambda: Classifier(nn.Linear(32, 2)),
        lambda: classification(256, 32, 2),
        2,
        4000,  # long enough for the budget's steady state (shorter runs keep 10 reports: see the 400-step table)
    ),
    Workload(
        "MLP 32-64-64-10, batch 32",
        lambda: Classifier(mlp([32, 64, 64, 10])),
        lambda: classification(1600, 32, 10),
        32,
        2000,
    ),
    Workload(
        "conv autoencoder 1x32x32, batch 32",
        AutoEncoder,
        lambda: TensorDataset(torch.randn(1600, 1, 32, 32)),
        32,
        LONG,
    ),
    Workload(
        "LSTM LM (vocab 200, 2x128, seq 32, batch 16)",
        lambda: Classifier(LanguageModel(200, 128, "lstm")),
        lambda: tokens(800, 32, 200),
        16,
        LONG,
    ),
    Workload(
        "Transformer LM (2 layers, d 64, seq 32, batch 16)",
        lambda: Classifier(LanguageModel(200, 64, "transformer")),
        lambda: tokens(800, 32, 200),
        16,
        LONG,
    ),
    Workload(
        "MLP 256-1024-1024-10, batch 128",
        lambda: Classifier(mlp([256, 1024, 1024, 10])),
        lambda: classification(6400, 256, 10),
        128,
        LONG,
    ),
    Workload(
        "deep narrow (1,000 Linear 16-16: 2,002 tensors), batch 32",
        lambda: Classifier(deep_narrow(1000, 16)),
        lambda: classification(1600, 16, 10),
        32,
        LONG,  # as the other >= 5 ms rows: a 150-step run of it keeps stride 1 (see the per-kind table)
        repeats=3,  # ~2 min a fit; the attributed cost does not depend on the pairs
        diy_steps=150,  # the recipe costs ~6.5x: 150 steps of it take as long as 1,000 of the baseline
    ),
    Workload(
        "conv autoencoder as above, with OutputMonitor",
        lambda: AutoEncoder(outputs=True),
        lambda: TensorDataset(torch.randn(1600, 1, 32, 32)),
        32,
        LONG,
        output_checks=True,  # ~10 passes over the 32,768 predictions of a batch: sampled on the budget's stride
    ),
]
SKIP = 20  # steps left out of every timing: start-up, the first report's one-time work (layout, graph)


@dataclass
class Device:
    """Where the fits run: ``cpu`` (process CPU time) or ``cuda`` (wall time, the device synchronised)."""

    name: str = "cpu"

    @property
    def accelerator(self) -> str:
        return "gpu" if self.name == "cuda" else "cpu"

    @property
    def measure(self) -> str:
        return "wall, synchronised" if self.name == "cuda" else "CPU"

    def clock(self) -> float:
        """Seconds on the clock the ratios use."""
        if self.name == "cuda":
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


DEVICE = Device()


# -- measuring ----------------------------------------------------------------------------------------------------


class DoItYourself(Callback):
    """The common recipe: every parameter's gradient norm logged on every step."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        pl_module.log_dict(grad_norm(pl_module, norm_type=2))


class StepClock(Callback):
    """CPU and wall time of the steady-state steps: from batch ``skip`` to the end of training. It also starts
    the attributed count at batch ``skip``: every configuration carries this one benchmark callback, so the
    end-to-end ratios do not include Lightning's dispatch of a callback only LossGuard's runs have."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start = (0.0, 0.0)
        self.seconds = (0.0, 0.0)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.skip:
            self.start = (DEVICE.clock(), time.perf_counter())
        ATTRIBUTED.counting = trainer.global_step >= self.skip

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = (DEVICE.clock() - self.start[0], time.perf_counter() - self.start[1])


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
    """Time inside LossGuard during a real fit: its callback hooks and its forward hooks (the hook functions;
    PyTorch's dispatch of a hooked call is added from :func:`hooked_call_us`, Lightning's dispatch of a callback
    hook from :func:`callback_hook_us`, per call counted here). Garbage collection excluded."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.forward_calls = 0
        self.hook_calls = 0
        self.counting = False

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Time LossGuard's callback hooks and its forward marks. The hooks are timed on the class, so LossGuard
        still hides a hook from Lightning on a batch where it has nothing to do (an instance attribute)."""
        with self._hooks_counted(), self._forward_marks_counted():
            yield

    @contextlib.contextmanager
    def _hooks_counted(self) -> Iterator[None]:
        originals = {name: vars(LossGuard)[name] for name in HOOKS}
        watch_gc()

        def timed(hook: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                mark = own_mark()
                try:
                    return hook(*args, **kwargs)
                finally:
                    if self.counting:
                        self.seconds += own_since(mark)
                        self.hook_calls += 1

            return call

        try:
            for name, hook in originals.items():
                setattr(LossGuard, name, timed(hook))
            yield
        finally:
            for name, hook in originals.items():
                setattr(LossGuard, name, hook)

    @contextlib.contextmanager
    def _forward_marks_counted(self) -> Iterator[None]:
        """Count the time of LossGuard's forward-hook functions (StepTimer.forward_enter / forward_exit)."""
        originals = {name: getattr(step_timer.StepTimer, name) for name in ("forward_enter", "forward_exit")}
        clock = time.perf_counter

        def counted(name: str) -> Callable[..., Any]:
            original, enter = originals[name], name == "forward_enter"

            def timed(timer: Any) -> Any:
                start = clock()
                try:
                    return original(timer)
                finally:
                    if self.counting:
                        self.seconds += clock() - start
                        self.forward_calls += enter

            return timed

        try:
            for name in originals:
                setattr(step_timer.StepTimer, name, counted(name))
            yield
        finally:
            for name, original in originals.items():
                setattr(step_timer.StepTimer, name, original)


ATTRIBUTED = Attributed()


def callback_hook_us(repeats: int = 20000) -> float:
    """Lightning's cost for dispatching one hook to one more callback (a no-op), in microseconds: it runs every
    callable hook of every callback inside a profiler context. A hook LossGuard hides (an attribute set to None)
    costs a ``getattr`` only, left out."""
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[]
    )
    trainer.strategy.connect(Classifier(nn.Linear(1, 1)))

    def per_call(callbacks: list[Callback]) -> float:
        trainer.callbacks = callbacks  # type: ignore[attr-defined]  # set by Lightning, not declared
        start = time.perf_counter()
        for _ in range(repeats):
            lightning_call._call_callback_hooks(trainer, "on_before_zero_grad", None)
        return (time.perf_counter() - start) / repeats

    bare = min(per_call([]) for _ in range(5))
    one = min(per_call([Callback()]) for _ in range(5))
    return max(0.0, one - bare) * 1e6


def hooked_call_us(repeats: int = 20000) -> float:
    """PyTorch's extra cost for calling a module that has one forward pre-hook and one forward hook (no-ops),
    in microseconds: the dispatch LossGuard's outermost-forward hooks add on top of their own functions."""
    module = nn.Identity()
    x = torch.zeros(1)

    def per_call() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            module(x)
        return (time.perf_counter() - start) / repeats

    bare = min(per_call() for _ in range(5))
    module.register_forward_pre_hook(lambda *_: None)
    module.register_forward_hook(lambda *_: None)
    hooked = min(per_call() for _ in range(5))
    return max(0.0, hooked - bare) * 1e6


@dataclass
class Timing:
    cpu: float  # seconds per steady-state step
    wall: float
    inside: float = 0.0  # seconds per step inside LossGuard's hooks (lossguard only)
    forward_calls: float = 0.0  # hooked outermost forward calls per step
    hook_calls: float = 0.0  # LossGuard's callback hooks Lightning called per step
    budget: dict[str, float] | None = None


def make_callbacks(config: str, output_checks: bool = False) -> tuple[list[Callback], LossGuard | None]:
    """The configuration's callbacks (LossGuard's hooks are timed on its class: see :meth:`Attributed.counted`)."""
    if config == "lossguard":
        guard = LossGuard(verbose=False, monitors=[OutputMonitor()] if output_checks else None)
        return [guard], guard
    if config == "diy":
        return [DoItYourself(), EarlyStopping(monitor="train_loss", check_finite=True, patience=10**9)], None
    return [], None


def fit(workload: Workload, config: str, steps: int, root: str) -> tuple[Timing, float]:
    """One fit; its steady-state timing and the wall time of the whole ``trainer.fit`` call."""
    ATTRIBUTED.seconds, ATTRIBUTED.forward_calls, ATTRIBUTED.hook_calls, ATTRIBUTED.counting = 0.0, 0, 0, False
    torch.manual_seed(0)
    callbacks, guard = make_callbacks(config, workload.output_checks)
    clock = StepClock(SKIP)
    trainer = L.Trainer(
        accelerator=DEVICE.accelerator,
        devices=1,
        max_steps=steps,
        logger=L.pytorch.loggers.TensorBoardLogger(root, name=config),
        callbacks=[*callbacks, clock],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loader = DataLoader(workload.data(), batch_size=workload.batch, shuffle=True, drop_last=True)
    start = time.perf_counter()
    trainer.fit(workload.build(), loader)
    whole = time.perf_counter() - start
    n = steps - SKIP
    budget = guard._budget.state() if guard is not None and guard._budget is not None else None
    timing = Timing(
        clock.seconds[0] / n,
        clock.seconds[1] / n,
        ATTRIBUTED.seconds / n,
        ATTRIBUTED.forward_calls / n,
        ATTRIBUTED.hook_calls / n,
        budget,
    )
    return timing, whole


CONFIGS = ["baseline", "lossguard", "diy"]


DIY_REPEATS = 3
"""The do-it-yourself recipe is a reference column: it runs in the first repetitions only (it costs 1.2-6x)."""


def measure(
    workload: Workload, repeats: int, steps: int, configs: list[str], diy_repeats: int = DIY_REPEATS
) -> dict[str, list[tuple[Timing, float]]]:
    """Per configuration, per repetition, one fit's (steady-state timing, whole-fit seconds); repetitions
    interleave the configurations in a random order. ``diy`` runs in the first ``diy_repeats`` repetitions, so its
    i-th fit pairs with the i-th baseline fit."""
    fits: dict[str, list[tuple[Timing, float]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as root:
        for repetition in range(repeats):
            order = [c for c in configs if c != "diy" or repetition < diy_repeats]
            random.shuffle(order)
            for config in order:
                fits[config].append(fit(workload, config, steps, root))
    return fits


def ratio_spread(a: list[float], b: list[float]) -> str:
    """The median paired ratio with the quartiles of the pairs: on a shared host single pairs scatter by several
    percent, so the spread says how far the median can be trusted."""
    ratios = [x / y for x, y in zip(a, b)]
    if len(ratios) < 4:
        return f"{statistics.median(ratios):.3f}x"
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.3f}x ({low:.2f}–{high:.2f})"


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median of the paired ratios (``a`` may be shorter: it pairs with the first of ``b``)."""
    return statistics.median(x / y for x, y in zip(a, b))


def per_step_table(repeats: int, quick: bool, log: Callable[[str], None], workloads: list[Workload]) -> str:
    dispatch_us = hooked_call_us(2000 if quick else 20000)
    callback_us = callback_hook_us(2000 if quick else 20000)
    rows = [
        "| workload | baseline ms/step | inside LossGuard µs/step | LossGuard attributed | LossGuard end to end "
        f"({DEVICE.measure}; quartiles of the pairs) | budget: self-measured share of the run (of its last "
        f"interval), gradient stride | grad_norm every step + EarlyStopping ({DEVICE.measure}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in workloads:
        steps = SKIP + 40 if quick else workload.steps
        pairs = min(repeats, workload.repeats or repeats)
        configs = CONFIGS if not workload.diy_steps or quick else ["baseline", "lossguard"]
        times = {c: [t for t, _ in runs] for c, runs in measure(workload, pairs, steps, configs).items()}
        if "diy" not in times:  # the reference on its shorter run, against a baseline of that length
            short = measure(workload, 1, workload.diy_steps, ["baseline", "diy"], diy_repeats=1)
            diy_pairs = {c: [t for t, _ in runs] for c, runs in short.items()}
        else:
            diy_pairs = times
        base = statistics.median(t.cpu for t in times["baseline"]) * 1e3
        guard = times["lossguard"]
        inside = statistics.median(
            t.inside * 1e6 + t.forward_calls * dispatch_us + t.hook_calls * callback_us for t in guard
        )
        attributed = 1 + inside / 1e3 / base
        end_to_end = ratio_spread([t.cpu for t in guard], [t.cpu for t in times["baseline"]])
        diy = median_ratio([t.cpu for t in diy_pairs["diy"]], [t.cpu for t in diy_pairs["baseline"]])
        state = guard[-1].budget or {}
        share, stride = state.get("share", math.nan), state.get("gradient_stride", math.nan)
        run_share = state.get("run_share", math.nan)
        rows.append(
            f"| {workload.name} | {base:.2f} | {inside:.1f} | {attributed:.3f}x | {end_to_end} "
            f"| {run_share:.2%} ({share:.2%}), {stride:.0f} | {diy:.2f}x |"
        )
        log(rows[-1])
    return "\n".join(rows)


SHORT_RUN_REPEATS = 15
"""Pairs for the 400-step table (a fit of the ~1 ms model takes ~0.4 s; its ratio moves by ~1% between single pairs)."""

SHORT_RUN_WORKLOADS = (0, 2)
"""The 400-step table's rows: the ~1 ms model (LossGuard's fixed costs at their largest share) and the conv
autoencoder (~5 ms per step, what a smoke run of a real small model pays)."""


def short_run_table(repeats: int, quick: bool, log: Callable[[str], None]) -> str:
    """The whole ``trainer.fit`` of a 400-step smoke run, start-up and reports included, paired and interleaved.
    LossGuard runs as a user adds it: outside :meth:`Attributed.counted`, its hooks are not timed."""
    steps = 60 if quick else 400
    pairs = repeats if quick else max(repeats, SHORT_RUN_REPEATS)
    rows = ["| run | baseline wall time | LossGuard(), paired ratio (quartiles) |", "|---|---:|---:|"]
    for index in SHORT_RUN_WORKLOADS:
        workload = WORKLOADS[index]
        fits = measure(workload, pairs, steps, ["baseline", "lossguard"])
        whole = {c: [s for _, s in runs] for c, runs in fits.items()}
        base = statistics.median(whole["baseline"])
        ratio = ratio_spread(whole["lossguard"], whole["baseline"])
        rows.append(f"| {workload.name}, {steps} steps, whole fit | {base:.2f} s | {ratio} |")
        log(rows[-1])
    return "\n".join(rows)


class BatchMarks(Callback):
    """Placed before LossGuard: ``ATTRIBUTED.seconds`` as each batch starts and as training ends, so a batch's time
    inside LossGuard is the difference of two marks (its hooks, its report, its forward marks; not the final
    report, which comes after the last mark)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        ATTRIBUTED.counting = True
        self.marks.append(ATTRIBUTED.seconds)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(ATTRIBUTED.seconds)


class BatchKinds(Callback):
    """Placed after LossGuard: what LossGuard decided to do in each batch (its own flags, set in its batch start)."""

    def __init__(self, guard: LossGuard) -> None:
        self.guard = guard
        self.kinds: list[str] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        guard = self.guard
        kind = "plain"
        if guard._batches == 0:
            kind = "first"
        elif guard._before_report:
            kind = "report"
        elif guard._sample_gradients:
            kind = "sampled"
        self.kinds.append(kind)


STEP_KIND_RUNS = ((WORKLOADS[0], 1000, "2"), (WORKLOADS[5], 300, "6"), (WORKLOADS[6], 300, "2,002"))
"""(workload, steps, parameter tensors) of the per-kind table: runs long enough for a gradient stride above 1."""

CUDA_WORKLOADS = [*WORKLOADS[1:6], WORKLOADS[7]]
"""The per-step table's rows on a GPU: the ~1 ms model (batch 2) and the 1,000-layer model measure the host's Python
there, as the CPU table does; the others are what a small GPU job runs (the last with the opt-in OutputMonitor)."""
CUDA_KIND_RUNS = ((WORKLOADS[1], 1000, "6"), (WORKLOADS[2], 1000, "8"), (WORKLOADS[4], 1000, "27"))
"""The per-kind table on a GPU: where a batch's time inside LossGuard goes there (kernel launches, CUDA events)."""


def step_kinds_table(log: Callable[[str], None], runs: tuple[tuple[Workload, int, str], ...] = STEP_KIND_RUNS) -> str:
    """Time inside LossGuard per training batch, by what it did in the batch, on models of 2 to 2,002 parameter
    tensors: a plain batch (no gradient pass, no report) must not grow with the number of tensors."""
    rows = [
        "| workload | parameter tensors | step ms (LossGuard's measure) | plain batch, µs (batches) "
        "| gradient-sampled batch, µs (batches) | report batch, ms (batches) | first batch, ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    with ATTRIBUTED.counted(), tempfile.TemporaryDirectory() as root:
        for workload, steps, tensors in runs:
            ATTRIBUTED.seconds, ATTRIBUTED.counting = 0.0, False
            torch.manual_seed(0)
            guard = LossGuard(verbose=False)
            marks, kinds = BatchMarks(), BatchKinds(guard)
            trainer = L.Trainer(
                accelerator=DEVICE.accelerator,
                devices=1,
                max_steps=steps,
                logger=L.pytorch.loggers.TensorBoardLogger(root, name="kinds"),
                callbacks=[marks, guard, kinds],
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
            )
            loader = DataLoader(workload.data(), batch_size=workload.batch, shuffle=True, drop_last=True)
            trainer.fit(workload.build(), loader)
            inside = [b - a for a, b in zip(marks.marks, marks.marks[1:])]
            by_kind: dict[str, list[float]] = {k: [] for k in ("plain", "sampled", "report", "first")}
            for seconds, kind in zip(inside, kinds.kinds):
                by_kind[kind].append(seconds)
            step_ms = guard._budget.step_ms if guard._budget is not None else math.nan
            cells = [f"{_median(by_kind[k]) * 1e6:.1f} ({len(by_kind[k])})" for k in ("plain", "sampled")]
            reports = by_kind["report"]
            rows.append(
                f"| {workload.name} | {tensors} | {step_ms:.2f} | {' | '.join(cells)} "
                f"| {_median(reports) * 1e3:.2f} ({len(reports)}) | {_median(by_kind['first']) * 1e3:.1f} |"
            )
            log(rows[-1])
    return "\n".join(rows)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def judging_profile(
    steps: int = 100_000,
    every: int = 50,
    checkpoints: tuple[int, ...] = (1_000, 10_000, 100_000),
    trace_memory: bool = True,
) -> list[tuple[int, float, float, float]]:
    """``(run length, ms per report, ms per validation, MiB held)`` at each checkpoint: the detectors fed a noisy,
    falling loss and six parameters' gradient norms every ``every`` steps, as the callback does, and a noisy,
    levelling validation loss after each report (a run validated every ``every`` steps: 2,000 evaluations in 100k
    steps). The times are medians of the last 20; the memory is what the detectors hold after a collection
    (tracemalloc, with ``trace_memory``; NaN without). Time only untraced runs: tracing every allocation made the
    judging 3-8x slower, more so as the run got long (a report 11.9 ms at 100k steps traced, 1.5 ms untraced)."""
    rng = np.random.default_rng(0)
    layout = RunLayout(
        param_names=tuple(f"net.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(6)),
        param_sizes=(4096, 64) * 3,
        param_units=(64, 0) * 3,
        layer_of=(0, 0, 1, 1, 2, 2),
        layers=("net.0", "net.1", "net.2"),
        comparable=(True, True, True),
        layer_group=(0, 0, 0),
        total_steps=steps,
        model_elements=3 * (4096 + 64),
    )
    judge = Diagnostician()
    profile = []
    recent: list[float] = []
    recent_validations: list[float] = []
    if trace_memory:
        tracemalloc.start()
    try:
        for first in range(0, steps, every):
            s = np.arange(first, first + every)
            loss = 2.0 * np.exp(-s / 20_000) + 0.3 + 0.1 * rng.standard_normal(every)
            norms = np.abs(1.0 + 0.2 * rng.standard_normal((every, 6))) * np.exp(-s / 50_000)[:, None]
            step_ms = 2.0 + 0.1 * rng.standard_normal(every)
            window = Window(
                optimizer_steps=s.tolist(),
                param_norms=norms,
                batch_steps=s.tolist(),
                loss=loss,
                learning_rate=np.full(every, 1e-3),
                timing_steps=s.tolist(),
                phase_ms={"step": step_ms, "forward": step_ms * 0.3, "loss": step_ms * 0.05, "backward": step_ms / 2},
            )
            start = time.perf_counter()
            judge.judge(window, layout, 1e-3)
            recent = [*recent[-19:], (time.perf_counter() - start) * 1e3]
            val_loss = 0.6 + 1.5 * math.exp(-first / 20_000) + 0.02 * rng.standard_normal()
            start = time.perf_counter()
            judge.judge_validation(first + every - 1, first // 1000, {"val_loss": val_loss})
            recent_validations = [*recent_validations[-19:], (time.perf_counter() - start) * 1e3]
            if first + every in checkpoints:
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] / 2**20 if trace_memory else math.nan
                profile.append((first + every, _median(recent), _median(recent_validations), held))
    finally:
        if trace_memory:
            tracemalloc.stop()
    return profile


def long_run_table(log: Callable[[str], None], steps: int = 100_000) -> str:
    """One report's and one validation's judging time (an untraced run) and the detectors' memory (a traced one) as
    a run gets long. The report's time steps up once, when ``loss_plateau`` starts judging (30% of the planned run,
    its ``judge_fraction``): 50k and 100k show it flat after that. A validation is judged against every earlier one
    (in numpy)."""
    checkpoints = tuple(c for c in (1_000, 10_000, 50_000, 100_000) if c <= steps)
    rows = [
        "| run length | judging, ms per report (median of the last 20) | ms per validation (one every 50 steps) "
        "| detectors' memory |",
        "|---:|---:|---:|---:|",
    ]
    timed = judging_profile(steps, checkpoints=checkpoints, trace_memory=False)
    traced = judging_profile(steps, checkpoints=checkpoints)
    for (length, ms, validation_ms, _), (*_, mib) in zip(timed, traced, strict=True):
        rows.append(f"| {length:,} steps | {ms:.2f} | {validation_ms:.3f} | {mib:.2f} MiB |")
        log(rows[-1])
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name() if DEVICE.name == "cuda" else "CPU only"
    return f"{cpu}, {threads} torch thread(s), torch {torch.__version__}, Lightning {L.__version__}, {where}"


def run(repeats: int, quick: bool, log: Callable[[str], None] = print, workloads: list[Workload] | None = None) -> str:
    """Run the benchmark; return the markdown tables. On a GPU: the per-step and per-kind tables (the 400-step and
    judging tables measure host work the CPU tables already show)."""
    cuda = DEVICE.name == "cuda"
    with ATTRIBUTED.counted():
        parts = [per_step_table(repeats, quick, log, workloads or (CUDA_WORKLOADS if cuda else WORKLOADS))]
    if cuda and workloads is None:
        parts.append(step_kinds_table(log, tuple((w, 60 if quick else n, t) for w, n, t in CUDA_KIND_RUNS)))
    elif workloads is None:
        kinds = tuple((w, 60, t) for w, _, t in STEP_KIND_RUNS[:2]) if quick else STEP_KIND_RUNS
        parts += [short_run_table(repeats, quick, log), step_kinds_table(log, kinds)]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one repetition")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the per-step and per-kind tables, on the GPU"
    )
    parser.add_argument("--workloads", help="comma-separated row numbers of the per-step table (default: all)")
    parser.add_argument(
        "--long-run", action="store_true", help="only the judging table of runs up to 100k steps (about a minute)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    rows = [i.strip() for i in args.workloads.split(",")] if args.workloads else []
    if any(not (i.isdigit() and int(i) < len(WORKLOADS)) for i in rows):
        parser.error(f"--workloads: row numbers 0-{len(WORKLOADS) - 1}, comma-separated; got {args.workloads!r}")
    chosen = [WORKLOADS[int(i)] for i in rows] or None
    DEVICE.name = args.device
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)  # fixed, so runs are comparable across machines and repetitions
    if args.write_docs and args.device == "cpu" and chosen is not None:
        parser.error("--write-docs on the CPU measures every workload: drop --workloads")
    if args.long_run and (args.device == "cuda" or chosen is not None):
        parser.error("--long-run times the detectors alone, on the CPU: drop --device and --workloads")
    tables = "" if args.long_run else run(1 if args.quick else args.repeats, args.quick, workloads=chosen)
    long_run = ""
    if args.device == "cpu" and chosen is None:
        long_run = long_run_table(lambda _: None, 2_000 if args.quick else 100_000)
    print("\n\n".join(table for table in (tables, long_run) if table))
    if args.write_docs and not args.quick:
        stamp = time.strftime("%Y-%m-%d")
        command = " ".join(["python -m benchmarks.overhead", *(argv if argv is not None else sys.argv[1:])])
        measured = f"Measured {stamp} on {machine()} (`{command}`"
        if tables:
            body = f"{measured}, {args.repeats} paired, interleaved repetitions).\n\n{tables}"
            replace_section("overhead" if args.device == "cpu" else "overhead-cuda", body)
        if long_run:
            replace_section("overhead-long", f"{measured}).\n\n{long_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
