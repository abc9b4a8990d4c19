"""The ``lossguard`` command: gate CI on the ``lossguard.json`` reports a run leaves, or show them.

    lossguard check PATH... [--fail-on warning|error] [--junit FILE] [--allow-gaps] [--all-runs]
    lossguard report PATH... [--format table|json|markdown] [--all-runs]

PATH is a log directory (searched recursively for reports; only the latest run of each run family is judged
unless ``--all-runs``, see :mod:`lightning_lossguard.report.runs`) or a report file (always judged).

Exit codes of ``check``, the first that applies: 2 a PATH without a readable report, or a usage error; 1 a
diagnosis at or above the level; 3 a judged report whose coverage is incomplete (unless ``--allow-gaps``);
0 otherwise. ``report`` exits 0, or 2 like ``check``. The command never prints a traceback: any surprise is
one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.text import Text

from lightning_lossguard.catalog import cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.console import STYLE, cost_text, gap_line, summary_table
from lightning_lossguard.report.cost import cost_and_notes, cost_line
from lightning_lossguard.report.json_report import (
    MAX_REPORT_BYTES,
    REPORT_NAME,
    Gap,
    Report,
    ReportError,
    cost_entry,
    find_reports,
    read_report,
)
from lightning_lossguard.report.markdown import counts_line, full_report
from lightning_lossguard.report.runs import latest_runs
from lightning_lossguard.report.safe_text import (
    markdown_code,
    markdown_text,
    one_line,
    workflow_data,
    workflow_property,
    xml_text,
)
from lightning_lossguard.version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_REPORT = 2
EXIT_GAPS = 3
EXIT_INTERRUPTED = 130

MAX_LISTED = 100
"""The most diagnoses (and gaps) of one report that ``check`` lists and annotates and the ``report`` table shows;
the rest are counted, and ``--format json`` or the JUnit file holds them all. A real run has a few dozen."""


@dataclass(frozen=True)
class Problem:
    """A PATH that gave no readable report, and why."""

    path: str
    reason: str


@dataclass
class Loaded:
    """What the PATHs gave: the reports to judge, the paths without one, and how many older runs were passed over."""

    reports: list[Report] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    older_runs: int = 0


def load(paths: Sequence[str], all_runs: bool = False) -> Loaded:
    """The reports under ``paths`` (each file once), and the paths that gave none.

    Args:
        paths: log directories (searched recursively) or report files.
        all_runs: judge every report found in a directory, not only the latest run of each run family.

    Returns:
        The parsed reports in the order found, one :class:`Problem` per missing or unreadable report, and the
        number of reports passed over as older runs.
    """
    loaded = Loaded()
    seen: set[object] = set()
    for raw in paths:
        path = Path(raw)
        if not os.path.lexists(path):
            loaded.problems.append(Problem(raw, f"{raw}: no such file or directory"))
            continue
        try:
            found = find_reports(path)
        except OSError as error:
            loaded.problems.append(Problem(raw, f"{raw}: cannot be searched ({error.strerror or error})"))
            continue
        if not found:
            loaded.problems.append(Problem(raw, f"no {REPORT_NAME} under {raw}"))
            continue
        if not all_runs and len(found) > 1:
            latest = latest_runs(found)
            loaded.older_runs += len(found) - len(latest)
            found = latest
        for file in found:
            key = _identity(file)
            if key in seen:  # a directory and a report inside it were both given
                continue
            seen.add(key)
            try:
                loaded.reports.append(read_report(file))
            except ReportError as error:
                loaded.problems.append(Problem(str(file), str(error)))
    return loaded


def _identity(file: Path) -> object:
    try:
        info = os.stat(file)
        return (info.st_dev, info.st_ino)
    except OSError:  # a broken link or a loop: read_report says what is wrong
        return os.path.abspath(file)


def at_least(report: Report, level: Severity) -> list[Diagnosis]:
    """The report's diagnoses at or above ``level``, cause first."""
    return cause_first(d for d in report.diagnoses if d.severity.at_least(level))


