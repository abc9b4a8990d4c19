"""The markdown report (TensorBoard's Text tab, ``lossguard report --format markdown``) and the rich console."""

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import rich
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console

from benchmarks.fault_zoo.scenarios import build
from lightning_lossguard import Diagnosis, LossGuard, Severity
from lightning_lossguard.report.console import ConsoleReporter, summary_table
from lightning_lossguard.report.markdown import diagnoses_table, diagnosis_section, full_report
from tests.conftest import trainer

OLD = Diagnosis("loss_plateau", Severity.WARNING, 10, "Stuck | flat.", {"improvement": 0.01}, ["Raise the LR.", "b"])
NEW = Diagnosis("nonfinite_loss", Severity.ERROR, 50, "NaN.", {"first_step": 48}, ["Inspect the batch.", "c"])
LAYER = Diagnosis("dead_gradients", Severity.WARNING, 30, "Dead.", {"dead_share": 0.9}, ["Re-init."], "net|0")
INFO = Diagnosis("loss_scale_shift", Severity.INFO, 5, "Shift.", {"factor": 12.5}, [])


def test_table_is_cause_first_with_short_cells_only() -> None:
    lines = diagnoses_table([NEW, LAYER, OLD]).splitlines()
    assert lines[0] == "| step | severity | code | about | in short |"
    assert lines[2].startswith("| 10 | **WARNING** | `loss_plateau` | the run |")
    assert lines[3].startswith("| 30 | **WARNING** | `dead_gradients` | net\\|0 |")  # a `|` cannot sit in a code span
    assert lines[4] == "| 50 | **ERROR** | `nonfinite_loss` | the run | The loss is NaN or Inf |"
    assert "Stuck" not in "\n".join(lines)  # long messages would squeeze the other columns


def test_section_has_evidence_as_numbers_and_every_remedy_as_a_list() -> None:
    text = diagnosis_section(
        Diagnosis("x_code", Severity.ERROR, 7, "Boom.", {"ratio": 34061.77, "step": 5.0}, ["a", "b"])
    )
    assert text.startswith("### ERROR · x_code (`x_code`) at step 7\n\nBoom.")  # unknown code: no catalog title
    assert "| ratio | 3.406e+04 |" in text and "| step | 5 |" in text
    assert "1. a\n2. b" in text
    bare = diagnosis_section(Diagnosis("x_code", Severity.INFO, 7, "Boom."))
    assert "evidence" not in bare and "What to do" not in bare


def test_full_report_counts_then_cause_first_then_notes() -> None:
    text = full_report([NEW, INFO, OLD], ["too short"])
    assert text.startswith("## LossGuard: 1 error, 1 warning, 1 info")
    assert "By step, causes before their symptoms" in text
    sections = [text.index(f"(`{d.code}`) at step {d.step}") for d in (INFO, OLD, NEW)]
    assert sections == sorted(sections)
    assert "1. Inspect the batch.\n2. c" in text and text.endswith("**Notes**\n\n- too short")
    assert full_report([]).count("No diagnoses") == 1


def test_one_step_puts_the_cause_before_its_symptoms_everywhere() -> None:
    nan = Diagnosis("nonfinite_loss", Severity.ERROR, 40, "NaN.", {}, ["Inspect."])
    explosion = Diagnosis("exploding_gradients", Severity.ERROR, 40, "Boom.", {}, ["Clip."])
    earlier = Diagnosis("loss_plateau", Severity.WARNING, 20, "Flat.", {}, ["Raise."])
    given = [nan, explosion, earlier]  # neither by step nor cause first
    expected = ["loss_plateau", "exploding_gradients", "nonfinite_loss"]
    table = diagnoses_table(given)
    assert sorted(expected, key=lambda code: table.index(f"`{code}`")) == expected
    text = full_report(given)
    assert sorted(expected, key=lambda code: text.index(f"(`{code}`) at step")) == expected
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(summary_table(given))
    rendered = out.getvalue()
    assert sorted(expected, key=rendered.index) == expected


def test_console_prints_a_line_per_diagnosis_and_a_summary() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=120, color_system=None))
    reporter.new_diagnoses([NEW])
    reporter.summary([OLD, NEW], ["too short"], "/runs/lossguard.json")
    text = out.getvalue()
    assert "LossGuard ERROR nonfinite_loss at step 50: NaN." in text
    assert "→ Inspect the batch." in text
    assert "LossGuard summary: 1 error, 1 warning, 0 info" in text
    summary = text[text.index("LossGuard summary") :]
    assert summary.index("loss_plateau") < summary.index("nonfinite_loss")  # by step: the earlier first
    assert "/runs/lossguard.json" in text


def test_quiet_console_prints_nothing() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out), enabled=False)
    reporter.new_diagnoses([NEW])
    reporter.note("x")
    reporter.summary([NEW], ["x"], None)
    assert out.getvalue() == ""


@pytest.fixture
def rich_console() -> Iterator[None]:
    """RichProgressBar reconfigures rich's global console: put it back for the other tests."""
    console = rich.get_console()
    saved = dict(console.__dict__)
    yield
    console.__dict__ = saved


def _fit_with_progress_bar(tmp_path: Path, verbose: bool) -> str:
    out = io.StringIO()
    bar = RichProgressBar(console_kwargs={"file": out, "force_terminal": True, "width": 100, "color_system": None})
    run = build("lr_too_high_sgd")
    guard = LossGuard(report_every=10, verbose=verbose)
    trainer(tmp_path, [guard, bar], enable_progress_bar=True, max_steps=40).fit(run.module, run.train)
    return out.getvalue()


@pytest.mark.usefixtures("rich_console")
def test_live_diagnoses_print_above_the_rich_progress_bar(tmp_path: Path) -> None:
    out = _fit_with_progress_bar(tmp_path, verbose=True)
    start = out.index("LossGuard ERROR exploding_gradients")
    # The bar's line is erased, the diagnosis written in its place, and the bar drawn again below it.
    assert out[:start].endswith("\x1b[2K")
    end = out.index("\n", out.index("→ Clip gradients", start))
    assert out[end + 1 :].startswith("Epoch")


@pytest.mark.usefixtures("rich_console")
def test_verbose_false_prints_nothing_with_a_progress_bar(tmp_path: Path) -> None:
    out = _fit_with_progress_bar(tmp_path, verbose=False)
    assert "Epoch" in out and "LossGuard" not in out
