"""How findings are told: console (rich), loggers (TensorBoard and others), and the JSON report."""

from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.json_report import (
    Report,
    ReportError,
    find_reports,
    read_report,
    write_report,
)
from lightning_lossguard.report.loggers import LoggerReporter

__all__ = [
    "ConsoleReporter",
    "LoggerReporter",
    "Report",
    "ReportError",
    "find_reports",
    "read_report",
    "write_report",
]
