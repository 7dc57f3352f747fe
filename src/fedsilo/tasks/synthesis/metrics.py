"""Realism score, Fréchet distance and kernel inception distance for generated images.

All functions take images ``(B, C, H, W)`` in [-1, 1] (or, for the feature-space metrics, feature
matrices ``(N, d)`` computed beforehand with :func:`~fedsilo.tasks.synthesis.features.extract_features`,
so that one extraction serves every metric) and return a :class:`MetricResult`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from fedsilo.tasks.synthesis.features import FeatureAdapter, FeatureFn, as_features, eval_mode
from fedsilo.tasks.synthesis.stats import MetricResult, bootstrap_mean_ci, bootstrap_stats, check_images, normal_ci

__all__ = ["frechet_distance", "kernel_inception_distance", "realism_score"]


def realism_score(
    discriminator: nn.Module,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    batch_size: int = 256,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> MetricResult:
    """Mean ``sigmoid(D(x))`` of a reference discriminator over ``images``.

    The "realism score" of Kamran et al. (FedGAN, PLOS ONE 2025): the average probability of being
    real that a reference discriminator gives generated images. It depends entirely on that
    discriminator, so compare scores only under the same one.

    Parameters
    ----------
    discriminator
        Returns logits ``(B,)`` (or ``(B, 1)``); run in eval mode without gradients, mode restored.
    images
        ``(N, C, H, W)`` in [-1, 1], on the discriminator's device.
    labels
        ``(N,)`` class labels for a conditional discriminator, else ``None``.
    batch_size, n_bootstrap, seed
        Batch size of the forward passes; bootstrap resamples for the 95% CI and their seed.
    """
    check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    probs = []
    with torch.no_grad(), eval_mode(discriminator):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            args = (x,) if labels is None else (x, labels[start : start + batch_size])
            logits = discriminator(*args).reshape(-1)
            if logits.shape[0] != x.shape[0]:
                raise ValueError(f"discriminator must return one logit per image, got shape {tuple(logits.shape)}")
            probs.append(torch.sigmoid(logits.double()))
    p = torch.cat(probs)
    lo, hi = bootstrap_mean_ci(p, n_bootstrap, seed)
    return MetricResult("realism", float(p.mean()), int(p.numel()), ci_low=lo, ci_high=hi)


def _fd(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance of two feature matrices through torchmetrics (double precision, on the CPU)."""
    metric = FrechetInceptionDistance(feature=FeatureAdapter(nn.Identity(), num_features=real.shape[1]))
    metric.update(real.detach().to("cpu", torch.float64), real=True)
    metric.update(fake.detach().to("cpu", torch.float64), real=False)
    return float(metric.compute())


