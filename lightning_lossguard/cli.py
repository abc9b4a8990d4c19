"""The ``lossguard`` command: gate CI on the ``lossguard.json`` reports a run leaves, or show them.

    lossguard check PATH... [--fail-on warning|error] [--junit FILE]
    lossguard report PATH... [--format table|json|markdown]

PATH is a log directory (searched recursively for ``lossguard.json``) or a report file. Exit codes:
0 nothing at or above the level (``check``) / the reports were shown (``report``); 1 a diagnosis at
or above the level (``check`` only); 2 a PATH without a readable report, or a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.json_report import REPORT_NAME, Report, ReportError, find_reports, read_report
from lightning_lossguard.report.markdown import counts_line, full_report
from lightning_lossguard.version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_REPORT = 2

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
# XML 1.0 forbids these control characters even when escaped.
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class Problem:
    """A PATH that gave no readable report, and why."""

    path: str
    reason: str


def load(paths: Sequence[str]) -> tuple[list[Report], list[Problem]]:
    """Every report under ``paths`` (each file once), and the paths that gave none.

    Args:
        paths: log directories (searched recursively) or report files.

    Returns:
        The parsed reports in the order found, and one :class:`Problem` per missing or unreadable report.
    """
    reports: list[Report] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            problems.append(Problem(raw, f"{raw}: no such file or directory"))
            continue
        try:
            found = find_reports(path)
        except OSError as error:
            problems.append(Problem(raw, f"{raw}: cannot be searched ({error})"))
            continue
        if not found:
            problems.append(Problem(raw, f"no {REPORT_NAME} under {raw}"))
            continue
        for file in found:
            key = file.resolve()
            if key in seen:  # a directory and a report inside it were both given
                continue
            seen.add(key)
            try:
                reports.append(read_report(file))
            except ReportError as error:
                problems.append(Problem(str(file), str(error)))
    return reports, problems


def at_least(report: Report, level: Severity) -> list[Diagnosis]:
    """The report's diagnoses at or above ``level``, oldest first."""
    return [d for d in report.diagnoses if d.severity.at_least(level)]


# -- check -------------------------------------------------------------------------------------------------
def check(paths: Sequence[str], fail_on: str, junit: str | None, out: Console, err: Console) -> int:
    """Print a verdict per report; the exit code says whether any diagnosis reached ``fail_on``."""
    level = Severity(fail_on)
    reports, problems = load(paths)
    github = os.environ.get("GITHUB_ACTIONS") == "true"
    failed = 0
    for report in reports:
        offending = at_least(report, level)
        failed += bool(offending)
        out.print(_verdict(report, offending, level), soft_wrap=True)
        for d in offending:
            out.print(_diagnosis_line(d), soft_wrap=True)
            if github:
                # Plain stdout, not rich: the runner parses these lines verbatim.
                print(annotation(d), flush=True)
    for problem in problems:
        err.print(Text.assemble(("ERROR ", "bold red"), problem.reason), soft_wrap=True)
        if github:
            print(f"::error title=LossGuard report::{_escape_data(problem.reason)}", flush=True)
    if junit:
        write_junit(junit, reports, problems, level)
    if len(reports) + len(problems) > 1:
        out.print(
            Text(
                f"lossguard check: {failed} of {len(reports)} report(s) at or above {level.value}"
                + (f"; {len(problems)} path(s) without a readable report" if problems else ""),
                style="bold",
            ),
            soft_wrap=True,
        )
    if problems:
        return EXIT_NO_REPORT
    return EXIT_FAILED if failed else EXIT_OK


def _verdict(report: Report, offending: list[Diagnosis], level: Severity) -> Text:
    where = f"  {report.path}  ({report.status} at step {report.global_step}): "
    if offending:
        return Text.assemble(("FAIL", "bold red"), where, f"{len(offending)} diagnosis(es) at or above {level.value}")
    below = f" ({counts_line(report.diagnoses)})" if report.diagnoses else ""
    return Text.assemble(("PASS", "bold green"), where, f"nothing at or above {level.value}{below}")


def _diagnosis_line(d: Diagnosis) -> Text:
    line = Text.assemble(
        "  ", (f"{d.severity.value} {d.code}", _STYLE[d.severity]), (f" at step {d.step}: ", "dim"), d.message
    )
    if d.remedies:
        line.append_text(Text.assemble(("\n    → ", "dim"), d.remedies[0]))
    return line


def annotation(d: Diagnosis) -> str:
    """A GitHub Actions workflow command: ``::error title=LossGuard <code>::<message> (step N)``."""
    kind = "error" if d.severity is Severity.ERROR else "warning"
    title = _escape_property(f"LossGuard {d.code}")
    return f"::{kind} title={title}::{_escape_data(f'{d.message} (step {d.step})')}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


