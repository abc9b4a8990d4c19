"""LoggerReporter against a real TensorBoardLogger: what lands in the event files, and the dashboard layout."""

import re
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.report.loggers import LAYOUT, LoggerReporter
from tests.conftest import events

NAN = float("nan")


def steps_and_values(acc, tag: str) -> tuple[list[int], list[float]]:  # type: ignore[no-untyped-def]
    points = acc.Scalars(tag)
    return [p.step for p in points], [round(p.value, 6) for p in points]


def test_margin_series_share_their_steps_and_magnitudes_get_log10_copies(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="run")
    csv = CSVLogger(str(tmp_path), name="csv")
    reporter = LoggerReporter([tb, csv])
    reporter.start()
    steps = [0, 1, 2, 3]
    reporter.scalars(
        {
            # The band exists from step 2 only and the norm is NaN at step 3: the Margin chart needs both
            # series at exactly the same steps, or TensorBoard refuses to draw it.
            "lossguard/grad_norm": (steps, [1.0, 10.0, 100.0, NAN]),
            "lossguard/grad_norm_band_low": (steps[2:], [0.1, 0.1]),
            "lossguard/grad_norm_band_high": (steps[2:], [1000.0, 1000.0]),
            "lossguard/train_loss": (steps, [0.5, -1.0, 1.0, 2.0]),
            "lossguard/loss_step_ms": (steps, [1.0, 2.0, 3.0, 4.0]),
        }
    )
    tb.experiment.flush()
    acc = events(tb.log_dir)
    # One point per series and report: the median of its finite values, at the interval's last step.
    assert steps_and_values(acc, "lossguard/grad_norm") == ([3], [10.0])
    assert steps_and_values(acc, "lossguard/grad_norm_max") == ([3], [100.0])  # the spike stays visible
    for tag, value in [("grad_norm", 1.0), ("grad_norm_band_low", -1.0), ("grad_norm_band_high", 3.0)]:
        assert steps_and_values(acc, f"lossguard/log10/{tag}") == ([3], [value])
    assert steps_and_values(acc, "lossguard/log10/grad/norm_max") == ([3], [2.0])
    assert steps_and_values(acc, "lossguard/train_loss") == ([3], [0.75])
    assert steps_and_values(acc, "lossguard/log10/train_loss")[0] == [3]
    assert not any(t.startswith("lossguard/log10/loss_step") for t in acc.Tags()["scalars"])
    csv.save()
    header = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()[0]
    assert "lossguard/grad_norm" in header and "log10" not in header  # the copies are for TensorBoard only


def test_alarm_count_is_a_staircase_from_zero(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="run")
    reporter = LoggerReporter([tb])
    warning = Diagnosis("loss_plateau", Severity.WARNING, 19, "Flat.")
    info = Diagnosis("loss_scale_shift", Severity.INFO, 19, "Shift.")
    reporter.scalars({"lossguard/train_loss": ([0, 9], [1.0, 1.0])})
    reporter.diagnoses([warning, info], [warning, info], [], 20)
    reporter.scalars({"lossguard/train_loss": ([20, 29], [1.0, 1.0])})
    reporter.flush()
    acc = events(tb.log_dir)
    assert steps_and_values(acc, "lossguard/alarms") == ([9, 20, 29], [0.0, 1.0, 1.0])


def test_every_dashboard_chart_reads_lossguard_tags() -> None:
    for category, charts in LAYOUT.items():
        assert category.startswith("LossGuard")
        for title, (kind, tags) in charts.items():
            assert kind in ("Multiline", "Margin"), title
            assert all(re.sub(r"^\^", "", t).startswith("lossguard/") for t in tags), title
            re.compile("|".join(tags))
    kinds = [kind for kind, _ in LAYOUT["LossGuard"].values()]
    assert kinds[-1] == "Margin" and kinds.count("Margin") == 1  # TensorBoard puts Margin charts last anyway
