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

from benchmarks.docs import replace_section
from benchmarks.fault_zoo.scenarios import SCENARIOS, build
from benchmarks.overhead import machine
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


ONSET_KEYS = ("first_step", "first_spike_step", "first_zero_step", "since_step", "best_step")


def onset(diagnosis: Diagnosis) -> int | None:
    """The step the evidence says the symptom appeared (None when the evidence has no such step)."""
    for key in ONSET_KEYS:
        if key in diagnosis.evidence:
            return int(diagnosis.evidence[key])
    return None


def table(results: list[Result], report_every: int = 10) -> str:
    """Markdown: one row per scenario, then the score."""
    rows = [
        "| scenario | fault | expected | LossGuard said (code@step) | correct | latency from onset | wall s |",
        "|---|---|---|---|:-:|---:|---:|",
    ]
    for r in results:
        scenario = SCENARIOS[r.name]
        said = ", ".join(f"`{d.code}`@{d.step}" for d in r.diagnoses if d.severity.at_least(Severity.WARNING)) or "—"
        correct = r.correct
        latency = ""
        if correct is not None and (start := onset(correct)) is not None:
            latency = str(max(0, correct.step - start))
        expected = ", ".join(f"`{c}`" for c in r.expect) or "(healthy: nothing)"
        verdict = "yes" if r.passed else "**no**"
        rows.append(
            f"| {r.name} | {scenario.description} | {expected} | {said} | {verdict} | {latency} | {r.wall_s:.1f} |"
        )
    faults = [r for r in results if not r.healthy]
    healthy = [r for r in results if r.healthy]
    caught = sum(r.correct is not None for r in faults)
    false_alarms = sum(bool(r.alarms) for r in healthy)
    errors = [r.correct for r in faults if r.correct is not None and r.correct.severity is Severity.ERROR]
    late = [d.code for d in errors if (o := onset(d)) is not None and d.step - o > report_every]
    rows.append("")
    rows.append(
        f"**Recall {caught}/{len(faults)}** faults diagnosed with a correct code; **false alarms "
        f"{false_alarms}/{len(healthy)}** healthy runs with a warning or error; errors caught within one report "
        f"interval ({report_every} steps) of their onset: {len(errors) - len(late)}/{len(errors)}"
        + (f" (late: {', '.join(late)})" if late else "")
        + f"; total wall time {sum(r.wall_s for r in results):.0f} s."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--verbose", action="store_true", help="show LossGuard's console output")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
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
            print(f"{mark} {name:30s} {result.wall_s:5.1f}s steps={result.steps:4d} {codes} {result.error}", flush=True)
    text = table(results)
    print(text.splitlines()[-1])
    if args.write_docs:
        stamp = time.strftime("%Y-%m-%d")
        replace_section(
            "zoo",
            f"Measured {stamp} on {machine()} (`python -m benchmarks.fault_zoo.run --write-docs`).\n\n{text}",
        )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
