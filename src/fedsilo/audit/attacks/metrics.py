"""How attacks are scored: ROC curves, AUC, balanced accuracy, TPR at low FPR; image similarity.

Membership scores follow one convention throughout: **higher = more likely a member**. Besides
AUC, attacks are reported by their true-positive rate at 0.1% and 1% false-positive rate, the
regime that matters for privacy (Carlini et al., "Membership inference attacks from first
principles", S&P 2022): an attack that confidently identifies a few members is a real leak even
at AUC 0.5. With ``N`` non-members the smallest FPR that can be measured is ``1/N``, so TPR at
0.1% FPR needs N >= 1000 to mean what it says; :class:`AttackResult` records ``min_fpr``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

LOW_FPRS = (0.001, 0.01)


def _scores(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one score, got 0")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


def roc_curve(member_scores: Any, nonmember_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of "member if score >= t" over every distinct threshold.

    Returns
    -------
    fpr, tpr, thresholds
        Arrays of equal length starting at (0, 0) with threshold ``+inf``.
    """
    pos, neg = _scores(member_scores, "member_scores"), _scores(nonmember_scores, "nonmember_scores")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(lab)[last]
    fps = last + 1 - tps
    return np.r_[0.0, fps / len(neg)], np.r_[0.0, tps / len(pos)], np.r_[np.inf, s[last]]


