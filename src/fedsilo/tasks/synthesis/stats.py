"""Result record, input checks and bootstrap confidence intervals shared by the synthesis metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import torch
from torch import Tensor

__all__ = ["MetricResult", "bootstrap_mean_ci", "bootstrap_stats", "check_images", "normal_ci"]

RANGE_TOL = 1e-3  # images may exceed [-1, 1] by this much (rounding of tanh/normalisation)


@dataclass(frozen=True)
class MetricResult:
    """One metric value with its sample size and, where meaningful, a 95% confidence interval.

    Attributes
    ----------
    name
        Metric name (e.g. ``"fd"``, ``"precision"``).
    value
        Point estimate on all samples.
    n
        Number of evaluated (generated) samples, or of pairs for pairwise metrics.
    n_ref
        Number of reference (real) samples, for two-set metrics.
    ci_low, ci_high
        Percentile-bootstrap 95% interval, ``None`` when not computed.
    details
        Extra numbers (e.g. KID's subset standard deviation, MS-SSIM settings).
    """

    name: str
    value: float
    n: int
    n_ref: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable dict (for ``metrics.jsonl``)."""
        return asdict(self)


def check_images(images: Tensor, name: str = "images", min_batch: int = 1) -> None:
    """Raise ``ValueError`` unless ``images`` is a floating ``(B, C, H, W)`` tensor in [-1, 1], B >= min_batch."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        desc = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (B, C, H, W), got {desc}")
    if images.shape[0] < min_batch:
        raise ValueError(f"{name} must hold at least {min_batch} images, got {images.shape[0]}")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1 - RANGE_TOL or hi > 1 + RANGE_TOL:
        raise ValueError(f"{name} must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")


def _check_bootstrap(n_bootstrap: int, level: float) -> None:
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0 (0 = no interval), got {n_bootstrap}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_stats(
    statistic: Callable[[Tensor, Tensor], float], n_a: int, n_b: int, n_bootstrap: int, seed: int
) -> Tensor:
    """Bootstrap replicates ``(n_bootstrap,)`` of a two-sample statistic.

    ``statistic(idx_a, idx_b)`` receives index tensors ``(n_a,)`` and ``(n_b,)`` drawn with
    replacement on the CPU from a generator seeded with ``seed``.
    """
    _check_bootstrap(n_bootstrap, 0.95)
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(
        [
            statistic(torch.randint(0, n_a, (n_a,), generator=gen), torch.randint(0, n_b, (n_b,), generator=gen))
            for _ in range(n_bootstrap)
        ],
        dtype=torch.float64,
    )


def normal_ci(value: float, sd: float, level: float = 0.95) -> tuple[float, float]:
    """``value -/+ z * sd`` with ``z`` the normal quantile of ``(1 + level) / 2`` (1.96 for 95%)."""
    _check_bootstrap(0, level)
    z = NormalDist().inv_cdf((1 + level) / 2)
    return value - z * sd, value + z * sd


def bootstrap_mean_ci(
    values: Tensor, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of per-sample ``values`` ``(N,)``.

    Resamples are drawn on the CPU from a generator seeded with ``seed`` (in chunks, so memory stays
    ``O(N * 256)``). Returns ``(None, None)`` when ``n_bootstrap == 0``.
    """
    _check_bootstrap(n_bootstrap, level)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"values must have shape (N,) with N >= 1, got {tuple(values.shape)}")
    if n_bootstrap == 0:
        return None, None
    v = values.detach().to("cpu", torch.float64)
    gen = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, n_bootstrap, 256):
        b = min(256, n_bootstrap - start)
        means.append(v[torch.randint(0, v.numel(), (b, v.numel()), generator=gen)].mean(dim=1))
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(torch.cat(means), q).tolist()
    return lo, hi
