"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

The protocol's pipe transport is JSON messages ended by a NUL byte on the browser's file descriptors 3 (in)
and 4 (out): the standard library is enough, with no websocket client and no browser-driver download.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the network is closed: no calls home
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class Browser:
    """One page in a headless Chromium: navigate, evaluate JavaScript, move and click the mouse, screenshot."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int, timeout: float) -> None:
        self.process, self._to, self._from, self.timeout = process, to_browser, from_browser, timeout
        self._buffer, self._id, self._session = b"", 0, ""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, **params: Any) -> Any:
        """One protocol command (to the page, once attached); its result, or an error naming the method."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._id:  # events and other sessions' replies are skipped
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium did not answer within {self.timeout} s")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its protocol pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        answer: dict[str, Any] = json.loads(message)
        return answer

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate until the value is truthy; return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still {value!r} after {timeout} s")
            time.sleep(0.2)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """``kind``: ``mouseMoved``, ``mousePressed`` or ``mouseReleased`` (left button), at page coordinates."""
        button = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **button)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.mouse(kind, x, y)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))


@contextmanager
def chromium(executable: str, size: tuple[int, int] = (1400, 1000), timeout: float = 60.0) -> Iterator[Browser]:
    """A fresh headless Chromium (its own profile), stopped on exit."""
    to_read, to_write = _high_pipe()
    from_read, from_write = _high_pipe()
    # Chromium's helper processes can still write to the profile for a moment after the browser exits.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        command = [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        # A small Python hands the browser its protocol pipes as descriptors 3 and 4, then becomes the browser.
        process = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_read), str(from_write), *command, "--remote-debugging-pipe"],
            pass_fds=(to_read, from_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_read)
        os.close(from_write)
        try:
            yield Browser(process, to_write, from_read, timeout)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(to_write)
            os.close(from_read)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two descriptors are above 4, so moving them onto 3 and 4 cannot overwrite one another."""
    low = os.pipe()
    high = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in low)
    for fd in low:
        os.close(fd)
    return high[0], high[1]