def auc_score(member_scores: Any, nonmember_scores: Any) -> float:
    """Area under the ROC curve = P(member score > non-member score) + P(tie) / 2 (Mann-Whitney)."""
    fpr, tpr, _ = roc_curve(member_scores, nonmember_scores)
    return float(np.trapezoid(tpr, fpr))


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.96) -> tuple[float, float]:
    """Approximate 95% confidence interval of an AUC (Hanley and McNeil, Radiology 1982).

    Standard error from the AUC and the two sample sizes, ``A(1-A) + (n_pos-1)(Q1-A^2) +
    (n_neg-1)(Q2-A^2)`` over ``n_pos n_neg`` with ``Q1 = A/(2-A)``, ``Q2 = 2A^2/(1+A)``; clipped
    to [0, 1]. At chance (A = 0.5) and n per side it is about ``0.5 +- z / sqrt(6 n)``.
    """
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"n_pos and n_neg must be >= 1, got {n_pos} and {n_neg}")
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, a - half), min(1.0, a + half)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR whose FPR is at most ``target`` (no interpolation: an achievable threshold)."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max())


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best balanced accuracy ``(TPR + TNR) / 2`` over thresholds (the attacker's best single cut)."""
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


@dataclass
class AttackResult:
    """One attack's outcome.

    Attributes
    ----------
    name
        Registry name (``loss``, ``rmia``, ``logan``, ...).
    kind
        ``membership`` (members vs non-members), ``realism`` (real vs synthetic: NOT a membership
        test), or ``reconstruction``.
    auc, balanced_accuracy, tpr_at_0_1pct_fpr, tpr_at_1pct_fpr
        Scores of separating the positives (members, or real images) from the negatives.
    n_pos, n_neg
        Members and non-members (or real and synthetic images) scored.
    fpr, tpr
        ROC curve.
    details
        Attack-specific numbers (JSON-serialisable).
    """

    name: str
    kind: str
    auc: float
    balanced_accuracy: float
    tpr_at_0_1pct_fpr: float
    tpr_at_1pct_fpr: float
    n_pos: int
    n_neg: int
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def min_fpr(self) -> float:
        """Smallest measurable FPR, ``1 / n_neg``."""
        return 1.0 / self.n_neg

    def summary(self) -> dict[str, float]:
        """Headline numbers (for tables and sweep columns)."""
        low, high = auc_interval(self.auc, self.n_pos, self.n_neg)
        return {"auc": self.auc, "auc_ci_low": low, "auc_ci_high": high, "balanced_accuracy": self.balanced_accuracy,
                "tpr_at_0.1%_fpr": self.tpr_at_0_1pct_fpr, "tpr_at_1%_fpr": self.tpr_at_1pct_fpr}

    def to_dict(self, max_points: int = 200) -> dict[str, Any]:
        """JSON-ready dict with the ROC curve thinned to at most ``max_points`` points."""
        idx = np.unique(np.linspace(0, len(self.fpr) - 1, min(max_points, len(self.fpr))).round().astype(int))
        return {"name": self.name, "kind": self.kind, **self.summary(), "n_pos": self.n_pos, "n_neg": self.n_neg,
                "min_fpr": self.min_fpr, "roc": {"fpr": self.fpr[idx].tolist(), "tpr": self.tpr[idx].tolist()},
                "details": self.details}


def attack_result(name: str, member_scores: Any, nonmember_scores: Any, kind: str = "membership",
                  details: dict[str, Any] | None = None) -> AttackResult:
    """Score an attack from its scores on members (positives) and non-members (negatives)."""
    pos, neg = _scores(member_scores, "member_scores"), _scores(nonmember_scores, "nonmember_scores")
    fpr, tpr, _ = roc_curve(pos, neg)
    return AttackResult(name, kind, float(np.trapezoid(tpr, fpr)), balanced_accuracy(fpr, tpr),
                        tpr_at_fpr(fpr, tpr, LOW_FPRS[0]), tpr_at_fpr(fpr, tpr, LOW_FPRS[1]), len(pos), len(neg),
                        fpr, tpr, dict(details or {}))


def plot_roc(results: Sequence[AttackResult], path: str | Path, title: str = "Membership inference") -> Path:
    """ROC curves on log-log axes (low FPR visible) with the chance diagonal; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("results must hold at least one AttackResult, got 0")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, log in zip(axes, (False, True), strict=True):
        lo = min(r.min_fpr for r in results) / 2 if log else 0.0
        ax.plot([max(lo, 1e-5), 1], [max(lo, 1e-5), 1], "k:", lw=1, label="chance")
        for r in results:
            fpr = np.maximum(r.fpr, lo) if log else r.fpr
            ax.step(fpr, r.tpr, where="post", label=f"{r.name} (AUC {r.auc:.3f})")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(max(lo, 1e-5), 1)
            ax.set_ylim(max(lo, 1e-5), 1.05)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write (PNG, 120 dpi, parent folders created) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Image similarity (reconstruction attacks)
# --------------------------------------------------------------------------------------------


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"images must both have shape (N, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, ``(N,)``; ``data_range`` 2 for [-1, 1] images.

    Identical images give ``inf``.
    """
    _check_pair(a, b)
    mse = (a.detach().float() - b.detach().float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(a: Tensor, b: Tensor, data_range: float = 2.0) -> Tensor:
    """Structural similarity per image (Wang et al., IEEE TIP 2004), ``(N,)``; Gaussian window of
    size 11, or the largest odd size that fits images smaller than 11 px."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(a, b)
    side = min(a.shape[-2:])
    k = min(11, side if side % 2 else side - 1)
    if k < 3:
        raise ValueError(f"images must be at least 3 x 3 px for SSIM, got {tuple(a.shape[-2:])}")
    value = structural_similarity_index_measure(a.detach().float(), b.detach().float(), data_range=data_range,
                                                kernel_size=k, sigma=1.5 * k / 11, reduction="none")
    return value.reshape(-1)


def mean_finite(values: Tensor | np.ndarray) -> float:
    """Mean that caps ``inf`` PSNRs (perfect reconstructions) at 100 dB so tables stay finite."""
    arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    return float(np.mean(np.where(np.isinf(arr), 100.0, arr))) if arr.size else math.nan


__all__ = [
    "AttackResult",
    "attack_result",
    "auc_interval",
    "auc_score",
    "balanced_accuracy",
    "mean_finite",
    "plot_roc",
    "psnr",
    "roc_curve",
    "save_figure",
    "ssim",
    "tpr_at_fpr",
]