# -- check -------------------------------------------------------------------------------------------------
def check(
    paths: Sequence[str],
    fail_on: str,
    junit: str | None,
    out: Console,
    err: Console,
    allow_gaps: bool = False,
    all_runs: bool = False,
) -> int:
    """Print a verdict per report; the exit code says whether any diagnosis reached ``fail_on``, whether a
    report had coverage gaps, and whether a PATH gave no readable report (see the module docstring)."""
    level = Severity(fail_on)
    loaded = load(paths, all_runs)
    github = os.environ.get("GITHUB_ACTIONS") == "true"
    failed = gapped = 0
    for report in loaded.reports:
        offending = at_least(report, level)
        failed += bool(offending)
        gapped += bool(report.gaps)
        out.print(_verdict(report, offending, level, allow_gaps), soft_wrap=True)
        for d in offending[:MAX_LISTED]:
            out.print(_diagnosis_line(d), soft_wrap=True)
            if github:
                # Plain stdout, not rich: the runner parses these lines verbatim.
                print(annotation(d), flush=True)
        if len(offending) > MAX_LISTED:
            out.print(Text(_more(len(offending) - MAX_LISTED), "dim"), soft_wrap=True)
        for gap in report.gaps[:MAX_LISTED]:
            out.print(gap_line(gap), soft_wrap=True)
            if github:
                print(gap_annotation(report, gap, allowed=allow_gaps), flush=True)
        if len(report.gaps) > MAX_LISTED:
            out.print(Text(_more(len(report.gaps) - MAX_LISTED), "dim"), soft_wrap=True)
    for problem in loaded.problems:
        err.print(Text.assemble(("ERROR ", "bold red"), one_line(problem.reason)), soft_wrap=True)
        if github:
            print(f"::error title=LossGuard report::{workflow_data(problem.reason)}", flush=True)
    if junit and not _write_junit_or_say_why(junit, loaded, level, allow_gaps, err):
        return EXIT_NO_REPORT
    if len(loaded.reports) + len(loaded.problems) > 1 or loaded.older_runs:
        out.print(Text(_tally(loaded, failed, gapped, level, allow_gaps), style="bold"), soft_wrap=True)
    if loaded.problems:
        return EXIT_NO_REPORT
    if failed:
        return EXIT_FAILED
    return EXIT_GAPS if gapped and not allow_gaps else EXIT_OK


def _tally(loaded: Loaded, failed: int, gapped: int, level: Severity, allow_gaps: bool) -> str:
    parts = [f"lossguard check: {failed} of {len(loaded.reports)} report(s) at or above {level.value}"]
    if gapped:
        parts.append(f"{gapped} with coverage gaps" + (" (allowed)" if allow_gaps else ""))
    if loaded.problems:
        parts.append(f"{len(loaded.problems)} path(s) without a readable report")
    if loaded.older_runs:
        parts.append(f"{loaded.older_runs} older run(s) not judged (--all-runs judges them)")
    return "; ".join(parts)


def _verdict(report: Report, offending: list[Diagnosis], level: Severity, allow_gaps: bool) -> Text:
    where = f"  {one_line(str(report.path))}  ({one_line(report.status)} at step {report.global_step}): "
    gaps = f"{len(report.gaps)} coverage gap(s)" if report.gaps else ""
    if offending:
        text = f"{len(offending)} diagnosis(es) at or above {level.value}" + (f"; {gaps}" if gaps else "")
        return Text.assemble(("FAIL", "bold red"), where, text)
    below = f" ({counts_line(report.diagnoses)})" if report.diagnoses else ""
    if gaps and not allow_gaps:
        text = f"nothing at or above {level.value}{below}, but LossGuard could not watch everything: {gaps}"
        return Text.assemble(("GAPS", "bold yellow"), where, text)
    allowed = f"; {gaps} allowed (--allow-gaps)" if gaps else ""
    return Text.assemble(("PASS", "bold green"), where, f"nothing at or above {level.value}{below}{allowed}")


def _diagnosis_line(d: Diagnosis) -> Text:
    line = Text.assemble(
        "  ",
        (f"{d.severity.value} {one_line(d.code)}", STYLE[d.severity]),
        (f" at step {d.step}: ", "dim"),
        one_line(d.message),
    )
    if d.remedies:
        line.append_text(Text.assemble(("\n    → ", "dim"), one_line(d.remedies[0])))
    return line


def _more(hidden: int) -> str:
    return f"  ... and {hidden} more (lossguard report --format json lists them all)"


