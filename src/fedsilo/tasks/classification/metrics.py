"""Grading metrics: accuracy, quadratic-weighted Cohen's kappa (the DR-grading standard), loss."""

from __future__ import annotations

import torch
from torchmetrics.functional import cohen_kappa


def quadratic_kappa(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Quadratic-weighted Cohen's kappa (Cohen, Psychol. Bull. 1968) of integer predictions.

    Returns 0 when predictions and targets agree only by chance and 1 for perfect agreement; NaN
    when it is undefined (a single class in both), which tables show as missing.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.numel() == 0:
        return float("nan")
    value = cohen_kappa(pred, target, task="multiclass", num_classes=num_classes, weights="quadratic")
    return float(value)


def grading_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Accuracy, kappa and mean cross-entropy of logits (N, K) against targets (N,)."""
    num_classes = logits.shape[1]
    pred = logits.argmax(1)
    return {
        "accuracy": float((pred == target).float().mean()) if len(target) else float("nan"),
        "kappa": quadratic_kappa(pred, target, num_classes),
        "loss": float(torch.nn.functional.cross_entropy(logits, target)) if len(target) else float("nan"),
        "n": int(len(target)),
    }
