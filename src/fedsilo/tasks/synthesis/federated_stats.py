"""Federated GAN evaluation: statistics computed at each site, combined exactly at the coordinator.

The coordinator draws the generated images, computes their features (the fixed network of
:mod:`~fedsilo.tasks.synthesis.fixed_features`) and their k-NN radii, and sends both to every
site. A site computes, over its own real (training) images and never sending one:

- ``n``, ``mean`` and the centred scatter ``sum (x - mean)(x - mean)^T`` of its real features;
- the k-NN radius of each real feature *within the site* (kept at the site), and from them, per
  generated image: how many of the site's real balls contain it (``inside``) and its k-NN realism
  against the site's real images, ``min(1, max_i r_i / ||f - x_i||)`` (``ratio``);
- how many of its real images lie inside the generated manifold (``recall_hits``) and how many
  real balls hold at least one generated image (``coverage_hits``).

The coordinator combines them (:func:`combine_site_statistics`):

- FD: the pooled mean and covariance follow exactly from the sites' counts, means and scatters
  (Chan et al.'s parallel update), so the federated FD *equals* the FD of the pooled features;
- recall: real images inside the generated manifold, summed over sites: *equals* the pooled
  recall (it depends on the generated images' radii only);
- precision, density, coverage and realism use each real image's k-NN radius among the images of
  its own site, not among all sites' (that would need other sites' features). A site's radius is
  never smaller than the pooled one, so the real manifold is the union of the sites' manifolds, a
  superset of the pooled one: precision, density, coverage and realism are at least the pooled
  definition's values (equal with one site). Given those radii the combination is exact
  (precision: a generated image is inside if it is inside at any site; density: counts summed;
  coverage: counts summed; realism: the largest ratio over sites). The local and simulation
  engines and the centralised mode compute the very same per-site statistics, so every engine
  reports the same numbers for the same design;
- realism: the k-NN realism score of Kynkäänniemi et al. (NeurIPS 2019) capped at 1 and averaged
  over generated images (1 inside the real manifold, decaying with distance outside); it
  replaces the FedGAN paper's reference-discriminator realism, which needs a discriminator trained
  on pooled images. Kynkäänniemi et al. drop the real balls with the largest half of radii; here
  all are kept (the pooled median is not known to any site).
- KID is not computed: its unbiased estimate needs kernel sums over pairs of real images held by
  different sites.

What a site reveals: aggregate moments of its features, two counts, and for each generated image
a count and a capped ratio (about the generated images' neighbourhoods, not any real image's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor

from fedsilo.tasks.synthesis.manifold import _cdist, knn_radii, knn_realism
from fedsilo.tasks.synthesis.stats import MetricResult, bootstrap_mean_ci

__all__ = ["K", "check_site_statistics", "combine_site_statistics", "frechet_from_moments", "pooled_moments",
           "site_statistics"]

#: Neighbour rank of every radius (5 in Kynkäänniemi et al. and Naeem et al.).
K = 5
SCALARS = ("n", "manifold_n", "recall_hits", "coverage_hits")


def site_statistics(real: Tensor, fake: Tensor, fake_radii: Tensor, *, k: int = K,
                    real_radii: Tensor | None = None, chunk_size: int = 1024) -> dict[str, np.ndarray]:
    """One site's share of the federated metrics (see module notes).

    Parameters
    ----------
    real
        The site's real features ``(n, d)``.
    fake, fake_radii
        Generated features ``(m, d)`` and their k-NN radii ``(m,)`` (from the coordinator).
    real_radii
        The real features' k-NN radii within the site, when already computed (a cache).

    Returns
    -------
    dict
        ``n``, ``manifold_n``, ``recall_hits``, ``coverage_hits`` (int64, shape (1,)), ``mean``
        (d,), ``scatter`` (d, d), ``inside`` (m,) int64 and ``ratio`` (m,) float64. A site with at
        most ``k`` images has no manifold: ``manifold_n`` 0 and zero counts.
    """
    real, fake = real.double().cpu(), fake.double().cpu()
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must be feature matrices (n, d) of one d, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    n, m, d = real.shape[0], fake.shape[0], fake.shape[1]
    mean = real.mean(0) if n else torch.zeros(d, dtype=torch.float64)
    centred = real - mean
    out = {"n": np.array([n]), "mean": mean.numpy(), "scatter": (centred.T @ centred).numpy(),
           "inside": np.zeros(m, dtype=np.int64), "ratio": np.zeros(m), "manifold_n": np.array([0]),
           "recall_hits": np.array([0]), "coverage_hits": np.array([0])}
    if n <= k:
        return out
    r_real = (knn_radii(real, k, chunk_size) if real_radii is None else real_radii).double().cpu()
    r_fake = fake_radii.double().cpu()
    inside = [(_cdist(fake[start:start + chunk_size], real) <= r_real[None, :]).sum(1)  # (b,)
              for start in range(0, m, chunk_size)]
    recall = coverage = 0
    for start in range(0, n, chunk_size):
        dist = _cdist(real[start:start + chunk_size], fake)  # (b, m)
        recall += int((dist <= r_fake[None, :]).any(1).sum())
        coverage += int((dist.min(1).values <= r_real[start:start + chunk_size]).sum())
    out.update(inside=torch.cat(inside).numpy().astype(np.int64),
               ratio=knn_realism(real, fake, r_real, chunk_size).numpy(),
               manifold_n=np.array([n]), recall_hits=np.array([recall]), coverage_hits=np.array([coverage]))
    return out


def check_site_statistics(stats: Mapping[str, np.ndarray], d: int, m: int) -> str | None:
    """Why a site's statistics cannot be combined (None when they can): keys, shapes, ranges."""
    shapes = {**{s: (1,) for s in SCALARS}, "mean": (d,), "scatter": (d, d), "inside": (m,), "ratio": (m,)}
    for key, shape in shapes.items():
        if key not in stats:
            return f"missing {key!r}"
        value = np.asarray(stats[key])
        if value.shape != shape:
            return f"{key!r} has shape {value.shape}, expected {shape}"
        if not np.all(np.isfinite(value)):
            return f"{key!r} holds non-finite values"
    n, mn = int(stats["n"][0]), int(stats["manifold_n"][0])
    if n < 0 or mn not in (0, n):
        return f"n = {n} and manifold_n = {mn} are inconsistent"
    if not (0 <= int(stats["recall_hits"][0]) <= mn and 0 <= int(stats["coverage_hits"][0]) <= mn):
        return "recall_hits and coverage_hits must lie in [0, manifold_n]"
    if np.any(stats["inside"] < 0) or np.any(stats["inside"] > mn) or np.any(stats["ratio"] < 0) or \
            np.any(stats["ratio"] > 1):
        return "inside must lie in [0, manifold_n] and ratio in [0, 1]"
    return None