def annotation(d: Diagnosis) -> str:
    """A GitHub Actions workflow command: ``::error title=LossGuard <code>::<message> (step N)``."""
    kind = "error" if d.severity is Severity.ERROR else "warning"
    title = workflow_property(f"LossGuard {d.code}")
    return f"::{kind} title={title}::{workflow_data(f'{d.message} (step {d.step})')}"


def gap_annotation(report: Report, gap: Gap, allowed: bool) -> str:
    """``::error title=LossGuard coverage::<report>: not watched: <signal>: <reason>`` (a warning when allowed)."""
    kind = "warning" if allowed else "error"
    return (
        f"::{kind} title=LossGuard coverage::{workflow_data(f'{report.path}: not watched: {gap.signal}: {gap.reason}')}"
    )


# -- JUnit ------------------------------------------------------------------------------------------------
def write_junit(
    path: str, reports: Sequence[Report], problems: Sequence[Problem], level: Severity, allow_gaps: bool = False
) -> Path:
    """Write JUnit XML: one testsuite per report, one testcase per diagnosis and per coverage gap.

    A diagnosis at or above ``level`` is a ``<failure>`` (message, evidence and remedies in its text); one
    below it is a passing testcase with its text in ``<system-out>``; a report without diagnoses gets one
    passing testcase. A coverage gap is a ``<failure>`` (type ``coverage_gap``), or ``<skipped>`` with
    ``allow_gaps``. A path without a readable report is a testsuite with an ``<error>``. Every string is
    made valid XML (:func:`~.safe_text.xml_text`), whatever a report or a file name holds.
    """
    root = ET.Element("testsuites", name="lossguard")
    for report in reports:
        suite = _suite(root, str(report.path))
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("status", report.status),
            ("global_step", str(report.global_step)),
            ("fail_on", level.value),
            ("schema_version", str(report.schema_version)),
            ("coverage", "complete" if report.complete else "incomplete"),
        ):
            ET.SubElement(props, "property", name=name, value=xml_text(value))
        classname = _classname(report.path)
        for d in cause_first(report.diagnoses):
            name = f"{d.code} ({d.subject})" if d.subject else d.code
            case = _case(suite, classname, name)
            if d.severity.at_least(level):
                failure = ET.SubElement(case, "failure", message=xml_text(d.message), type=xml_text(d.code))
                failure.text = xml_text(_details(d, report))
            else:
                ET.SubElement(case, "system-out").text = xml_text(_details(d, report))
        if not report.diagnoses:
            _case(suite, classname, "no diagnoses")
        for gap in report.gaps:
            case = _case(suite, classname, f"coverage: {gap.signal}")
            message = xml_text(f"not watched: {gap.signal}: {gap.reason}")
            if allow_gaps:
                ET.SubElement(case, "skipped", message=message)
            else:
                ET.SubElement(case, "failure", message=message, type="coverage_gap").text = xml_text(
                    f"LossGuard could not watch {gap.signal}: {gap.reason}\nreport: {report.path}"
                )
    for problem in problems:
        suite = _suite(root, problem.path)
        case = _case(suite, _classname(Path(problem.path)), "read report")
        ET.SubElement(case, "error", message=xml_text(problem.reason), type="ReportError").text = xml_text(
            problem.reason
        )
    _count(root, root.findall("testsuite"))
    for suite in root.findall("testsuite"):
        _count(suite, [suite])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(target, encoding="utf-8", xml_declaration=True)
    return target


def _write_junit_or_say_why(path: str, loaded: Loaded, level: Severity, allow_gaps: bool, err: Console) -> bool:
    try:
        write_junit(path, loaded.reports, loaded.problems, level, allow_gaps)
    except OSError as error:
        reason = f"{error.strerror}: {error.filename}" if error.strerror and error.filename else str(error)
        err.print(
            Text.assemble(("ERROR ", "bold red"), one_line(f"{path}: cannot write the JUnit file ({reason})")),
            soft_wrap=True,
        )
        return False
    return True


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=xml_text(name))


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=xml_text(name), time="0")


def _count(element: ET.Element, suites: Sequence[ET.Element]) -> None:
    cases = [c for s in suites for c in s.findall("testcase")]
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    element.set("errors", str(sum(c.find("error") is not None for c in cases)))
    element.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    element.set("time", "0")


