"""Hostile text in a report stays text in every output: terminal, GitHub annotations, markdown, JUnit XML.

One report holds a diagnosis, a note and a coverage gap whose every string carries line breaks, escape
sequences, markup, NUL and bidirectional overrides, in a directory whose name is not UTF-8 and holds a newline.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import markdown
import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from lightning_lossguard import Diagnosis, Severity
from lightning_lossguard.cli import main
from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.json_report import Gap, read_report, write_report
from lightning_lossguard.report.markdown import full_report
from lightning_lossguard.report.safe_text import markdown_code, markdown_text, one_line

HOSTILE = (
    "line one\n::error::injected\r\x1b[31mred\x1b[0m `tick` | pipe <img src=x onerror=alert(1)> "
    "![img](http://x/y.png) [link](http://x) *em* \x00nul \x07bell \x9b2J \u202eevil"
)
DIAGNOSIS = Diagnosis(
    code="odd_code\n::warning::x",
    severity=Severity.ERROR,
    step=7,
    message=HOSTILE,
    evidence={"key\n| x | y |": 1.5, "<b>": 2.0},
    remedies=["# Heading\n" + HOSTILE, "1. not a list\n---\n<script>alert(1)</script>"],
    subject="net.0\n# Heading `x` <h1>",
)
NOTE = "## note heading\n" + HOSTILE
GAP = Gap("grad\nients", "- list\n" + HOSTILE)
# Controls rich never writes; rich's own colours are SGR sequences (ESC [ ... m), removed before checking.
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def hostile_report(tmp_path: Path) -> Path:
    directory = os.fsencode(tmp_path) + b"/logs/run-\xff\xfe\n`x`|<b>"
    os.makedirs(directory)
    path = Path(os.fsdecode(directory)) / "lossguard.json"
    return write_report(path, [DIAGNOSIS], "alarm", 7, [NOTE], "error", [GAP])


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "FORCE_COLOR", "NO_COLOR")}
    environment.update({"COLUMNS": "120", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "lightning_lossguard.cli", *args], capture_output=True, env=environment, timeout=120
    )


def test_the_report_round_trips_the_hostile_strings(hostile_report: Path) -> None:
    report = read_report(hostile_report)
    assert report.diagnoses == [DIAGNOSIS] and report.notes == [NOTE] and report.gaps == [GAP]


def test_terminal_output_has_no_control_characters_and_is_utf8(hostile_report: Path) -> None:
    logs = str(hostile_report.parent.parent)
    for colour in ({}, {"FORCE_COLOR": "1"}):
        for args in (["check", logs], ["report", logs], ["check", str(hostile_report)]):
            result = run(*args, env=colour)
            assert result.returncode in (1, 0), result.stderr
            out = result.stdout.decode("utf-8") + result.stderr.decode("utf-8")  # strict: no lone surrogate
            assert "Traceback" not in out
            assert not CONTROLS.search(SGR.sub("", out)), (args, colour, out)
            assert "\x1b" not in SGR.sub("", out)
            assert "\\x1b[31mred" in out and "run-\\xff\\xfe `x`" in out  # escaped, still recognisable


def test_the_console_reporter_escapes_everything(hostile_report: Path) -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=100, force_terminal=True, color_system="truecolor"))
    reporter.new_diagnoses([DIAGNOSIS])
    reporter.note(HOSTILE)
    reporter.summary([DIAGNOSIS], [NOTE], str(hostile_report), [GAP])
    text = SGR.sub("", out.getvalue())
    assert not CONTROLS.search(text) and "\x1b" not in text
    assert "LossGuard ERROR odd_code ::warning::x at step 7: line one ::error::injected \\x1b[31mred" in text


def test_github_annotations_stay_one_line_each(
    hostile_report: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["check", str(hostile_report.parent.parent)]) == 1
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith("::")]
    assert [c.split("::")[1] for c in commands] == [
        "error title=LossGuard odd_code%0A%3A%3Awarning%3A%3Ax",
        "error title=LossGuard coverage",
    ]
    assert all(not CONTROLS.search(c) and "\x1b" not in c for c in commands)
    assert "%0A::error::injected%0D\\x1b[31mred" in commands[0]
    assert not any(line.lstrip().startswith("::error::injected") for line in lines)


def _rendered(text: str) -> list[str]:
    """The HTML of ``text`` from TensorBoard's markdown (Python-Markdown, before its sanitizer) and CommonMark."""
    python_markdown = markdown.Markdown(extensions=["markdown.extensions.tables", "markdown.extensions.fenced_code"])
    return [python_markdown.convert(text), MarkdownIt("commonmark").enable("table").render(text)]


