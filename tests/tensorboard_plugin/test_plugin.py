"""The ``lossguard`` TensorBoard plugin: its data (verdict, cause-first diagnoses, curves) and its routes in a
real TensorBoard process, on finished runs and on a run that is still being written."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.catalog import CATALOG, cause_first
from lightning_lossguard.report.cost import over_budget_line, over_budget_note
from lightning_lossguard.report.json_report import Gap, read_report, write_report
from lightning_lossguard.signals.budget import CostBudget, IntervalCost
from lightning_lossguard.tensorboard_plugin.catalog_page import catalog_page
from lightning_lossguard.tensorboard_plugin.run_data import report_files, run_view, verdict
from tests.tensorboard_plugin.conftest import ATTACK, Runs, Server, serve, write_run

ERROR = Diagnosis("loss_divergence", Severity.ERROR, 30, "Diverged.")
CAUSE = Diagnosis("exploding_gradients", Severity.ERROR, 30, "Exploded.")
INFO = Diagnosis("loss_scale_shift", Severity.INFO, 10, "Shifted.")


# -- the data, from report files -------------------------------------------------------------------------


def test_verdict_says_healthy_counts_alarms_and_names_gaps(tmp_path: Path) -> None:
    def headline(diagnoses: list[Diagnosis], gaps: tuple[Gap, ...] = ()) -> dict[str, str]:
        return verdict([read_report(write_report(tmp_path / "lossguard.json", diagnoses, "finished", 50, gaps=gaps))])

    assert headline([]) == {"level": "healthy", "text": "Healthy: no problems found"}
    assert headline([INFO]) == {"level": "healthy", "text": "Healthy: no problems found (1 info)"}
    warning = Diagnosis("loss_plateau", Severity.WARNING, 20, "Flat.")
    assert headline([warning]) == {"level": "warning", "text": "0 errors, 1 warning"}
    assert headline([ERROR, CAUSE, warning]) == {"level": "error", "text": "2 errors, 1 warning"}
    gap = Gap("gradients", "sharded strategy")
    assert headline([], (gap,))["level"] == "gaps" and "not everything was watched" in headline([], (gap,))["text"]
    assert verdict([]) == {"level": "unknown", "text": "No LossGuard report yet"}


def test_a_failed_fit_with_nothing_diagnosed_is_never_called_healthy(tmp_path: Path) -> None:
    failed = read_report(write_report(tmp_path / "lossguard.json", [INFO], "failed", 35, notes=["The fit stopped."]))
    assert verdict([failed]) == {
        "level": "failed",
        "text": "Training failed: nothing diagnosed before it (the notes say where it stopped) (1 info)",
    }
    warning = Diagnosis("loss_plateau", Severity.WARNING, 20, "Flat.")
    alarmed = read_report(write_report(tmp_path / "other.json", [warning], "failed", 35))
    assert verdict([alarmed])["level"] == "warning"  # what was diagnosed still leads


def test_run_view_orders_diagnoses_cause_first_and_keeps_every_field(tmp_path: Path) -> None:
    write_report(tmp_path / "lossguard.json", [INFO, ERROR, CAUSE], "alarm", 30, notes=["a note"])
    cost = {"budget": 0.01, "run_share": 0.005, "own_seconds": 0.05, "batches": 1000.0, "step_ms": 10.0}
    write_report(tmp_path / "lossguard-second.json", [], "running", 12, gaps=[Gap("timing", "no clock")], cost=cost)
    (tmp_path / ".lossguard-tmp123.json").write_text("{")  # a write in progress: never read
    (tmp_path / "lossguard-broken.json").write_text("{")
    (tmp_path / "sub").mkdir()
    write_report(tmp_path / "sub" / "lossguard.json", [ERROR], "finished", 9)  # another run's report
    view = run_view("run", tmp_path, {"train_loss": [[9, 1.0]]})
    files = ["lossguard-broken.json", "lossguard-second.json", "lossguard.json"]
    assert [p.name for p in report_files(tmp_path)] == files
    # By step, and within a step in the catalog's cause order.
    assert [d["code"] for d in view["diagnoses"]] == ["loss_scale_shift", "loss_divergence", "exploding_gradients"]
    assert [d["code"] for d in view["diagnoses"]] == [d.code for d in cause_first([INFO, ERROR, CAUSE])]
    first = view["diagnoses"][2]
    assert first["title"] == CATALOG["exploding_gradients"].title and first["documented"] is True
    assert first["report"] == "lossguard.json" and first["remedies"] == list(CAUSE.remedies)
    assert view["verdict"] == {"level": "error", "text": "2 errors, 0 warnings (1 info)"}
    assert view["last_step"] == 30 and view["curves"] == {"train_loss": [[9, 1.0]]}
    broken, second, main = view["reports"]
    assert broken["file"] == "lossguard-broken.json" and "not valid JSON" in broken["error"]
    assert str(tmp_path) not in broken["error"]  # the file's name, not where it lives
    assert second["status"] == "running, step 12" and second["gaps"] == [{"signal": "timing", "reason": "no clock"}]
    assert main["status"] == "stopped by LossGuard at step 30" and main["notes"] == ["a note"]
    assert second["cost"].startswith("0.5% of the training step time (budget 1%; 50 ms in all over 1,000 training")
    assert main["cost"] is None  # the report holds no cost: nothing to say
    assert run_view("run", None, {})["verdict"]["level"] == "unknown"


def test_a_run_over_budget_shows_its_cost_in_one_line_with_the_note_folded_under_it(tmp_path: Path) -> None:
    budget = CostBudget(0.01, report_batches=100, warmup_reviews=0)
    budget.review(IntervalCost(100, 0.06, 10.0, 0.02, 10, 0.02))  # 6% of 100 batches of 10 ms
    note = over_budget_note(budget)
    assert note is not None
    write_report(tmp_path / "lossguard.json", [], "finished", 100, notes=["a note", note], cost=budget.state())
    [report] = run_view("run", tmp_path, {})["reports"]
    assert report["notes"] == ["a note"]  # the cost is not a finding among the notes
    assert report["cost"] == over_budget_line(budget.state()) and report["cost"].startswith("6% of the training")
    assert report["cost_detail"] == note
    write_report(tmp_path / "lossguard.json", [], "finished", 100, notes=["a note", note])  # no cost to hang it on
    [report] = run_view("run", tmp_path, {})["reports"]
    assert report["notes"] == ["a note", note] and report["cost"] is None and report["cost_detail"] is None


def test_the_catalog_page_has_an_anchor_and_every_remedy_per_code() -> None:
    page = catalog_page()
    for code, info in CATALOG.items():
        assert f'id="{code}"' in page and html.escape(info.title) in page
        assert all(html.escape(remedy) in page for remedy in info.remedies)
    assert "http" not in page  # nothing to fetch from elsewhere


def test_importing_the_plugin_loads_neither_torch_nor_lightning() -> None:
    code = "import sys, lightning_lossguard.tensorboard_plugin; print(sorted({'torch', 'lightning'} & {*sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


# -- the routes, in a real TensorBoard -------------------------------------------------------------------


@pytest.mark.slow
def test_the_tab_is_listed_as_an_iframe_plugin_served_from_the_package(server: Server) -> None:
    listing = server.get("/data/plugins_listing")["lossguard"]
    assert listing["enabled"] is True and listing["tab_name"] == "LossGuard"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": "/data/plugin/lossguard/index.js"}
    code, headers, body = server.fetch("/data/plugin/lossguard/index.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"export async function render" in body
    assert b"http" not in body.replace(b"http://www.w3.org/2000/svg", b"")  # no CDN, no network
    code, headers, body = server.fetch("/data/plugin/lossguard/style.css")
    assert code == 200 and headers["Content-Type"].startswith("text/css")
    code, headers, body = server.fetch("/data/plugin/lossguard/catalog.html")
    assert code == 200 and 'id="exploding_gradients"' in body.decode()
    assert "default-src 'self'" in headers["Content-Security-Policy"]  # TensorBoard's policy on our HTML too


@pytest.mark.slow
def test_runs_route_lists_the_runs_with_lossguard_data(server: Server, runs: Runs) -> None:
    assert server.get("/data/plugin/lossguard/runs") == {"runs": sorted(runs.dirs)}


@pytest.mark.slow
def test_run_route_gives_the_faulty_run_cause_first_with_its_curves(server: Server, runs: Runs) -> None:
    view = server.get("/data/plugin/lossguard/run", run=runs.faulty)
    report = read_report(runs.dirs[runs.faulty] / "lossguard.json")
    expected = cause_first(report.diagnoses)
    assert [(d["code"], d["step"]) for d in view["diagnoses"]] == [(d.code, d.step) for d in expected]
    assert view["diagnoses"][0]["code"] == "exploding_gradients"
    assert [d["remedies"] for d in view["diagnoses"]] == [list(d.remedies) for d in expected]
    errors, warnings = (sum(d.severity == s for d in expected) for s in ("error", "warning"))
    assert view["verdict"] == {"level": "error", "text": f"{errors} errors, {warnings} warnings"}
    assert view["reports"][0]["status"] == f"finished at step {report.global_step}"
    scalars = server.get("/data/plugin/scalars/scalars", run=runs.faulty, tag="lossguard/grad_norm")
    assert view["curves"]["grad_norm"] == [[step, value] for _, step, value in scalars]
    assert {"train_loss", "grad_norm", "grad_norm_max", "grad_norm_band_low", "grad_norm_band_high"} <= set(
        view["curves"]
    )


@pytest.mark.slow
def test_run_route_gives_the_healthy_run_its_validation_curve(server: Server, runs: Runs) -> None:
    view = server.get("/data/plugin/lossguard/run", run=runs.healthy)
    assert view["verdict"]["level"] == "healthy" and not [d for d in view["diagnoses"] if d["severity"] != "info"]
    assert len(view["curves"]["val/val_loss"]) >= 2 and len(view["curves"]["train_loss"]) > 10


@pytest.mark.slow
def test_run_route_answers_only_for_listed_runs(server: Server, runs: Runs) -> None:
    for name in ("nope", "../" + runs.faulty, str(runs.dirs[runs.faulty]), "."):
        code, _, body = server.fetch("/data/plugin/lossguard/run", run=name)
        assert code == 404, (name, body)


@pytest.mark.slow
def test_a_live_run_appears_and_updates(tmp_path: Path) -> None:
    with serve(tmp_path) as tb:
        assert tb.get("/data/plugins_listing")["lossguard"]["enabled"] is False  # nothing to show yet
        write_run(tmp_path / "live", range(20), [], status="running")
        tb.wait("/data/plugins_listing", lambda listing: listing["lossguard"]["enabled"])
        view = tb.wait("/data/plugin/lossguard/run", lambda v: len(v["curves"].get("grad_norm", [])) == 2, run="live")
        assert view["verdict"]["text"] == "Healthy: no problems found"
        assert view["reports"][0]["status"] == "running, step 20"

        # The training goes on: more events in a new file, and the report rewritten with a diagnosis.
        write_run(tmp_path / "live", range(20, 40), [CAUSE], status="alarm")
        view = tb.wait("/data/plugin/lossguard/run", lambda v: len(v["curves"]["grad_norm"]) == 4, run="live")
        assert [d["code"] for d in view["diagnoses"]] == ["exploding_gradients"]
        assert view["reports"][0]["status"] == "stopped by LossGuard at step 40"


@pytest.mark.slow
def test_hostile_text_comes_back_as_data(server: Server, runs: Runs) -> None:
    view = server.get("/data/plugin/lossguard/run", run=runs.hostile)
    assert view["diagnoses"][0]["message"] == ATTACK and view["reports"][0]["notes"] == [ATTACK]
    unknown = view["diagnoses"][1]
    assert unknown["documented"] is False and unknown["title"] == ""
    assert view["diagnoses"][0]["subject"] == "layer`<b>bold</b>"  # as written: escaping is the page's job
