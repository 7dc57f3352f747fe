"""Reports: self-contained HTML with plots and tables for runs, sweeps and comparisons, model
cards, and the summary tables of sweeps; per-task presentation in :mod:`.tasks`."""

from __future__ import annotations

import logging
from pathlib import Path

from fedsilo.report.html import REPORT_FILE, compare_report, run_report, sweep_report
from fedsilo.report.modelcard import write_model_card

logger = logging.getLogger(__name__)


def write_run_files(run_dir: str | Path) -> None:
    """A run's ``MODEL_CARD.md`` and ``report.html`` (a failure here is logged and never loses the
    run's results: redo it with ``fedsilo report RUN_DIR``)."""
    for what, write in (("model card", write_model_card), ("report", run_report)):
        try:
            write(run_dir)
        except Exception:  # noqa: BLE001 - the results are on disk; the report can be redone
            logger.exception("Could not write the %s of %s (redo it with `fedsilo report %s`)", what, run_dir,
                             run_dir)


__all__ = ["REPORT_FILE", "compare_report", "run_report", "sweep_report", "write_model_card", "write_run_files"]
