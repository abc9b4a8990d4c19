"""The LossGuard tab in a real headless Chromium, against a real TensorBoard: what a person sees and clicks.

Skipped where no Chromium or Chrome is found, unless ``LOSSGUARD_REQUIRE_BROWSER=1`` (set by CI), which turns
the missing browser into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from lightning_lossguard.catalog import cause_first
from lightning_lossguard.diagnosis import Diagnosis, Severity
from lightning_lossguard.report.cost import over_budget_note
from lightning_lossguard.report.json_report import read_report
from lightning_lossguard.signals.budget import CostBudget, IntervalCost
from tests.tensorboard_plugin.browser import chromium
from tests.tensorboard_plugin.conftest import ATTACK, Runs, Server, serve, write_run

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "make_screenshots.py"
ENTRY = "/data/plugin_entry.html?name=lossguard"  # the page TensorBoard puts in the tab's iframe

# Per run section: its name, verdict, status, the cards' codes in page order, and each chart's marker codes.
RUN_SECTIONS = """[...DOC.querySelectorAll('section.run')].map(s => ({
  run: s.dataset.run,
  level: s.querySelector('.verdict').className,
  verdict: s.querySelector('.verdict .text').textContent,
  status: s.querySelector('.verdict .status')?.textContent ?? '',
  cards: [...s.querySelectorAll('article.card')].map(c => c.dataset.code),
  markers: [...s.querySelectorAll('figure.chart')]
    .map(f => [...f.querySelectorAll('.marker')].map(m => m.dataset.code)),
  docs: [...s.querySelectorAll('a.doc')].map(a => a.getAttribute('href')),
}))"""
IN_TAB = "document.querySelector('iframe')?.contentDocument"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser_path() -> str:
    found: str | None = _load_script().find_chromium()
    if found is None:
        if os.environ.get("LOSSGUARD_REQUIRE_BROWSER") == "1":
            pytest.fail("LOSSGUARD_REQUIRE_BROWSER=1 and no Chromium or Chrome found (set CHROMIUM=/path/to/browser)")
        pytest.skip("no Chromium or Chrome on this machine")
    return found


def _png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the raw scanlines (filter byte first) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8].decode("ascii")
        chunks[kind] = chunks.get(kind, b"") + data[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks["IHDR"][:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    stride = 1 + width * (3 if color == 2 else 4)
    pixels = zlib.decompress(chunks["IDAT"])
    return width, height, [pixels[i : i + stride] for i in range(0, len(pixels), stride)]


def test_the_tab_shows_every_run_with_its_verdict_cards_and_markers(
    server: Server, runs: Runs, browser_path: str
) -> None:
    with chromium(browser_path) as page:
        page.open(f"{server.base}/#lossguard")  # TensorBoard's own UI, the tab's page in its iframe
        page.wait_for(f"{IN_TAB}?.querySelectorAll('section.run').length === {len(runs.dirs)}")
        sections = {s["run"]: s for s in page.evaluate(RUN_SECTIONS.replace("DOC", IN_TAB))}
        assert page.evaluate("window.pwned ?? document.querySelector('iframe').contentWindow.pwned ?? null") is None

    faulty = sections[runs.faulty]
    diagnoses = cause_first(read_report(runs.dirs[runs.faulty] / "lossguard.json").diagnoses)
    expected = [d.code for d in diagnoses]
    errors = sum(d.severity == "error" for d in diagnoses)
    warnings = sum(d.severity == "warning" for d in diagnoses)
    assert faulty["level"] == "verdict error" and faulty["verdict"] == f"{errors} errors, {warnings} warnings"
    assert faulty["cards"] == expected and expected[0] == "exploding_gradients"  # cause first
    assert faulty["markers"] == [expected, expected]  # the loss chart and the gradient-norm chart
    assert faulty["docs"] == [f"catalog.html#{code}" for code in expected]
    healthy = sections[runs.healthy]
    assert healthy["level"] == "verdict healthy" and healthy["verdict"] == "Healthy: no problems found"
    assert healthy["cards"] == [] and healthy["markers"] == [[], []] and healthy["status"].startswith("finished")


def test_hostile_text_is_shown_as_text(server: Server, runs: Runs, browser_path: str) -> None:
    with chromium(browser_path) as page:
        page.open(server.base + ENTRY)
        page.wait_for("document.querySelectorAll('section.run').length === 3")
        hostile = f"document.querySelector('section.run[data-run={json.dumps(runs.hostile)}]')"
        found = page.evaluate(f"""(() => {{ const s = {hostile}; return {{
          name: s.querySelector('h2').textContent,
          message: s.querySelector('.card .message').textContent,
          subject: s.querySelector('.card .subject').textContent,
          evidence: [...s.querySelectorAll('.card .evidence th')].map(th => th.textContent),
          remedies: [...s.querySelectorAll('.card .remedies li')].map(li => li.textContent),
          gap: s.querySelector('.gaps li').textContent,
          note: s.querySelector('.notes li').textContent,
          cost: s.querySelector('.report .cost').textContent,
          tip: s.querySelector('.marker title').textContent,
          docs: [...s.querySelectorAll('a.doc')].map(a => a.getAttribute('href')),
          injected: document.querySelectorAll('.lossguard img, .lossguard script, .lossguard i, .card b').length,
          links: [...document.querySelectorAll('a')].filter(a => !a.href.startsWith(location.origin)).length,
          pwned: window.pwned ?? null,
        }}; }})()""")
    assert found["name"] == runs.hostile and found["message"] == ATTACK  # newlines and backticks kept
    assert found["subject"] == "layer`<b>bold</b>" and found["evidence"] == ["<i>key</i>", "ratio"]
    assert found["remedies"] == ["<a href='javascript:window.pwned=3'>click</a>", ATTACK]
    assert found["gap"] == f"gradients: {ATTACK}" and found["note"] == ATTACK
    assert found["cost"].startswith("LossGuard's own time: 0.5% of the training step time (budget 1%; 50 ms in all")
    assert found["tip"].startswith("error exploding_gradients at step 15: <img")
    assert found["docs"] == ["catalog.html#exploding_gradients"]  # none for the unknown code
    assert found["injected"] == 0 and found["links"] == 0 and found["pwned"] is None


def test_hovering_a_marker_shows_its_diagnosis_and_clicking_opens_its_card(
    server: Server, runs: Runs, browser_path: str
) -> None:
    with chromium(browser_path, size=(1200, 700)) as page:
        page.open(server.base + ENTRY)
        page.wait_for("document.querySelectorAll('section.run').length === 3")
        section = f"document.querySelector('section.run[data-run={json.dumps(runs.faulty)}]')"
        # The last marker of the gradient-norm chart: its card is the lowest, below the fold.
        x, y, code = page.evaluate(f"""(() => {{
          const marker = [...{section}.querySelectorAll('figure.chart')[1].querySelectorAll('.marker')].pop();
          marker.scrollIntoView({{block: 'center'}});
          const box = marker.querySelector('circle').getBoundingClientRect();
          return [box.x + box.width / 2, box.y + box.height / 2, marker.dataset.code];
        }})()""")
        card = f"{section}.querySelector('article.card[data-code={json.dumps(code)}]')"
        assert page.evaluate(f"{card}.getBoundingClientRect().top") > 700  # below the fold

        page.mouse("mouseMoved", x, y)
        tip = page.wait_for("!document.querySelector('.tip').hidden && document.querySelector('.tip').textContent")
        message = page.evaluate(f"{card}.querySelector('.message').textContent")
        assert code in tip and message in tip

        page.click(x, y)
        page.wait_for(f"{card}.classList.contains('flash')")
        # Scrolled into view (smoothly: wait for it); the hover tip is gone.
        page.wait_for(f"(top => top >= 0 && top < innerHeight - 100)({card}.getBoundingClientRect().top)")
        assert page.evaluate("document.querySelector('.tip').hidden")


def test_the_page_follows_a_live_run(tmp_path: Path, browser_path: str) -> None:
    write_run(tmp_path / "live", range(20), [], status="running")
    with serve(tmp_path) as tb, chromium(browser_path) as page:
        tb.wait("/data/plugin/lossguard/runs", lambda answer: answer["runs"] == ["live"])
        page.open(tb.base + ENTRY)
        page.wait_for("document.querySelector('.verdict .status')?.textContent === 'running, step 20'")
        assert page.evaluate("document.querySelectorAll('article.card').length") == 0

        failing = Diagnosis("nonfinite_loss", Severity.ERROR, 39, "The training loss became NaN at step 35.")
        write_run(tmp_path / "live", range(20, 40), [failing], status="alarm")
        page.wait_for("document.querySelector('article.card')?.dataset.code === 'nonfinite_loss'", timeout=30)
        assert page.evaluate("document.querySelector('.verdict .text').textContent") == "1 error, 0 warnings"
        assert page.evaluate("document.querySelectorAll('.marker').length") == 2


def test_a_healthy_run_over_budget_shows_its_cost_in_one_line_and_the_why_on_a_click(
    tmp_path: Path, browser_path: str
) -> None:
    budget = CostBudget(0.01, report_batches=10, warmup_reviews=0)
    budget.review(IntervalCost(10, 0.026, 10.0, 0.01, 10, 0.01))  # 26% of 10 batches of 10 ms
    note = over_budget_note(budget)
    assert note is not None
    write_run(tmp_path / "short", range(20), [], notes=[note], cost=budget.state())
    with serve(tmp_path) as tb, chromium(browser_path) as page:
        tb.wait("/data/plugin/lossguard/runs", lambda answer: answer["runs"] == ["short"])
        page.open(tb.base + ENTRY)
        page.wait_for("!!document.querySelector('details.cost')")
        shown = page.evaluate("""(() => ({
          verdict: document.querySelector('.verdict .text').textContent,
          notes: document.querySelectorAll('.notes li').length,
          summary: document.querySelector('details.cost summary').textContent,
          open: document.querySelector('details.cost').open,
          why: document.querySelector('details.cost p').checkVisibility(),
        }))()""")
        assert shown["verdict"] == "Healthy: no problems found" and shown["notes"] == 0
        assert (
            shown["summary"] == "LossGuard's own time: 26% of the training step time, over its 1% budget (26 ms "
            "in all over 10 training batches of 10 ms)."
        )
        assert not shown["open"] and not shown["why"]  # folded
        x, y = page.evaluate("""(box => [box.x + 40, box.y + box.height / 2])(
          document.querySelector('details.cost summary').getBoundingClientRect())""")
        page.click(x, y)
        page.wait_for("document.querySelector('details.cost').open")
        assert page.evaluate("document.querySelector('details.cost p').checkVisibility()")
        assert page.evaluate("document.querySelector('details.cost p').textContent") == note


def test_the_screenshot_script_captures_the_lossguard_tab(server: Server, browser_path: str, tmp_path: Path) -> None:
    script = _load_script()
    shot = tmp_path / "lossguard.png"
    script.screenshot(browser_path, f"{server.base}/{script.SHOTS['tensorboard-lossguard.png']}", shot, (1000, 700))
    width, height, rows = _png_rows(shot.read_bytes())
    assert (width, height) == (1000, 700)
    # A blank page repeats one scanline; an empty tab leaves its lower half plain. The runs' charts and cards
    # fill the picture down to the bottom.
    distinct, lower_half = len(set(rows)), len(set(rows[height // 2 :]))
    assert distinct > 300 and lower_half > 150, (distinct, lower_half)
