"""docs/make_screenshots.py end to end in a real headless browser (skipped where no Chromium or Chrome is found)."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks.fault_zoo.run import run_scenario

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "make_screenshots.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_the_screenshot_script_captures_the_text_tab(tmp_path: Path) -> None:
    script = _load_script()
    chromium = script.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium or Chrome on this machine")
    result = run_scenario("lr_too_high_sgd", str(tmp_path / "runs"))
    shot = tmp_path / "text.png"
    with script.tensorboard(result.log_dir) as base:
        script.screenshot(chromium, f"{base}/{script.SHOTS['tensorboard-text.png']}", shot, (1000, 700))
    width, height, rows = _png_rows(shot.read_bytes())
    assert (width, height) == (1000, 700)
    # A blank page repeats one scanline, and TensorBoard's "no text data" page leaves its lower half empty;
    # the report fills the card down to the bottom with text and tables (about 400 and 160 seen).
    distinct, lower_half = len(set(rows)), len(set(rows[height // 2 :]))
    assert distinct > 300 and lower_half > 100, (distinct, lower_half)
