"""A short fit that goes wrong (SGD at a learning rate that explodes) under a progress bar, for terminal tests.

    python -m tests.scripts.progress_fit tqdm|rich LOG_DIR

Run it in a pseudo-terminal: the bars draw only when their output is a terminal.
"""

from __future__ import annotations

import logging
import sys
import warnings

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import LossGuard


def main() -> None:
    kind, log_dir = sys.argv[1], sys.argv[2]
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    run = build("lr_too_high_sgd")
    bar = TQDMProgressBar(refresh_rate=1) if kind == "tqdm" else RichProgressBar(refresh_rate=1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=40,
        logger=TensorBoardLogger(log_dir, name="run"),
        callbacks=[LossGuard(report_every=10), bar],
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    trainer.fit(run.module, run.train)


if __name__ == "__main__":
    main()
