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
from lightning_lossguard.report.json_report import Gap
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


# -- coverage gaps ------------------------------------------------------------------------------------------
GAP = Gap("gradients", "an internal error stopped the gradient measurements")


def test_summary_with_a_gap_never_says_no_problems_and_names_what_was_not_watched() -> None:
    for diagnoses in ([], [NEW]):
        out = io.StringIO()
        ConsoleReporter(Console(file=out, width=120, color_system=None)).summary(diagnoses, [], None, gaps=[GAP])
        text = out.getvalue()
        assert "no problems" not in text and "nothing wrong" not in text
        assert "not watched: gradients: an internal error stopped the gradient measurements" in text
    assert "coverage incomplete" in text or "could not watch everything" in text
    out = io.StringIO()
    ConsoleReporter(Console(file=out, width=120, color_system=None)).summary([], [], None)
    assert out.getvalue() == "LossGuard no problems found.\n"


def test_summary_of_a_failed_fit_never_says_no_problems() -> None:
    out = io.StringIO()
    note = "The fit stopped at step 35 on RuntimeError: user bug."
    ConsoleReporter(Console(file=out, width=120, color_system=None)).summary([], [note], None, failed=True)
    text = out.getvalue()
    assert "no problems" not in text and "the fit failed: no diagnosis in the batches before it" in text
    assert note in text


def test_full_report_of_a_failed_fit_never_says_nothing_was_wrong() -> None:
    text = full_report([], ["The fit stopped at step 35 on RuntimeError: user bug."], failed=True)
    assert text.startswith("## LossGuard: the fit failed\n\nNo diagnoses in the batches before the fit failed")
    assert "nothing wrong" not in text and "- The fit stopped at step 35" in text
    assert full_report([NEW], failed=True).startswith("## LossGuard: the fit failed; ")


def test_full_report_with_a_gap_says_what_was_not_watched_first() -> None:
    text = full_report([], ["too short"], [GAP])
    assert text.startswith("## LossGuard: coverage incomplete\n\n**Not watched.**")
    assert "- **gradients**: an internal error stopped the gradient measurements" in text
    assert "nothing wrong" not in text and "No diagnoses in what LossGuard watched." in text
    with_diagnoses = full_report([NEW], [], [GAP])
    assert with_diagnoses.startswith("## LossGuard: 1 error, 0 warnings, 0 info; coverage incomplete")
    assert with_diagnoses.index("Not watched") < with_diagnoses.index("nonfinite_loss")


def test_a_note_that_starts_with_lossguard_is_not_prefixed_twice() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=200, color_system=None))
    reporter.note("LossGuard hit an internal error in report and stopped watching this run.")
    reporter.note("Gradient diagnoses are off under FSDP.")
    assert out.getvalue().splitlines() == [
        "LossGuard hit an internal error in report and stopped watching this run.",
        "LossGuard Gradient diagnoses are off under FSDP.",
    ]


def test_summary_at_80_columns_wraps_and_never_cuts() -> None:
    long_remedies = [
        "Keep the best checkpoint: ModelCheckpoint(monitor='val_loss'), EarlyStopping(monitor='val_loss').",
        "Clip gradients: Trainer(gradient_clip_val=1.0).",
    ]
    d = Diagnosis("output_range_mismatch", Severity.WARNING, 123456, "x " * 80, {"a": 1.0}, long_remedies, "net.0")
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(summary_table([d]))
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    assert all(len(line) <= 80 for line in rows) and "…" not in out.getvalue()
    text_column = " ".join(line.split("│")[3] for line in rows)
    for remedy in long_remedies:
        assert " ".join(remedy.split()) in " ".join(text_column.split())
    assert "output_range_mismatch" in out.getvalue() and "123456" in out.getvalue()
