"""Reports: self-contained HTML with plots and tables for runs, sweeps and comparisons, model
cards, and the summary tables of sweeps; per-task presentation in :mod:`.tasks`."""

from __future__ import annotations

import logging
from pathlib import Path

from fedsilo.report.html import REPORT_FILE, compare_report, run_report, sweep_report
from fedsilo.report.modelcard import write_model_card

logger = logging.getLogger(__name__)


def write_run_files(run_dir: str | Path) -> None:
    """A run's ``MODEL_CARD.md`` and ``report.html``, also handed to its experiment tracker, if any
    (a failure here is logged and never loses the run's results: redo it with ``fedsilo report RUN_DIR``)."""
    written: list[Path] = []
    for what, write in (("model card", write_model_card), ("report", run_report)):
        try:
            written.append(Path(write(run_dir)))
        except Exception:  # noqa: BLE001 - the results are on disk; the report can be redone
            logger.exception("Could not write the %s of %s (redo it with `fedsilo report %s`)", what, run_dir,
                             run_dir)
    track_files(run_dir, written)


def track_files(run_dir: str | Path, paths: list[Path]) -> None:
    """Attach report files of a run to the experiment tracker run recorded for it (``experiment.tracking``)."""
    from fedsilo.run.folder import RunDir
    from fedsilo.run.tracking import log_run_artifacts

    try:
        log_run_artifacts(run_dir, RunDir.open(run_dir).cfg, paths)
    except Exception:  # noqa: BLE001 - the files are in the run folder either way
        logger.exception("Could not hand the report of %s to its experiment tracker", run_dir)


__all__ = ["REPORT_FILE", "compare_report", "run_report", "sweep_report", "track_files", "write_model_card",
           "write_run_files"]
