"""Federated diabetic-retinopathy grading."""

from .task import ClassificationTask

__all__ = ["ClassificationTask"]
