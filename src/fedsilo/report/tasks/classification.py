"""Presentation of the classification (DR grading) task."""

from __future__ import annotations

from fedsilo.report.tasks.base import TaskPresenter


class ClassificationPresenter(TaskPresenter):
    """Kappa and accuracy curves; the grading model's intended use."""

    def curve_metrics(self) -> list[str]:
        return ["train_loss", "val_kappa", "test_kappa", "test_accuracy"]

    def intended_use(self) -> str:
        return ("Research on federated diabetic-retinopathy grading (5 ICDR grades) from colour fundus "
                "photographs: comparing federated, centralised and local training. Not a screening device: "
                "it was not validated on a clinical population, and its kappa on the test split is the only "
                "evidence of its quality.")