def pooled_moments(parts: Sequence[Mapping[str, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean ``(d,)`` and covariance ``(d, d)`` (denominator n - 1) of the union of the sites'
    features, from each site's ``n``, ``mean`` and centred ``scatter`` (exact up to rounding)."""
    parts = [p for p in parts if int(p["n"][0]) > 0]
    if not parts:
        raise ValueError("no site holds any real image")
    n = sum(int(p["n"][0]) for p in parts)
    mean = sum(int(p["n"][0]) * np.asarray(p["mean"], dtype=np.float64) for p in parts) / n
    scatter = sum(np.asarray(p["scatter"], dtype=np.float64)
                  + int(p["n"][0]) * np.outer(p["mean"] - mean, p["mean"] - mean) for p in parts)
    return n, mean, scatter / max(n - 1, 1)


def frechet_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the trace of the square root taken as the
    sum of the square roots of the eigenvalues of ``S1 S2`` (real parts), in double precision."""
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    diff = torch.as_tensor(mu1, dtype=torch.float64) - torch.as_tensor(mu2, dtype=torch.float64)
    root = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float(diff.square().sum() + s1.trace() + s2.trace() - 2 * root)


def _wilson(hits: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (sites send counts, not per-image values)."""
    if n == 0:
        return None, None
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def combine_site_statistics(fake: Tensor, stats: Sequence[Mapping[str, np.ndarray]], *, k: int = K,
                            n_bootstrap: int = 200, seed: int = 0) -> dict[str, MetricResult]:
    """``fd``, ``precision``, ``recall``, ``density``, ``coverage`` and ``realism`` of generated
    features ``fake`` ``(m, d)`` from the sites' statistics (see module notes).

    Precision, density and realism carry percentile-bootstrap CIs over the generated images; recall
    and coverage Wilson intervals from the summed counts; FD none (no site sends samples).

    Raises
    ------
    ValueError
        When no site sent statistics or no site holds a real image.
    """
    if not stats:
        raise ValueError("no site statistics to combine")
    ff = fake.double().cpu()
    n, mu_r, cov_r = pooled_moments(stats)
    mu_f = ff.mean(0).numpy()
    cov_f = torch.cov(ff.T).numpy().reshape(ff.shape[1], ff.shape[1])
    m = ff.shape[0]
    out = {"fd": MetricResult("fd", frechet_from_moments(mu_r, cov_r, mu_f, cov_f), m, n_ref=n,
                              details={"num_features": int(ff.shape[1]), "sites": len(stats)})}
    manifold_n = sum(int(s["manifold_n"][0]) for s in stats)
    if manifold_n == 0:
        return out
    inside = sum(np.asarray(s["inside"], dtype=np.int64) for s in stats)
    per_fake = {"precision": torch.from_numpy((inside > 0).astype(np.float64)),
                "density": torch.from_numpy(inside / k),
                "realism": torch.from_numpy(np.max(np.stack([s["ratio"] for s in stats]), axis=0))}
    for i, (name, values) in enumerate(per_fake.items()):
        lo, hi = bootstrap_mean_ci(values, n_bootstrap, seed + i)
        out[name] = MetricResult(name, float(values.mean()), m, n_ref=manifold_n, ci_low=lo, ci_high=hi,
                                 details={"k": k})
    for name in ("recall", "coverage"):
        hits = sum(int(s[f"{name}_hits"][0]) for s in stats)
        lo, hi = _wilson(hits, manifold_n)
        out[name] = MetricResult(name, hits / manifold_n, m, n_ref=manifold_n, ci_low=lo, ci_high=hi,
                                 details={"k": k})
    return out
