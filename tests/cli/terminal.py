"""A pseudo-terminal to run a command in, and a small terminal emulator to read what it left on the screen."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from pathlib import Path

_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")
_OTHER_ESCAPE = re.compile(r"\x1b(?:\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[0-9A-Za-z=<>])")


def run_in_terminal(
    command: Sequence[str], cwd: Path, env: dict[str, str], columns: int, rows: int = 50, timeout: float = 300
) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal of ``columns`` x ``rows`` as stdin, stdout and stderr.

    Returns its exit status and everything it wrote (decoded as UTF-8).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{command} still running after {timeout} s")
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def screen(output: str) -> list[str]:
    """The lines ``output`` leaves in a terminal with unlimited scrollback and no line wrapping.

    Handles what progress bars use: carriage return, newline, backspace, cursor up/down/left/right/column,
    erase in line and erase below; colours and modes are ignored.
    """
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(output):
        char = output[i]
        if char == "\x1b":
            match = _CSI.match(output, i) or _OTHER_ESCAPE.match(output, i)
            if match is None:
                i += 1
                continue
            i = match.end()
            if match.re is _CSI:
                row, col = _csi(lines, row, col, match.group(1), match.group(2))
            continue
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":  # as a terminal shows program output: the line discipline adds the return
            row, col = row + 1, 0
        elif char == "\b":
            col = max(col - 1, 0)
        elif char >= " ":
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            col += 1
    return ["".join(line).rstrip() for line in lines]


def _csi(lines: list[list[str]], row: int, col: int, params: str, command: str) -> tuple[int, int]:
    n = int(params) if params.isdigit() else None
    while len(lines) <= row:
        lines.append([])
    if command == "A":
        row = max(row - (n or 1), 0)
    elif command == "B":
        row += n or 1
    elif command == "C":
        col += n or 1
    elif command == "D":
        col = max(col - (n or 1), 0)
    elif command == "G":
        col = (n or 1) - 1
    elif command == "K":
        line = lines[row]
        if n in (None, 0):
            del line[col:]
        elif n == 1:
            line[: col + 1] = " " * min(col + 1, len(line))
        else:
            line.clear()
    elif command == "J" and n in (None, 0):
        del lines[row][col:]
        del lines[row + 1 :]
    return row, col