def _classname(path: Path) -> str:
    # Reporters split classnames on dots: keep the run's directory as one readable segment.
    run = path.parent if path.name == REPORT_NAME else path.with_suffix("")
    return "lossguard." + (re.sub(r"[^A-Za-z0-9_]+", "_", str(run)).strip("_") or "run")


def _details(d: Diagnosis, report: Report) -> str:
    lines = [f"{d.severity.value} {d.code} at step {d.step}" + (f" ({d.subject})" if d.subject else ""), d.message]
    if d.evidence:
        lines.append(f"evidence: {d.evidence_text()}")
    if d.remedies:
        lines.append("remedies:")
        lines += [f"  {i}. {r}" for i, r in enumerate(d.remedies, start=1)]
    lines.append(f"report: {report.path}")
    return "\n".join(lines)


# -- report -----------------------------------------------------------------------------------------------
def show(paths: Sequence[str], fmt: str, out: Console, err: Console, all_runs: bool = False) -> int:
    """Show every report's diagnoses (cause first) as a table, JSON or markdown."""
    loaded = load(paths, all_runs)
    if fmt == "json":
        # Plain stdout: rich would wrap long strings and break the JSON.
        print(json.dumps([_as_json(r) for r in loaded.reports], indent=2))
    elif fmt == "markdown":
        print("\n\n".join(_as_markdown(r) for r in loaded.reports))
    else:
        for r in loaded.reports:
            _print_table(r, out)
    for problem in loaded.problems:
        err.print(Text.assemble(("ERROR ", "bold red"), one_line(problem.reason)), soft_wrap=True)
    if loaded.older_runs:  # stderr: stdout stays valid JSON or markdown
        err.print(
            Text(f"lossguard report: {loaded.older_runs} older run(s) not shown (--all-runs shows them)"),
            soft_wrap=True,
        )
    return EXIT_NO_REPORT if loaded.problems else EXIT_OK


def _as_json(r: Report) -> dict[str, object]:
    return {
        "path": str(r.path),
        "schema_version": r.schema_version,
        "status": r.status,
        "global_step": r.global_step,
        "fail_on": r.fail_on,
        "counts": {s.value: sum(d.severity is s for d in r.diagnoses) for s in Severity},
        "diagnoses": [d.to_dict() for d in cause_first(r.diagnoses)],
        "notes": list(r.notes),
        "coverage": {"complete": r.complete, "gaps": [g.to_dict() for g in r.gaps]},
        **cost_entry(r.cost),
    }


def _as_markdown(r: Report) -> str:
    header = (
        f"# LossGuard: {markdown_code(str(r.path))}\n\nStatus **{markdown_text(r.status)}** at step {r.global_step}."
    )
    cost = cost_line(r.cost)
    header += f" LossGuard's own time: {markdown_text(cost)}" if cost else ""
    return f"{header}\n\n{full_report(r.diagnoses, r.notes, r.gaps, r.status == 'failed')}"


def _print_table(r: Report, out: Console) -> None:
    out.print(
        Text.assemble(
            (one_line(str(r.path)), "bold"),
            f"  {one_line(r.status)} at step {r.global_step}: {counts_line(r.diagnoses)}",
            ("; coverage incomplete" if r.gaps else "", "yellow"),
        ),
        soft_wrap=True,
    )
    for gap in r.gaps[:MAX_LISTED]:
        out.print(gap_line(gap))
    if len(r.gaps) > MAX_LISTED:
        out.print(Text(_more(len(r.gaps) - MAX_LISTED), "dim"), soft_wrap=True)
    if r.diagnoses:
        shown = cause_first(r.diagnoses)[:MAX_LISTED]
        out.print(summary_table(shown, title=None, full=True))
        if len(r.diagnoses) > MAX_LISTED:
            out.print(Text(_more(len(r.diagnoses) - MAX_LISTED), "dim"), soft_wrap=True)
    elif r.status == "failed":
        out.print(Text("  no diagnoses before the fit failed (the note says where it stopped).", "red"))
    elif r.gaps:
        out.print(Text("  no diagnoses in what LossGuard watched.", "yellow"))
    else:
        out.print(Text("  no diagnoses: LossGuard found nothing wrong.", "green"))
    cost, notes, _ = cost_and_notes(r.cost, r.notes)
    for note in notes:
        out.print(Text.assemble(("  note: ", "dim"), one_line(note)))
    if cost:
        out.print(cost_text(cost))


