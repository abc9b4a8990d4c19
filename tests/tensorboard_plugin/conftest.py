"""A real TensorBoard process over real runs, shared by the live TensorBoard, plugin and browser tests.

The LossGuard plugin is loaded the way a user gets it: from the installed ``tensorboard_plugins`` entry point.
Every wait is bounded; a server that dies fails the test at once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from benchmarks.fault_zoo.run import run_scenario
from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.report.json_report import Gap, write_report
from lightning_lossguard.report.loggers import LoggerReporter

FAULTY, HEALTHY = "lr_too_high_sgd", "adam_regression"
HOSTILE = "<img src=x onerror=window.pwned=1>"  # a run directory name is text anyone can choose too
ATTACK = "<img src=x onerror=window.pwned=1> `rm -rf /`\n<script>window.pwned=2</script>"


class Server:
    """A running TensorBoard: GET its routes, wait for an answer."""

    def __init__(self, base: str, process: subprocess.Popen[bytes]) -> None:
        self.base, self.process = base, process

    def url(self, route: str, **params: str) -> str:
        return f"{self.base}{route}" + (f"?{urlencode(params)}" if params else "")

    def get(self, route: str, **params: str) -> Any:
        with urllib.request.urlopen(self.url(route, **params), timeout=10) as response:
            return json.loads(response.read())

    def fetch(self, route: str, **params: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body, errors included."""
        try:
            with urllib.request.urlopen(self.url(route, **params), timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def wait(self, route: str, ready: Callable[[Any], bool], timeout: float = 60, **params: str) -> Any:
        """Poll a JSON route until ``ready(answer)``: TensorBoard loads event files in the background."""
        deadline = time.monotonic() + timeout
        answer: Any = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"TensorBoard exited with code {self.process.returncode}"
            try:
                answer = self.get(route, **params)
                if ready(answer):
                    return answer
            except (urllib.error.URLError, ConnectionError, ValueError):
                pass  # not listening, or not loaded yet
            time.sleep(0.2)
        raise TimeoutError(f"no ready answer from {route} {params} within {timeout} s; last: {answer!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(logdir: Path) -> Iterator[Server]:
    """``tensorboard --logdir logdir`` on a free local port, reloading every second; stopped on exit."""
    port = _free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = Server(f"http://127.0.0.1:{port}", process)
        server.wait("/data/runs", lambda runs: isinstance(runs, list))  # listening
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_run(
    log_dir: Path,
    steps: range,
    report: list[Diagnosis],
    status: str = "finished",
    notes: Sequence[str] = (),
    gaps: Sequence[Gap] = (),
    cost: dict[str, float] | None = None,
) -> None:
    """A small run written as LossGuard writes one: its scalars (one point per 10 steps) and its report."""
    logger = TensorBoardLogger(str(log_dir.parent), name="", version=log_dir.name)
    reporter = LoggerReporter([logger])
    reporter.start()
    for end in steps[9::10]:
        interval = list(range(end - 9, end + 1))
        norms = np.exp(np.linspace(0, 1, 10)) * (1 + end / 100)
        reporter.scalars(
            {
                "lossguard/train_loss": (interval, 1.0 / (1 + np.array(interval, dtype=float))),
                "lossguard/grad_norm": (interval, norms),
                "lossguard/grad_norm_band_low": (interval, [0.1] * 10),
                "lossguard/grad_norm_band_high": (interval, [10.0] * 10),
            }
        )
    reporter.flush()
    logger.experiment.close()
    write_report(log_dir / "lossguard.json", report, status, steps[-1] + 1, notes=notes, gaps=gaps, cost=cost)


COST = {"budget": 0.01, "run_share": 0.005, "own_seconds": 0.05, "batches": 1000.0, "step_ms": 10.0}
"""A report's cost (the budget's state): the page shows it as one line."""


def hostile_diagnoses() -> list[Diagnosis]:
    """Text from a report file is data: every field a page shows, with markup and control characters in it."""
    return [
        Diagnosis(
            "exploding_gradients",
            Severity.ERROR,
            15,
            ATTACK,
            subject="layer`<b>bold</b>",
            evidence={"<i>key</i>": 1.5, "ratio": float("inf")},
            remedies=["<a href='javascript:window.pwned=3'>click</a>", ATTACK],
        ),
        Diagnosis("<img src=x onerror=window.pwned=4>", Severity.WARNING, 15, "An unknown code.", remedies=[]),
    ]


@dataclass
class Runs:
    root: Path
    faulty: str  # run names, as TensorBoard lists them
    healthy: str
    hostile: str
    dirs: dict[str, Path]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A faulty and a healthy fault-zoo run, and a run whose report is full of markup, in one log directory."""
    root = tmp_path_factory.mktemp("logs")
    faulty, healthy = (run_scenario(name, str(root)) for name in (FAULTY, HEALTHY))
    assert faulty.error == "" and [d.code for d in faulty.alarms][:1] == ["exploding_gradients"], faulty.diagnoses
    assert healthy.error == "" and not healthy.alarms, healthy.diagnoses
    write_run(
        root / HOSTILE, range(30), hostile_diagnoses(), notes=[ATTACK], gaps=[Gap("gradients", ATTACK)], cost=COST
    )
    dirs = {str(Path(r.log_dir).relative_to(root)): Path(r.log_dir) for r in (faulty, healthy)}
    dirs[HOSTILE] = root / HOSTILE
    [faulty_run, healthy_run] = (str(Path(r.log_dir).relative_to(root)) for r in (faulty, healthy))
    return Runs(root, faulty_run, healthy_run, HOSTILE, dirs)


@pytest.fixture(scope="session")
def server(runs: Runs) -> Iterator[Server]:
    """TensorBoard over ``runs``, once every run's LossGuard data and text report are loaded."""
    with serve(runs.root) as tb:
        tb.wait("/data/plugin/lossguard/runs", lambda answer: len(answer["runs"]) == len(runs.dirs))
        for run in runs.dirs:
            tb.wait("/data/plugin/lossguard/run", lambda view: bool(view["curves"].get("grad_norm")), run=run)
        tb.wait("/data/plugin/text/tags", lambda tags: {runs.faulty, runs.healthy} <= set(tags))
        yield tb
