"""Shared fixtures: strict mode (internal errors fail tests), quiet Lightning, helpers for real fits."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

os.environ["LOSSGUARD_STRICT"] = "1"  # an internal LossGuard error must fail the test, not be swallowed
warnings.filterwarnings("ignore", ".*does not have many workers.*")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


def trainer(tmp_path: Path, callbacks: list[Any], logger: Any = True, **kwargs: Any) -> L.Trainer:
    """A quiet CPU trainer writing TensorBoard events under ``tmp_path``."""
    if logger is True:
        logger = TensorBoardLogger(str(tmp_path), name="run")
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
    return L.Trainer(**args)


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
