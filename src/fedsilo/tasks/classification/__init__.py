"""Federated diabetic-retinopathy grading."""

from fedsilo.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
