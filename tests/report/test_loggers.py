"""LoggerReporter against a real TensorBoardLogger: what lands in the event files, and the dashboard layout."""

import re
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.diagnostician import RunLayout
from lightning_lossguard.report.loggers import LoggerReporter, dashboard
from lightning_lossguard.signals.window import Window
from tests.conftest import events

NAN = float("nan")


def steps_and_values(acc, tag: str) -> tuple[list[int], list[float]]:  # type: ignore[no-untyped-def]
    points = acc.Scalars(tag)
    return [p.step for p in points], [round(p.value, 6) for p in points]


def test_one_point_per_series_and_report_and_no_copies(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="run")
    csv = CSVLogger(str(tmp_path), name="csv")
    reporter = LoggerReporter([tb, csv])
    reporter.start()
    steps = [0, 1, 2, 3]
    reporter.scalars(
        {
            "lossguard/grad_norm": (steps, [1.0, 10.0, 100.0, NAN]),
            "lossguard/grad_norm_band_low": (steps[2:], [0.1, 0.1]),
            "lossguard/grad_norm_band_high": (steps[2:], [1000.0, 1000.0]),
            "lossguard/train_loss": (steps, [0.5, -1.0, 1.0, 2.0]),
            "lossguard/loss_step_ms": (steps, [1.0, 2.0, 3.0, 4.0]),
            "lossguard/val/val_loss": ([3], [0.25]),
        }
    )
    tb.experiment.flush()
    acc = events(tb.log_dir)
    # One point per series and report: the median of its finite values, at the interval's last step.
    assert steps_and_values(acc, "lossguard/grad_norm") == ([3], [10.0])
    assert steps_and_values(acc, "lossguard/grad_norm_max") == ([3], [100.0])  # the spike stays visible
    assert steps_and_values(acc, "lossguard/grad_norm_band_high") == ([3], [1000.0])
    assert steps_and_values(acc, "lossguard/train_loss") == ([3], [0.75])
    assert steps_and_values(acc, "lossguard/val/val_loss") == ([3], [0.25])  # the LossGuard tab draws it
    assert sorted(acc.Tags()["scalars"]) == [
        "lossguard/grad_norm",
        "lossguard/grad_norm_band_high",
        "lossguard/grad_norm_band_low",
        "lossguard/grad_norm_max",
        "lossguard/loss_step_ms",
        "lossguard/train_loss",
        "lossguard/val/val_loss",
    ]  # no log10 copies, no alarm counter
    csv.save()
    header = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    # Other loggers hold the run's own validation metric already: no second copy there.
    assert "lossguard/grad_norm" in header and not any(c.startswith("lossguard/val/") for c in header)


def test_diagnoses_write_text_and_no_counter(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="run")
    csv = CSVLogger(str(tmp_path), name="csv")
    reporter = LoggerReporter([tb, csv])
    warning = Diagnosis("loss_plateau", Severity.WARNING, 19, "Flat.")
    reporter.scalars({"lossguard/train_loss": ([0, 9], [1.0, 1.0])})
    reporter.diagnoses([warning], [warning], [], 20)
    reporter.scalars({"lossguard/train_loss": ([20, 29], [1.0, 1.0])})
    reporter.flush()
    acc = events(tb.log_dir)
    assert acc.Tags()["scalars"] == ["lossguard/train_loss"]
    assert {"lossguard/diagnoses/text_summary", "lossguard/diagnoses/loss_plateau/text_summary"} <= set(
        acc.Tags()["tensors"]
    )
    csv.save()
    assert "alarms" not in (Path(csv.log_dir) / "metrics.csv").read_text()


def test_dashboard_charts_read_lossguard_tags_and_gain_loss_terms_when_they_appear() -> None:
    for layout in (dashboard(), dashboard(loss_terms=True)):
        for category, charts in layout.items():
            assert category.startswith("LossGuard")
            for title, (kind, tags) in charts.items():
                assert kind == "Multiline", title
                assert all(re.sub(r"^\^", "", t).startswith("lossguard/") for t in tags), title
                re.compile("|".join(tags))
    assert "loss terms" not in dashboard()["LossGuard"] and "loss terms" in dashboard(True)["LossGuard"]
    [norms] = dashboard()["LossGuard"].values()
    pattern = re.compile("|".join(f"({t})" for t in norms[1]))  # as TensorBoard joins a chart's tags
    matched = ["lossguard/grad_norm", "lossguard/grad_norm_max", "lossguard/grad_norm_clipped"]
    assert all(pattern.search(t) for t in [*matched, "lossguard/grad/first_layer_norm"])
    assert not any(pattern.search(t) for t in ["lossguard/grad_norm_band_low", "lossguard/train_loss"])


def test_the_layout_gains_the_loss_terms_chart_when_terms_are_logged(tmp_path: Path) -> None:
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util.tensor_util import make_ndarray

    tb = TensorBoardLogger(str(tmp_path), name="run")
    reporter = LoggerReporter([tb])
    reporter.start()
    terms = {"mse": np.array([1.0, 1.0]), "l2": np.array([0.1, 0.1])}
    window = Window(batch_steps=[0, 1], loss=np.array([1.1, 1.1]), loss_terms=terms)
    for _ in range(2):  # written once more when terms appear, not at every report
        reporter.signals(window, RunLayout(), None)
    reporter.flush()
    configs = events(tb.log_dir).Tensors("custom_scalars__config__")
    layouts = [layout_pb2.Layout.FromString(make_ndarray(c.tensor_proto).item()) for c in configs]
    assert [[chart.title for chart in layout.category[0].chart] for layout in layouts] == [
        ["gradient norm: whole model (pre-clip, interval max, post-clip) and by depth"],
        ["gradient norm: whole model (pre-clip, interval max, post-clip) and by depth", "loss terms"],
    ]


def test_a_validation_is_one_tensorboard_event_and_no_copy_elsewhere(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="run")
    csv = CSVLogger(str(tmp_path), name="csv")
    reporter = LoggerReporter([tb, csv])
    reporter.start()
    reporter.validation({"val_loss": 0.25, "val_loss/dataloader_idx_1": NAN}, step=7)
    reporter.validation({"val_loss": 0.5}, step=9)
    tb.experiment.flush()
    acc = events(tb.log_dir)
    assert steps_and_values(acc, "lossguard/val/val_loss") == ([7, 9], [0.25, 0.5])
    assert "lossguard/val/val_loss/dataloader_idx_1" not in acc.Tags()["scalars"]  # nothing to draw for a NaN
    csv.save()
    assert not (Path(csv.log_dir) / "metrics.csv").exists()  # the run logs its own validation metric there
