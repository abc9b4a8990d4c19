"""How findings are told: the console (rich), the trainer's loggers (``report.loggers``, TensorBoard and
others) and the JSON report. Only the torch-free parts are re-exported here, so the ``lossguard`` command
stays fast."""

from lightning_lossguard.report.console import ConsoleReporter
from lightning_lossguard.report.json_report import Gap, Report, ReportError, find_reports, read_report, write_report

__all__ = ["ConsoleReporter", "Gap", "Report", "ReportError", "find_reports", "read_report", "write_report"]
