"""Reports: self-contained HTML with plots and tables for runs, sweeps and comparisons."""

from fedsilo.report.html import REPORT_FILE, compare_report, run_report, sweep_report

__all__ = ["REPORT_FILE", "compare_report", "run_report", "sweep_report"]
