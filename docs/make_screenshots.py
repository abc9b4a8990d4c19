"""Regenerate the screenshots in docs/images/ (run by hand; needs Chromium or Chrome).

    python docs/make_screenshots.py        # under a minute

It trains the model and data of ``examples/quickstart.py`` twice in a temporary directory, as the example
does: once healthy (``--no-jump``), once with its bug (healthy at lr=0.05 for 100 steps, then 10x: the
gradients explode after a normal stretch LossGuard draws a band for). It serves both runs with TensorBoard
on 127.0.0.1 and captures them with headless Chromium:

- ``console.png``: LossGuard's console output of the faulty run (the live lines and the summary table);
- ``tensorboard-lossguard.png``: the LossGuard tab, the healthy run next to the faulty one;
- ``tensorboard-text.png``: the Text tab filtered to the ``lossguard/diagnoses`` reports.

Set ``CHROMIUM=/path/to/chrome`` when the browser is not on the PATH under a usual name.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
TEXT_TAG = "lossguard/diagnoses/text_summary"  # the writer appends "/text_summary" to text tags

# TensorBoard keeps a tab's settings in the URL fragment: the tag filter, and no smoothing so the
# dashboard shows the values LossGuard judged.
SHOTS = {
    "tensorboard-lossguard.png": "#lossguard",
    "tensorboard-text.png": "#text&tagFilter=" + quote(f"^{TEXT_TAG}$", safe=""),
}
SIZES = {"tensorboard-lossguard.png": (1400, 1240), "tensorboard-text.png": (1400, 1350)}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
HEALTHY_LR, JUMP_AT, STEPS = 0.05, 100, 200  # the example's run: its learning rate jumps 10x at step 100
RUNS = {"constant_lr": None, "lr_jumps_10x_at_step_100": JUMP_AT}  # run name -> jump_at; sorted: healthy first
COLUMNS, LINE_PX = 100, 18  # the console picture: terminal width, and line height at 14px type
CONSOLE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="UTF-8"><style>
body {{ margin: 0; padding: 12px 16px; color: {foreground}; background-color: {background}; }}
pre {{ margin: 0; font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 14px; line-height: 18px; }}
</style></head><body><pre><code>{code}</code></pre></body></html>
"""


def find_chromium() -> str | None:
    """The browser from ``$CHROMIUM``, else the first usual name on the PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(url: str, ready: Callable[[Any], bool], timeout: float, server: subprocess.Popen[bytes]) -> Any:
    """Poll a JSON endpoint until ``ready(answer)``; fail early if the server died."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with code {server.returncode}")
        try:
            answer = get_json(url)
            if ready(answer):
                return answer
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"no ready answer from {url} within {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def tensorboard(
    logdir: str | Path, cwd: str | Path | None = None, timeout: float = 60.0, runs: int = 1
) -> Iterator[str]:
    """Serve ``logdir`` on a free local port until LossGuard's data of ``runs`` runs is loaded; yield the URL."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--reload_interval", "1"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Listening is not enough: the event files are read in the background after start.
        wait_for(f"{base}/data/plugin/text/tags", lambda tags: len(tags) >= runs, timeout, server)
        wait_for(f"{base}/data/plugin/lossguard/runs", lambda found: len(found["runs"]) >= runs, timeout, server)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def screenshot(chromium: str, url: str, path: Path, size: tuple[int, int] = (1400, 1000)) -> None:
    """One PNG of ``url``. TensorBoard loads its data after the page, so give it virtual time to settle."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={size[0]},{size[1]}",
                "--virtual-time-budget=20000",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )


def train(workdir: Path, version: str, jump_at: int | None) -> None:
    """Train the example's model in ``workdir``, logging to ``lightning_logs/<version>``."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_lossguard import LossGuard

    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    L.seed_everything(0)
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        log_every_n_steps=10,
        val_check_interval=50,
        # Relative: no temporary path in the pictures.
        logger=TensorBoardLogger(".", name="lightning_logs", version=version),
        callbacks=[LossGuard(report_every=10)],
        enable_progress_bar=False,  # the bar's redraws would be recorded too
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    here = Path.cwd()
    os.chdir(workdir)
    try:
        trainer.fit(example.Regressor(HEALTHY_LR, jump_at), example.data(4096, seed=0), example.data(512, seed=1))
    finally:
        os.chdir(here)


def recorded(workdir: Path, version: str, jump_at: int | None) -> tuple[str, int]:
    """Train as :func:`train`; return LossGuard's console output as HTML and its line count."""
    import rich
    from rich.terminal_theme import MONOKAI

    rich.reconfigure(record=True, width=COLUMNS, force_terminal=True, color_system="truecolor")
    try:
        train(workdir, version, jump_at)
        console = rich.get_console()
        lines = console.export_text(clear=False).count("\n")
        return console.export_html(theme=MONOKAI, code_format=CONSOLE_PAGE, inline_styles=True), lines
    finally:
        rich.reconfigure()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("No Chromium or Chrome found: install one or set CHROMIUM=/path/to/browser.", file=sys.stderr)
        return 1
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        html, lines = "", 0
        for version, jump_at in RUNS.items():
            if jump_at is None:
                with open(os.devnull, "w") as quiet, redirect_stdout(quiet):
                    train(workdir, version, jump_at)
            else:
                html, lines = recorded(workdir, version, jump_at)
        page = workdir / "console.html"
        page.write_text(html, encoding="utf-8")
        shots = [(page.as_uri(), out / "console.png", (900, 24 + LINE_PX * lines))]
        # A relative log dir, so the pictures show "lightning_logs" and no temporary path.
        with tensorboard("lightning_logs", cwd=workdir, runs=len(RUNS)) as base:
            for name, fragment in SHOTS.items():
                shots.append((f"{base}/{fragment}", out / name, SIZES[name]))
            for url, path, size in shots:
                screenshot(chromium, url, path, size)
                print(f"{path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