def frechet_distance(
    real: Tensor,
    fake: Tensor,
    feature_fn: FeatureFn | None = None,
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
    batch_size: int = 256,
) -> MetricResult:
    """Fréchet distance between Gaussians fitted to real and generated features.

    ``FD = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` (Heusel et al., NeurIPS 2017),
    computed by torchmetrics' ``FrechetInceptionDistance`` in the feature space of ``feature_fn``
    instead of Inception-v3, so values are not comparable with published FIDs.

    Parameters
    ----------
    real, fake
        Images ``(N, C, H, W)`` in [-1, 1] with ``feature_fn``, or features ``(N, d)`` with
        ``feature_fn=None``; at least 2 samples each.
    feature_fn
        Feature extractor (see :class:`FeatureAdapter`).
    n_bootstrap
        Bootstrap resamples (both sets resampled with replacement); 0 = no interval. The FD
        estimator is biased upwards at small n (Chong & Forsyth, "Effectively unbiased FID and
        Inception score and where to find them", CVPR 2020) and resampling with replacement adds
        more bias (duplicates shrink the covariances' rank), so percentile intervals can miss the
        estimate altogether. The interval is therefore ``value -/+ 1.96 * bootstrap SD`` (floored
        at 0): the spread due to sample size (Kamran et al. used 100 vs 100 images), not a
        calibrated CI of the population FD. ``details`` holds the bootstrap SD and mean.
    seed, batch_size
        Seed of the bootstrap; batch size of the feature extraction.
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0 (0 = no interval), got {n_bootstrap}")
    fr = as_features(real, feature_fn, "real", batch_size).cpu()
    ff = as_features(fake, feature_fn, "fake", batch_size).cpu()
    _check_pair(fr, ff, min_n=2)
    value = _fd(fr, ff)
    details: dict[str, float | int | str] = {"num_features": int(fr.shape[1])}
    lo = hi = None
    if n_bootstrap > 0:
        stats = bootstrap_stats(lambda a, b: _fd(fr[a], ff[b]), fr.shape[0], ff.shape[0], n_bootstrap, seed)
        sd = float(stats.std()) if n_bootstrap > 1 else 0.0
        lo, hi = normal_ci(value, sd)
        lo = max(lo, 0.0)
        details.update(bootstrap_sd=sd, bootstrap_mean=float(stats.mean()), n_bootstrap=n_bootstrap)
    return MetricResult("fd", value, int(ff.shape[0]), n_ref=int(fr.shape[0]), ci_low=lo, ci_high=hi, details=details)


def kernel_inception_distance(
    real: Tensor,
    fake: Tensor,
    feature_fn: FeatureFn | None = None,
    *,
    subset_size: int | None = None,
    subsets: int = 100,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> MetricResult:
    """Kernel inception distance: unbiased squared MMD with a polynomial kernel (Bińkowski et al., ICLR 2018).

    Computed by torchmetrics' ``KernelInceptionDistance`` in the feature space of ``feature_fn``,
    averaged over ``subsets`` random subsets of ``subset_size`` samples of each set (default: all
    of the smaller set, at most 1000; when that is every sample of both sets one subset is used,
    as all would be equal). torchmetrics draws the subsets with ``torch.randperm`` from the global CPU
    generator; it is forked, seeded with ``seed`` and restored, so the result depends on ``seed``
    only and the caller's RNG state is untouched. The spread is reported as the standard deviation
    over subsets in ``details["std"]`` (as Bińkowski et al.), not as a CI. Being unbiased, KID can
    be slightly negative when both sets come from one distribution. With the very same samples on
    both sides the cross term also counts self-pairs, giving ``-2 (m D - S) / (m^2 (m - 1))`` for
    kernel-matrix sum S and trace D over m samples: O(1/m), not exactly 0.

    Parameters
    ----------
    real, fake, feature_fn, seed, batch_size
        As for :func:`frechet_distance`.
    subset_size, subsets, degree, gamma, coef
        Passed to torchmetrics; kernel ``k(x, y) = (gamma x.y + coef) ** degree``, ``gamma=None`` = 1/d.
    """
    fr = as_features(real, feature_fn, "real", batch_size)
    ff = as_features(fake, feature_fn, "fake", batch_size)
    _check_pair(fr, ff, min_n=2)
    if subsets < 1 or degree < 1 or coef <= 0 or (gamma is not None and gamma <= 0):
        raise ValueError(
            f"subsets and degree must be >= 1, coef > 0 and gamma None or > 0, "
            f"got subsets={subsets}, degree={degree}, coef={coef}, gamma={gamma}"
        )
    n_max = min(fr.shape[0], ff.shape[0])
    if subset_size is None:
        subset_size = min(n_max, 1000)
    if subset_size == fr.shape[0] == ff.shape[0]:
        subsets = 1  # every subset would be the full sets, reordered
    if not 2 <= subset_size <= n_max:
        raise ValueError(f"subset_size must be in [2, {n_max}] (the smaller set's size), got {subset_size}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=FeatureAdapter(nn.Identity(), num_features=fr.shape[1]),
            subsets=subsets, subset_size=subset_size, degree=degree,
            gamma=None if gamma is None else float(gamma), coef=float(coef),
        )  # fmt: skip
    metric.update(fr.to("cpu", torch.float64), real=True)  # the subsets are drawn on the CPU
    metric.update(ff.to("cpu", torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        mean, std = metric.compute()
    return MetricResult(
        "kid", float(mean), int(ff.shape[0]), n_ref=int(fr.shape[0]),
        details={"std": float(std), "subsets": subsets, "subset_size": subset_size},
    )  # fmt: skip


def _check_pair(fr: Tensor, ff: Tensor, min_n: int) -> None:
    if fr.shape[1] != ff.shape[1]:
        raise ValueError(f"real and fake features must have the same size, got {fr.shape[1]} and {ff.shape[1]}")
    if fr.shape[0] < min_n or ff.shape[0] < min_n:
        raise ValueError(f"real and fake must hold at least {min_n} samples each, got {fr.shape[0]} and {ff.shape[0]}")
