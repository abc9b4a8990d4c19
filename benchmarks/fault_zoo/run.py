"""Run the fault zoo and score LossGuard: recall, false alarms, detection latency, wall time.

python -m benchmarks.fault_zoo.run                 # every scenario, table on stdout
python -m benchmarks.fault_zoo.run lr_too_low ...  # some scenarios
python -m benchmarks.fault_zoo.run --write-docs    # also update docs/performance.md
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.fault_zoo.scenarios import SCENARIOS, build
from lightning_lossguard import Diagnosis, LossGuard, LossGuardAlarm, Severity


@dataclass
class Result:
    name: str
    healthy: bool
    expect: tuple[str, ...]
    diagnoses: list[Diagnosis] = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0
    log_dir: str = ""
    error: str = ""

    @property
    def alarms(self) -> list[Diagnosis]:
        return [d for d in self.diagnoses if d.severity.at_least(Severity.WARNING)]

    @property
    def correct(self) -> Diagnosis | None:
        return next((d for d in self.diagnoses if d.code in self.expect), None)

    @property
    def passed(self) -> bool:
        return not self.alarms if self.healthy else self.correct is not None


def run_scenario(
    name: str,
    root: str,
    seed: int = 0,
    guard: dict[str, Any] | None = None,
    quiet: bool = True,
    trainer: dict[str, Any] | None = None,
) -> Result:
    """One scenario in a real ``Trainer.fit`` with LossGuard (report every 10 steps).

    ``guard`` and ``trainer`` override LossGuard and Trainer arguments (e.g. a precision plugin).
    """
    scenario = SCENARIOS[name]
    run = build(name, seed)
    kwargs: dict[str, Any] = {"report_every": 10, "verbose": not quiet, **run.guard, **(guard or {})}
    lossguard = LossGuard(**kwargs)
    logger = TensorBoardLogger(root, name=name)
    trainer_args: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "callbacks": [lossguard],
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
        **run.trainer,
        **(trainer or {}),
    }
    fit = L.Trainer(**trainer_args)
    result = Result(name, scenario.healthy, scenario.expect, log_dir=logger.log_dir)
    start = time.perf_counter()
    try:
        fit.fit(run.module, run.train, run.val)
    except LossGuardAlarm:
        pass
    except Exception as error:  # a scenario that crashes is reported, not hidden
        result.error = f"{type(error).__name__}: {error}"
    result.wall_s = time.perf_counter() - start
    result.steps = fit.global_step
    result.diagnoses = lossguard.diagnoses
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show LossGuard's console output")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    names = args.names or list(SCENARIOS)
    results = []
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            result = run_scenario(name, root, quiet=not args.verbose)
            results.append(result)
            codes = ", ".join(f"{d.code}@{d.step}({d.severity.value[0]})" for d in result.diagnoses) or "-"
            mark = "PASS" if result.passed else "FAIL"
            print(
                f"{mark} {name:30s} {result.wall_s:5.1f}s steps={result.steps:4d} {codes} {result.error}",
                flush=True,
            )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
