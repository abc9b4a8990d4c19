import io

from rich.console import Console

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.markdown import diagnoses_table, full_report

OLD = Diagnosis("loss_plateau", Severity.WARNING, 10, "Stuck | flat.", {"improvement": 0.01}, ["Raise the LR.", "b"])
NEW = Diagnosis("nonfinite_loss", Severity.ERROR, 50, "NaN.", {"first_step": 48}, ["Inspect the batch.", "c"])


def test_table_is_newest_first_and_escapes_pipes() -> None:
    table = diagnoses_table([OLD, NEW])
    lines = table.splitlines()
    assert lines[0].startswith("| step | severity | code |")
    assert "nonfinite_loss" in lines[2] and "loss_plateau" in lines[3]
    assert "Stuck \\| flat." in table and "first_step=48" in table


def test_full_report_lists_every_remedy_and_notes() -> None:
    text = full_report([OLD, NEW], ["too short"])
    assert "1. Inspect the batch.\n2. c" in text and "- too short" in text
    assert full_report([]).count("No diagnoses") == 1


def test_console_prints_a_line_per_diagnosis_and_a_summary() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=120, color_system=None))
    reporter.new_diagnoses([NEW])
    reporter.summary([OLD, NEW], ["too short"], "/runs/lossguard.json")
    text = out.getvalue()
    assert "LossGuard ERROR nonfinite_loss at step 50: NaN." in text
    assert "→ Inspect the batch." in text
    assert text.index("nonfinite_loss", text.index("LossGuard summary")) < text.index("loss_plateau")
    assert "/runs/lossguard.json" in text


def test_quiet_console_prints_nothing() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out), enabled=False)
    reporter.new_diagnoses([NEW])
    reporter.summary([NEW], ["x"], None)
    assert out.getvalue() == ""