def test_markdown_never_renders_a_hostile_heading_image_link_or_tag(hostile_report: Path) -> None:
    text = full_report([DIAGNOSIS], [NOTE], [GAP])
    for html in _rendered(text):
        tags = re.findall(r"<(/?[a-z0-9]+)", html)
        assert tags.count("h2") == 1 and tags.count("h3") == 1 and "h1" not in tags, html  # ours only
        assert not {"img", "script", "a", "b", "em", "pre", "blockquote"} & set(tags), html
        # Ours only: the remedies as one ordered list, the gap and the note as one-item lists, bold labels.
        assert (tags.count("ol"), tags.count("ul"), tags.count("li"), tags.count("strong")) == (1, 2, 4, 5), html
        assert tags.count("hr") == 1  # the rule before the diagnosis, none from "---" in a remedy
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;script&gt;" in html
        # Tables keep their shape: the evidence table has exactly two cells per row.
        for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
            assert len(re.findall(r"<t[dh]", row)) in (2, 5), row


def test_the_markdown_command_is_safe_too(hostile_report: Path) -> None:
    result = run("report", str(hostile_report), "--format", "markdown")
    assert result.returncode == 0
    text = result.stdout.decode("utf-8")
    for html in _rendered(text):
        tags = re.findall(r"<(/?[a-z0-9]+)", html)
        assert tags.count("h1") == 1 and "img" not in tags and "script" not in tags and "a" not in tags, html


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("# title", "\\# title"),
        ("- item", "\\- item"),
        ("12. item", "12\\. item"),
        ("a_b _c_ *d*", "a_b \\_c\\_ \\*d\\*"),
        ("<b>&", "&lt;b&gt;&amp;"),
        ("x | y", "x \\| y"),
        ("\\`", "\\\\\\`"),
    ],
)
def test_markdown_text_escapes(text: str, escaped: str) -> None:
    assert markdown_text(text) == escaped


def test_markdown_code_falls_back_to_text_when_a_code_span_cannot_hold_it() -> None:
    assert markdown_code("encoder.layers.0") == "`encoder.layers.0`"
    assert markdown_code("a`b") == "a\\`b" and markdown_code("a|b") == "a\\|b" and markdown_code("") == ""


def test_one_line_escapes_visibly() -> None:
    assert one_line("a\nb\r\nc\td") == "a b c d"
    assert one_line("\x1b[2J\x00\x9b\u202e" + os.fsdecode(b"\xff")) == "\\x1b[2J\\x00\\x9b\\u202e\\xff"


def test_junit_parses_for_hostile_names_and_a_non_utf8_directory(hostile_report: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    assert main(["check", str(hostile_report.parent.parent), "--junit", str(junit)]) == 1
    root = ET.parse(junit).getroot()
    [suite] = root.findall("testsuite")
    assert "run-\\xff\\xfe\n`x`|<b>" in (suite.get("name") or "")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "odd_code\n::warning::x (net.0\n# Heading `x` <h1>)",
        "coverage: grad\nients",
    ]
    failure = cases[0].find("failure")
    assert failure is not None and "\\x1b[31mred" in (failure.get("message") or "")
    assert "\\x00nul" in (failure.text or "") and "\x00" not in junit.read_text(encoding="utf-8")
    assert all(re.fullmatch(r"lossguard\.[A-Za-z0-9_]+", c.get("classname") or "") for c in cases)
