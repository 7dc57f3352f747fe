"""k-NN manifold metrics (precision, recall, density, coverage) and nearest real neighbours.

Precision/recall: Kynkäänniemi et al., "Improved precision and recall metric for assessing
generative models", NeurIPS 2019. Density/coverage: Naeem et al., "Reliable fidelity and diversity
metrics for generative models", ICML 2020. Each sample's manifold is the union of balls around its
points whose radius is the distance to the point's k-th nearest neighbour in the same set (the point
itself excluded); a point inside a ball's boundary counts as inside (``<=``, as Kynkäänniemi et al.).
Distances are Euclidean, computed with ``torch.cdist`` in chunks so that memory stays
``O(chunk_size * N)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedsilo.tasks.synthesis.features import FeatureFn, as_features
from fedsilo.tasks.synthesis.stats import MetricResult, bootstrap_mean_ci

__all__ = ["knn_radii", "knn_realism", "nearest_neighbours", "precision_recall_density_coverage"]


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    # The matrix-multiplication shortcut loses exact zeros for identical points; use the direct form.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def knn_radii(x: Tensor, k: int, chunk_size: int = 1024) -> Tensor:
    """Distance ``(N,)`` from each row of ``x`` ``(N, d)`` to its k-th nearest other row."""
    _check_chunk(chunk_size)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0] - 1}] (fewer than the {x.shape[0]} samples), got {k}")
    out = []
    for start in range(0, x.shape[0], chunk_size):
        d = _cdist(x[start : start + chunk_size], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # k + 1: the point itself is at distance 0
    return torch.cat(out)


def precision_recall_density_coverage(
    real: Tensor,
    fake: Tensor,
    feature_fn: FeatureFn | None = None,
    *,
    k: int = 5,
    chunk_size: int = 1024,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    real_radii: Tensor | None = None,
) -> dict[str, MetricResult]:
    """Precision, recall, density and coverage of generated samples against real ones.

    - precision: fraction of fake samples inside the real manifold (fidelity);
    - recall: fraction of real samples inside the fake manifold (diversity);
    - density: mean number of real balls containing a fake sample, divided by k (can exceed 1);
    - coverage: fraction of real samples whose ball contains at least one fake sample.

    Parameters
    ----------
    real, fake
        Images ``(N, C, H, W)`` in [-1, 1] with ``feature_fn``, or features ``(N, d)`` with
        ``feature_fn=None``; each set needs more than ``k`` samples.
    k
        Neighbour rank defining the radii (5 in both papers).
    n_bootstrap, seed
        Each metric is a mean of per-sample values given the other set's manifold; the 95% CI
        resamples those values (the uncertainty of the manifold itself is not included).
    chunk_size, batch_size
        Rows per ``cdist`` chunk; batch size of the feature extraction.
    real_radii
        The real samples' radii ``(N_real,)`` when they are not the k-NN radii among ``real``
        (federated evaluation: each real sample's radius among its own site's samples).

    Returns
    -------
    dict
        ``{"precision", "recall", "density", "coverage"}`` -> :class:`MetricResult`.
    """
    fr = as_features(real, feature_fn, "real", batch_size).double()
    ff = as_features(fake, feature_fn, "fake", batch_size).double()
    if fr.shape[1] != ff.shape[1]:
        raise ValueError(f"real and fake features must have the same size, got {fr.shape[1]} and {ff.shape[1]}")
    if min(fr.shape[0], ff.shape[0]) <= k:
        raise ValueError(f"real and fake must hold more than k={k} samples each, got {fr.shape[0]} and {ff.shape[0]}")
    r_real = knn_radii(fr, k, chunk_size) if real_radii is None else _check_radii(real_radii, fr)
    r_fake = knn_radii(ff, k, chunk_size)
    precision, density = [], []
    for start in range(0, ff.shape[0], chunk_size):
        inside = _cdist(ff[start : start + chunk_size], fr) <= r_real[None, :]  # (b, N_real)
        precision.append(inside.any(dim=1).double())
        density.append(inside.sum(dim=1).double() / k)
    recall, coverage = [], []
    for start in range(0, fr.shape[0], chunk_size):
        d = _cdist(fr[start : start + chunk_size], ff)  # (b, N_fake)
        recall.append((d <= r_fake[None, :]).any(dim=1).double())
        coverage.append((d.min(dim=1).values <= r_real[start : start + chunk_size]).double())
    per_sample = {
        "precision": torch.cat(precision),  # (N_fake,)
        "recall": torch.cat(recall),  # (N_real,)
        "density": torch.cat(density),  # (N_fake,)
        "coverage": torch.cat(coverage),  # (N_real,)
    }
    out = {}
    for i, (name, values) in enumerate(per_sample.items()):
        lo, hi = bootstrap_mean_ci(values, n_bootstrap, seed + i)
        out[name] = MetricResult(
            name, float(values.mean()), int(ff.shape[0]), n_ref=int(fr.shape[0]), ci_low=lo, ci_high=hi,
            details={"k": k},
        )  # fmt: skip
    return out


def _check_radii(radii: Tensor, real: Tensor) -> Tensor:
    if radii.shape != (real.shape[0],):
        raise ValueError(f"real_radii must have shape ({real.shape[0]},), got {tuple(radii.shape)}")
    return radii.to(real.device, torch.float64)


def knn_realism(real: Tensor, fake: Tensor, real_radii: Tensor, chunk_size: int = 1024) -> Tensor:
    """Per generated sample ``(M,)``: ``min(1, max_i r_i / ||f - x_i||)`` over real features ``(N, d)``
    with radii ``(N,)``: Kynkäänniemi et al.'s realism score (without their pruning of the largest
    radii), capped at 1 (inside the real manifold)."""
    _check_chunk(chunk_size)
    fr, ff = real.double(), fake.double()
    r = _check_radii(real_radii, fr)
    out = []
    for start in range(0, ff.shape[0], chunk_size):
        ratio = r[None, :] / _cdist(ff[start : start + chunk_size], fr)
        out.append(ratio.nan_to_num(nan=1.0).max(dim=1).values.clamp(max=1.0))
    return torch.cat(out)


def nearest_neighbours(
    queries: Tensor,
    references: Tensor,
    feature_fn: FeatureFn | None = None,
    *,
    k: int = 1,
    chunk_size: int = 1024,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """The k nearest references of each query (Euclidean), e.g. the closest real image to each sample.

    Parameters
    ----------
    queries, references
        Images ``(N, C, H, W)`` in [-1, 1] or features ``(N, d)``. Images are compared in pixel space
        (flattened) when ``feature_fn`` is ``None``, else in its feature space.
    k
        Number of neighbours, ``1 <= k <= len(references)``.

    Returns
    -------
    indices, distances
        ``(Q, k)`` int64 indices into ``references`` and ``(Q, k)`` distances, nearest first.
    """
    _check_chunk(chunk_size)
    q = as_features(queries, feature_fn, "queries", batch_size, pixels_ok=True)
    r = as_features(references, feature_fn, "references", batch_size, pixels_ok=True)
    if q.shape[0] == 0:
        raise ValueError("queries must hold at least one sample, got 0")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references must have the same size, got {q.shape[1]} and {r.shape[1]}")
    if not 1 <= k <= r.shape[0]:
        raise ValueError(f"k must be in [1, {r.shape[0]}] (the number of references), got {k}")
    idx, dist = [], []
    for start in range(0, q.shape[0], chunk_size):
        d, i = _cdist(q[start : start + chunk_size], r).topk(k, dim=1, largest=False)
        idx.append(i)
        dist.append(d)
    return torch.cat(idx), torch.cat(dist)