# -- JUnit ------------------------------------------------------------------------------------------------
def write_junit(path: str, reports: Sequence[Report], problems: Sequence[Problem], level: Severity) -> Path:
    """Write JUnit XML: one testsuite per report, one testcase per diagnosis.

    A diagnosis at or above ``level`` is a ``<failure>`` (message, evidence and remedies in its text); one
    below it is a passing testcase with its text in ``<system-out>``; a report without diagnoses gets one
    passing testcase. A path without a readable report is a testsuite with an ``<error>``.
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
        ):
            ET.SubElement(props, "property", name=name, value=value)
        classname = _classname(report.path)
        for d in report.diagnoses:
            name = f"{d.code} ({d.subject})" if d.subject else d.code
            case = _case(suite, classname, name)
            if d.severity.at_least(level):
                failure = ET.SubElement(case, "failure", message=_xml(d.message), type=d.code)
                failure.text = _xml(_details(d, report))
            else:
                ET.SubElement(case, "system-out").text = _xml(_details(d, report))
        if not report.diagnoses:
            _case(suite, classname, "no diagnoses")
    for problem in problems:
        suite = _suite(root, problem.path)
        case = _case(suite, _classname(Path(problem.path)), "read report")
        ET.SubElement(case, "error", message=_xml(problem.reason), type="ReportError").text = _xml(problem.reason)
    _count(root, root.findall("testsuite"))
    for suite in root.findall("testsuite"):
        _count(suite, [suite])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(target, encoding="utf-8", xml_declaration=True)
    return target


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=_xml(name))


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=_xml(name), time="0")


def _count(element: ET.Element, suites: Sequence[ET.Element]) -> None:
    cases = [c for s in suites for c in s.findall("testcase")]
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    element.set("errors", str(sum(c.find("error") is not None for c in cases)))
    element.set("skipped", "0")
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


def _xml(text: str) -> str:
    return _XML_INVALID.sub("", text)


# -- report -----------------------------------------------------------------------------------------------
def show(paths: Sequence[str], fmt: str, out: Console, err: Console) -> int:
    """Show every report's diagnoses as a table, JSON or markdown."""
    reports, problems = load(paths)
    if fmt == "json":
        # Plain stdout: rich would wrap long strings and break the JSON.
        print(json.dumps([_as_json(r) for r in reports], indent=2))
    elif fmt == "markdown":
        print("\n\n".join(_as_markdown(r) for r in reports))
    else:
        for r in reports:
            _print_table(r, out)
    for problem in problems:
        err.print(Text.assemble(("ERROR ", "bold red"), problem.reason), soft_wrap=True)
    return EXIT_NO_REPORT if problems else EXIT_OK


def _as_json(r: Report) -> dict[str, object]:
    return {
        "path": str(r.path),
        "schema_version": r.schema_version,
        "status": r.status,
        "global_step": r.global_step,
        "fail_on": r.fail_on,
        "counts": {s.value: sum(d.severity is s for d in r.diagnoses) for s in Severity},
        "diagnoses": [d.to_dict() for d in r.diagnoses],
        "notes": list(r.notes),
    }


def _as_markdown(r: Report) -> str:
    header = f"# LossGuard: `{r.path}`\n\nStatus **{r.status}** at step {r.global_step}."
    return f"{header}\n\n{full_report(r.diagnoses, r.notes)}"


def _print_table(r: Report, out: Console) -> None:
    out.print(
        Text.assemble((str(r.path), "bold"), f"  {r.status} at step {r.global_step}: {counts_line(r.diagnoses)}"),
        soft_wrap=True,
    )
    if r.diagnoses:
        table = Table(show_lines=True)
        table.add_column("severity")
        table.add_column("step", justify="right")
        table.add_column("code", no_wrap=True)
        table.add_column("what happened", ratio=3)
        table.add_column("what to do", ratio=2)
        for d in sorted(r.diagnoses, key=lambda x: (-x.severity.rank, x.step)):
            what = Text(d.message)
            if d.subject:
                what.append(f"\nsubject: {d.subject}", "dim")
            if d.evidence:
                what.append(f"\n{d.evidence_text()}", "dim")
            table.add_row(
                Text(d.severity.value, _STYLE[d.severity]),
                str(d.step),
                d.code,
                what,
                Text("\n".join(f"{i}. {x}" for i, x in enumerate(d.remedies, start=1))),
            )
        out.print(table)
    else:
        out.print(Text("  no diagnoses: LossGuard found nothing wrong.", "green"))
    for note in r.notes:
        out.print(Text.assemble(("  note: ", "dim"), note))


# -- entry point ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossguard`` command."""
    parser = argparse.ArgumentParser(
        prog="lossguard",
        description="Read the lossguard.json reports that LossGuard leaves in a run's log directory.",
        epilog=(
            "exit codes: 0 ok; 1 a diagnosis at or above --fail-on (check); "
            "2 no report found or readable under a PATH, or a usage error.\n"
            "PATH is a log directory (searched recursively for lossguard.json) or a report file."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lossguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check_parser = commands.add_parser(
        "check",
        help="exit 1 when a report has a diagnosis at or above --fail-on (a CI gate)",
        description=(
            "Print a verdict per report and exit 1 when any has a diagnosis at or above --fail-on, "
            "0 when none has, 2 when a PATH has no readable report. Inside GitHub Actions "
            "(GITHUB_ACTIONS=true) each such diagnosis is also printed as a workflow annotation."
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
        help="also write JUnit XML: a testsuite per report, a failing testcase per diagnosis at the level",
    )

    report_parser = commands.add_parser(
        "report",
        help="show the diagnoses with their evidence and remedies",
        description="Show every report's diagnoses. Exit 0, or 2 when a PATH has no readable report.",
    )
    report_parser.add_argument("paths", nargs="+", metavar="PATH", help="log directory or lossguard.json file")
    report_parser.add_argument(
        "--format",
        choices=["table", "json", "markdown"],
        default="table",
        help="table (default, for people), json (a list, one object per report) or markdown",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``lossguard`` command; returns the exit code."""
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
        return check(args.paths, args.fail_on, args.junit, out, err)
    return show(args.paths, args.format, out, err)


if __name__ == "__main__":
    sys.exit(main())
