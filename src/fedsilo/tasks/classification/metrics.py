"""Grading metrics: accuracy, quadratic-weighted Cohen's kappa (the DR-grading standard), loss."""

from __future__ import annotations

import numpy as np
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


def grading_metrics(logits: torch.Tensor, target: torch.Tensor, ci_seed: int | None = None,
                    n_bootstrap: int = 1000) -> dict[str, float]:
    """Accuracy, kappa and mean cross-entropy of logits (N, K) against targets (N,).

    With ``ci_seed`` also percentile-bootstrap 95% intervals of accuracy and kappa
    (``accuracy_ci_low`` ... ``kappa_ci_high``; test images resampled with replacement).
    """
    num_classes = logits.shape[1]
    pred = logits.argmax(1)
    out = {
        "accuracy": float((pred == target).float().mean()) if len(target) else float("nan"),
        "kappa": quadratic_kappa(pred, target, num_classes),
        "loss": float(torch.nn.functional.cross_entropy(logits, target)) if len(target) else float("nan"),
        "n": int(len(target)),
    }
    if ci_seed is not None and len(target) > 1:
        out.update(bootstrap_grading_ci(pred.numpy(), target.numpy(), num_classes, n_bootstrap, ci_seed))
    return out


def kappa_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Quadratic-weighted kappa of confusion matrices ``(..., K, K)`` (rows: truth); NaN when undefined."""
    k = conf.shape[-1]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / max((k - 1) ** 2, 1)
    n = conf.sum(axis=(-2, -1), keepdims=True)
    expected = conf.sum(-1, keepdims=True) * conf.sum(-2, keepdims=True) / np.maximum(n, 1)
    observed = (w * conf).sum(axis=(-2, -1))
    chance = (w * expected).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chance > 0, 1.0 - observed / np.where(chance > 0, chance, 1.0), np.nan)


def bootstrap_grading_ci(pred: np.ndarray, target: np.ndarray, num_classes: int, n_bootstrap: int,
                         seed: int) -> dict[str, float]:
    """95% percentile-bootstrap intervals of accuracy and quadratic kappa (Efron & Tibshirani 1993).

    ``pred`` and ``target`` are integer arrays (N,); resamples come from ``np.random.default_rng(seed)``.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(target), size=(n_bootstrap, len(target)))
    cells = target[idx] * num_classes + pred[idx]
    conf = np.stack([np.bincount(c, minlength=num_classes ** 2) for c in cells]).reshape(-1, num_classes, num_classes)
    acc = np.trace(conf, axis1=1, axis2=2) / len(target)
    kap = kappa_from_confusion(conf.astype(np.float64))
    out = {}
    for name, vals in (("accuracy", acc), ("kappa", kap)):
        vals = vals[np.isfinite(vals)]
        if len(vals):
            lo, hi = np.quantile(vals, [0.025, 0.975])
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(lo), float(hi)
    return out
