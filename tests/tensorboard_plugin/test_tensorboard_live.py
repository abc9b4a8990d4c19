"""A real TensorBoard server on finished runs: what a person sees in TensorBoard's own tabs, read through its
HTTP API.

The event files can be right and TensorBoard still show nothing (a tag the plugin does not list, a chart whose
regex matches nothing), so this asks the server the same questions its web pages ask.
"""

from __future__ import annotations

import math
import re

import pytest

from lightning_lossguard.report.json_report import read_report
from tests.tensorboard_plugin.conftest import Runs, Server

pytestmark = pytest.mark.slow

REPORT = "lossguard/diagnoses/text_summary"  # the writer appends "/text_summary" to text tags


def test_text_tab_shows_the_diagnosis_with_its_evidence_and_remedies(server: Server, runs: Runs) -> None:
    tags = server.get("/data/plugin/text/tags")[runs.faulty]
    assert REPORT in tags and "lossguard/diagnoses/exploding_gradients/text_summary" in tags
    entries = server.get("/data/plugin/text/text", run=runs.faulty, tag=REPORT)
    latest = max(entries, key=lambda e: e["step"])["text"]  # markdown rendered to HTML by TensorBoard
    diagnoses = read_report(runs.dirs[runs.faulty] / "lossguard.json").diagnoses
    errors = sum(d.severity == "error" for d in diagnoses)
    assert f"LossGuard: {errors} errors, 0 warnings, 0 info" in latest and errors >= 2
    assert "<table>" in latest and "<code>exploding_gradients</code>" in latest
    [exploding, *_] = diagnoses
    first_spike = int(exploding.evidence["first_spike_step"])
    assert re.search(rf"<td>first_spike_step</td>\s*<td[^>]*>{first_spike}</td>", latest)  # evidence, a number
    assert re.search(r"<ol>\s*<li>Clip gradients", latest)  # remedies, as a list


def test_scalars_tab_has_the_watched_signals_once_each(server: Server, runs: Runs) -> None:
    tags = server.get("/data/plugin/scalars/tags")[runs.faulty]
    for tag in ("lossguard/grad_norm", "lossguard/grad_norm_max", "lossguard/train_loss", "lossguard/loss_step_ms"):
        assert tag in tags
    assert not [t for t in tags if t.startswith("lossguard/log10/") or t == "lossguard/alarms"]
    points = server.get("/data/plugin/scalars/scalars", run=runs.faulty, tag="lossguard/grad_norm")
    steps = [step for _, step, _ in points]
    # One point per report interval (10 steps), the interval's median, while the norm is finite.
    assert steps == [9 + 10 * i for i in range(len(steps))] and len(steps) >= 3
    assert all(math.isfinite(value) and value > 0 for _, _, value in points)
    healthy = server.get("/data/plugin/scalars/tags")[runs.healthy]
    assert "lossguard/val/val_loss" in healthy and "lossguard/grad_norm_band_high" in healthy


def test_custom_scalars_dashboard_has_data_in_its_chart(server: Server, runs: Runs) -> None:
    layout = server.get("/data/plugin/custom_scalars/layout")
    [main] = [c for c in layout["category"] if c["title"] == "LossGuard"]
    [chart] = main["chart"]  # no loss terms in these runs: only the gradient chart
    regex = "|".join(f"({t})" for t in chart["multiline"]["tag"])  # as the dashboard joins them
    found = server.get("/data/plugin/custom_scalars/scalars", run=runs.faulty, tag=regex)
    assert found["regex_valid"]
    assert set(found["tag_to_events"]) == {
        "lossguard/grad_norm",
        "lossguard/grad_norm_max",
        "lossguard/grad/first_layer_norm",
        "lossguard/grad/last_layer_norm",
        "lossguard/grad/max_layer_norm",
    }