# -- entry point ------------------------------------------------------------------------------------------
_RUNS_HELP = (
    "only the latest run of each run family is judged: a family is the folder above the runs' folders (with "
    "the report's file name), e.g. lightning_logs/version_*/; the latest is the highest N when every run "
    "folder is named version_N, otherwise the report written last. --all-runs judges every report found; "
    "a PATH that is a report file is always judged."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossguard`` command."""
    parser = argparse.ArgumentParser(
        prog="lossguard",
        description="Read the lossguard.json reports that LossGuard leaves in a run's log directory.",
        epilog=(
            "exit codes (check), the first that applies: 2 no report found or readable under a PATH, or a "
            "usage error; 1 a diagnosis at or above --fail-on; 3 LossGuard could not watch all of a run "
            "(coverage gaps; --allow-gaps accepts them); 0 ok.\n"
            "PATH is a log directory (searched recursively for lossguard.json) or a report file; in a "
            f"directory, {_RUNS_HELP}\n"
            f"Files larger than {MAX_REPORT_BYTES // 2**20} MiB, and anything but a regular file, are refused "
            "unread."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lossguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check_parser = commands.add_parser(
        "check",
        help="exit 1 when a report has a diagnosis at or above --fail-on (a CI gate)",
        description=(
            "Print a verdict per report. Exit 2 when a PATH has no readable report; else 1 when any report "
            "has a diagnosis at or above --fail-on; else 3 when a report says LossGuard could not watch all "
            "of the run (coverage gaps), unless --allow-gaps; else 0. Inside GitHub Actions "
            "(GITHUB_ACTIONS=true) each such diagnosis and gap is also printed as a workflow annotation. "
            f"In a directory, {_RUNS_HELP}"
        ),
    )
    check_parser.add_argument("paths", nargs="+", metavar="PATH", help="log directory or lossguard.json file")
    check_parser.add_argument(
        "--fail-on",
        choices=["warning", "error"],
        default="error",
        help="lowest severity that fails the check (default: error)",
    )
    check_parser.add_argument(
        "--junit",
        metavar="FILE",
        help="also write JUnit XML: a testsuite per report, a failing testcase per diagnosis at the level and "
        "per coverage gap",
    )
    check_parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="do not fail (exit 3) when LossGuard could not watch all of a run; the gaps are still shown",
    )
    check_parser.add_argument(
        "--all-runs", action="store_true", help="judge every report found, not only the latest runs"
    )

    report_parser = commands.add_parser(
        "report",
        help="show the diagnoses with their evidence and remedies",
        description=(
            "Show every report's diagnoses, cause first, and what LossGuard could not watch. Exit 0, or 2 when "
            f"a PATH has no readable report. In a directory, {_RUNS_HELP}"
        ),
    )
    report_parser.add_argument("paths", nargs="+", metavar="PATH", help="log directory or lossguard.json file")
    report_parser.add_argument(
        "--format",
        choices=["table", "json", "markdown"],
        default="table",
        help="table (default, for people), json (a list, one object per report) or markdown",
    )
    report_parser.add_argument(
        "--all-runs", action="store_true", help="show every report found, not only the latest runs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``lossguard`` command; returns the exit code. Never raises (but for ``--help``/usage exits)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("lossguard: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``lossguard report ... | head``): nothing more to say
        _silence_stdout()
        return EXIT_NO_REPORT
    except Exception as error:  # the last resort: every known case is handled where it happens
        reason = one_line(f"{type(error).__name__}: {error}")[:500]
        print(f"lossguard: unexpected error ({reason}); please report this", file=sys.stderr)
        return EXIT_NO_REPORT


def _run(argv: list[str] | None) -> int:
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a terminal that cannot show "→" still gets the verdict
    parser = build_parser()
    # Subcommands cannot use parse_intermixed_args: collect paths given after an option by hand.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.paths += extra
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if args.command == "check":
        return check(args.paths, args.fail_on, args.junit, out, err, args.allow_gaps, args.all_runs)
    return show(args.paths, args.format, out, err, args.all_runs)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush does not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
