"""How a task's results are presented: the report layer's companion of a task.

A task computes numbers (:class:`fedsilo.tasks.Task`); its presenter says which of them a
reader sees and how: convergence curves, sweep columns, "% of centralised" metrics, extra
sections of ``report.html``, departures from the reference protocols, and the model card's
intended use. A task without a presenter of its own gets this default one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedsilo.config import ExperimentConfig
from fedsilo.report.summary import MetricTable
from fedsilo.tasks import task_class


class TaskPresenter:
    """The default presentation of a task's results (any task).

    Parameters
    ----------
    cfg
        The run's (or sweep's) resolved config.
    """

    #: Further metrics (final-metric keys without the ``test_`` prefix) given as "% of
    #: centralised" in sweep tables, with whether higher is better.
    percent_metrics: dict[str, bool] = {}

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        task = task_class(cfg.experiment.task)
        self.primary_metric = task.primary_metric
        self.higher_is_better = task.higher_is_better

    def curve_metrics(self) -> list[str]:
        """Metrics plotted over rounds in reports (per site and global)."""
        p = self.primary_metric
        return ["train_loss", f"val_{p}", f"test_{p}", "val_loss"]

    def report_sections(self, run_dir: Path) -> list[tuple[str, str, list[str]]]:
        """Task-specific report sections: (title, HTML body, metric names defined there)."""
        return []

    def protocol_notes(self) -> list[str]:
        """Where this implementation departs from the reference papers' protocols (shown in reports)."""
        return []

    def summary_columns(self, keys: Sequence[str]) -> list[str]:
        """Which final metrics (``test_*``/``val_*``) appear in sweep tables, in order."""
        keep = [k for k in keys if not k.endswith(("_n", "_loss", "_ci_low", "_ci_high")) and k != "sel_round"]
        order = {"test": 0, "sel": 1, "val": 2}
        return sorted(keep, key=lambda k: (order.get(k.split("_", 1)[0], 3), k))

    def percent_keys(self, keys: Sequence[str]) -> dict[str, bool]:
        """Final-metric keys given as "% of centralised" in the sweep summary -> higher is better.

        Default: ``test_<primary_metric>`` and ``test_<k>`` for :attr:`percent_metrics`, where present.
        """
        wanted = {f"test_{self.primary_metric}": self.higher_is_better,
                  **{f"test_{k}": hib for k, hib in self.percent_metrics.items()}}
        present = set(keys)
        return {k: hib for k, hib in wanted.items() if k in present}

    def counts_in_site_mean(self, key: str, site: str) -> bool:
        """Whether ``site``'s final value of metric ``key`` enters the mean over sites that
        summarises a run without a global model (the ``local`` reference). Default: every site."""
        return True

    def sweep_tables(self, keys: Sequence[str]) -> list[MetricTable]:
        """Extra tables of a sweep summary (e.g. Dice per organ), built from final-metric ``keys``."""
        return []

    def intended_use(self) -> str:
        """One paragraph for the model card: what the model is for and what it is not for."""
        return "Research use only: not validated for clinical decisions."
