"""Shared fixtures: strict mode (internal errors fail tests), quiet Lightning, helpers for real fits."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import pytest
import pytorch_lightning
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from pytorch_lightning.loggers import TensorBoardLogger as StandaloneTensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightning_lossguard
from lightning_lossguard import LossGuard

os.environ["LOSSGUARD_STRICT"] = "1"  # an internal LossGuard error must fail the test, not be swallowed
warnings.filterwarnings("ignore", ".*does not have many workers.*")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


def trainer(
    tmp_path: Path, callbacks: list[Any], logger: Any = True, standalone: bool = False, **kwargs: Any
) -> L.Trainer | pytorch_lightning.Trainer:
    """A quiet CPU trainer writing TensorBoard events under ``tmp_path``; ``standalone``: the Trainer and logger of the
    standalone ``pytorch_lightning`` package (for a module written against it)."""
    if logger is True:
        logger = (StandaloneTensorBoardLogger if standalone else TensorBoardLogger)(str(tmp_path), name="run")
    args: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "callbacks": callbacks,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 10,
        "default_root_dir": str(tmp_path),
    }
    args.update(kwargs)
    return (pytorch_lightning.Trainer if standalone else L.Trainer)(**args)


def reports_of(guard: LossGuard) -> list[int]:
    """The batch count at each of ``guard``'s reports, filled in as the fit runs."""
    reported: list[int] = []
    original = guard._report

    def spy(trainer: Any, module: Any) -> Any:
        reported.append(guard._batches)
        return original(trainer, module)

    guard._report = spy  # type: ignore[method-assign]
    return reported


def plateau_lengths(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The run length ``loss_plateau`` is told at each report from here on, filled in as fits run."""
    from lightning_lossguard.detectors import LossPlateau

    told: list[int | None] = []
    update = LossPlateau.update

    def spy(self: LossPlateau, steps: Any, losses: Any, total_steps: int | None = None, *args: Any, **kw: Any) -> Any:
        told.append(total_steps)
        return update(self, steps, losses, total_steps, *args, **kw)

    monkeypatch.setattr(LossPlateau, "update", spy)
    return told


def events(log_dir: str | Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def text_of(accumulator: EventAccumulator, tag: str) -> list[str]:
    from tensorboard.util.tensor_util import make_ndarray

    return [make_ndarray(e.tensor_proto).item().decode() for e in accumulator.Tensors(tag)]


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # One intra-op thread: tiny models gain nothing from more, and a busy 2-core machine loses a lot.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    yield
    torch.set_num_threads(threads)


# -- counting host reads: the per-step path must never read a tensor back --------------------------------
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__")
PACKAGE = str(Path(lightning_lossguard.__file__).parent)
REPORT_PATHS = {
    LossGuard._report.__code__,
    LossGuard._tripwire.__code__,  # one read per default report interval, when the budget stretched reports
    inspect.unwrap(LossGuard.on_validation_end).__code__,  # not its _own_time wrapper: every timed hook shares that
    LossGuard._finish.__code__,
    LossGuard.on_exception.__code__,
}


class ReadCounter:
    """Counts tensor host reads whose call stack passes through LossGuard: under a report path, or not."""

    def __init__(self) -> None:
        self.on_report = 0
        self.per_step: list[str] = []

    def attribute(self, name: str, frame: FrameType | None) -> None:
        """Count one read of kind ``name`` made with ``frame`` innermost on the stack."""
        ours = None
        while frame is not None:
            if frame.f_code in REPORT_PATHS:
                self.on_report += 1
                return
            if ours is None and frame.f_code.co_filename.startswith(PACKAGE):
                ours = f"{name} in {frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
            frame = frame.f_back
        if ours is not None:
            self.per_step.append(ours)

    def wrap(self, name: str, original: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.attribute(name, sys._getframe(1))
            return original(tensor, *args, **kwargs)

        return counted


def plant_a_per_step_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make LossGuard read every step's loss back (``.item()``): the bug the read and sync counters exist for."""
    from lightning_lossguard.signals.losses import LossProbe

    original = LossProbe.record

    def reading(self: LossProbe, loss: torch.Tensor, terms: Any) -> None:
        loss.item()
        original(self, loss, terms)

    monkeypatch.setattr(LossProbe, "record", reading)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadCounter]:
    """Every host read a tensor offers, counted (see :class:`ReadCounter`)."""
    counter = ReadCounter()
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    yield counter


# -- the corpus' fits run in the background from the start of the session ---------------------------------------
# tests/test_corpus.py's fits take most of the suite's time and each runs on one core, while the rest of the suite
# runs in this process on one core. So they start when the tests are collected, on every core but this one, and
# the corpus' tests run last, adding this process' core to the fits when they are reached.
CORPUS_FITS = pytest.StashKey[Any]()
CORPUS_DEATHS = pytest.StashKey[dict[Any, str]]()
CORPUS_EARLY = os.environ.get("LOSSGUARD_CORPUS_EARLY", "1") != "0"
"""``LOSSGUARD_CORPUS_EARLY=0``: the fits start only when their tests are reached (nothing runs beside the others)."""


def _corpus_job(item: pytest.Item) -> tuple[str, int, str] | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if item.get_closest_marker("corpus_fit") is None or not {"name", "seed", "fault"} <= set(params):
        return None
    return params["name"], params["seed"], params["fault"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _corpus_job(item) is not None)  # stable: every other test keeps its order


def pytest_collection_finish(session: pytest.Session) -> None:
    if CORPUS_EARLY and not session.config.option.collectonly:
        corpus_fits(session, workers=-1)


def corpus_fits(session: pytest.Session, workers: int) -> Any:
    """The session's corpus fits (:class:`benchmarks.corpus.workers.Fits`), started on first use, with workers
    added up to ``available_cores() + workers`` in all (-1: leave this process' core to the rest of the suite)."""
    jobs = [job for job in map(_corpus_job, session.items) if job is not None]
    if not jobs:
        return None
    from benchmarks.corpus.run import given_up, run_until_named
    from benchmarks.corpus.workers import Fits, available_cores

    fits = session.stash.get(CORPUS_FITS, None)
    if fits is None:
        fits = session.stash[CORPUS_FITS] = Fits(jobs, run_until_named, given_up)
    fits.add_workers(max(0, available_cores() + workers - fits.workers))
    return fits


def pytest_sessionfinish(session: pytest.Session) -> None:
    fits = session.stash.get(CORPUS_FITS, None)
    if fits is not None:
        fits.close()
        session.config.stash[CORPUS_DEATHS] = {job: fits.death_note(job) for job in fits.deaths}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Every corpus fit whose worker process died, those that then ran in a fresh worker too: a retry that passed
    is said, never silent."""
    notes = config.stash.get(CORPUS_DEATHS, {})
    if notes:
        terminalreporter.section("corpus fits whose worker process died")
        for job, note in notes.items():
            terminalreporter.write_line(f"{job}: {note}")
