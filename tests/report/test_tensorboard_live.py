"""A real TensorBoard server on a finished faulty run: what a person sees, read through TensorBoard's HTTP API.

The event files can be right and TensorBoard still show nothing (a tag the plugin does not list, a Margin
chart whose series do not line up), so this asks the server the same questions its web pages ask.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from benchmarks.fault_zoo.run import run_scenario

pytestmark = pytest.mark.slow

REPORT = "lossguard/diagnoses/text_summary"  # the writer appends "/text_summary" to text tags
NAN_STEP = 60  # the scenario's poisoned batch


class Server:
    def __init__(self, base: str, run: str) -> None:
        self.base, self.run = base, run

    def get(self, route: str, **params: str) -> Any:
        query = f"?{urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}{route}{query}", timeout=10) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, ready: Callable[[Any], bool], process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"TensorBoard exited with code {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if ready(json.loads(response.read())):
                    return
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass  # not listening, or not loaded yet
        time.sleep(0.2)
    raise TimeoutError(f"TensorBoard did not serve {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("runs")
    result = run_scenario("nan_in_batch", str(root))
    assert [d.code for d in result.diagnoses] == ["nonfinite_loss"], result.diagnoses
    port = _free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(root), "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Listening comes before loading: wait until the report's tag is listed.
        _wait_for(f"{base}/data/plugin/text/tags", lambda tags: any(REPORT in t for t in tags.values()), process)
        [run] = Server(base, "").get("/data/runs")
        yield Server(base, run)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_text_tab_shows_the_diagnosis_with_its_evidence_and_remedies(server: Server) -> None:
    tags = server.get("/data/plugin/text/tags")[server.run]
    assert REPORT in tags and "lossguard/diagnoses/nonfinite_loss/text_summary" in tags
    entries = server.get("/data/plugin/text/text", run=server.run, tag=REPORT)
    latest = max(entries, key=lambda e: e["step"])["text"]  # markdown rendered to HTML by TensorBoard
    assert "LossGuard: 1 error, 0 warnings, 0 info" in latest
    assert "<table>" in latest and "<code>nonfinite_loss</code>" in latest
    assert re.search(rf"<td>first_step</td>\s*<td[^>]*>{NAN_STEP}</td>", latest)  # evidence, as a number
    assert re.search(r"<ol>\s*<li>Inspect the batch at the reported step", latest)  # remedies, as a list


def test_scalars_tab_has_the_watched_signals(server: Server) -> None:
    tags = server.get("/data/plugin/scalars/tags")[server.run]
    for tag in ("lossguard/grad_norm", "lossguard/train_loss", "lossguard/loss_step_ms", "lossguard/alarms"):
        assert tag in tags
    points = server.get("/data/plugin/scalars/scalars", run=server.run, tag="lossguard/grad_norm")
    steps = [step for _, step, _ in points]
    # One point per report interval (10 steps), the interval's median: the NaN batch does not erase it.
    assert steps == [9 + 10 * i for i in range(len(steps))] and len(steps) >= NAN_STEP // 10
    assert all(math.isfinite(value) and value > 0 for _, _, value in points)
    alarms = server.get("/data/plugin/scalars/scalars", run=server.run, tag="lossguard/alarms")
    assert [v for _, s, v in alarms if s < NAN_STEP] == [0.0] * len([s for _, s, _ in alarms if s < NAN_STEP])
    assert alarms[-1][2] == 1.0


def test_custom_scalars_dashboard_has_data_in_every_main_chart(server: Server) -> None:
    layout = server.get("/data/plugin/custom_scalars/layout")
    [main] = [c for c in layout["category"] if c["title"] == "LossGuard"]
    kinds = {chart["title"]: next(k for k in ("multiline", "margin") if k in chart) for chart in main["chart"]}
    assert sorted(kinds.values()) == ["margin", "multiline", "multiline", "multiline"]
    for chart in main["chart"]:
        if "multiline" in chart:
            regex = "|".join(f"({t})" for t in chart["multiline"]["tag"])  # as the dashboard joins them
            found = server.get("/data/plugin/custom_scalars/scalars", run=server.run, tag=regex)
            assert found["regex_valid"] and found["tag_to_events"], chart["title"]
        else:
            [series] = chart["margin"]["series"]
            value, low, high = (
                server.get("/data/plugin/scalars/scalars", run=server.run, tag=series[k])
                for k in ("value", "lower", "upper")
            )
            # TensorBoard refuses to draw a Margin chart whose three series have different steps.
            assert [p[1] for p in value] == [p[1] for p in low] == [p[1] for p in high] != []
            healthy = [(v[2], lo[2], hi[2]) for v, lo, hi in zip(value, low, high) if v[1] < NAN_STEP]
            assert healthy and all(lo <= v <= hi for v, lo, hi in healthy)  # a normal run stays in its band
