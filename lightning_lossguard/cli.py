"""The ``lossguard`` command (placeholder until the CI-gate commands land)."""

from __future__ import annotations

import argparse
import sys

from lightning_lossguard.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lossguard", description="Diagnose PyTorch Lightning training runs.")
    parser.add_argument("--version", action="version", version=f"lossguard {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
