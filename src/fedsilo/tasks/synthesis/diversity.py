"""MS-SSIM diversity of generated images: mean (1 - MS-SSIM) over random pairs.

Pairwise MS-SSIM among samples measures mode collapse (Odena et al., "Conditional image synthesis
with auxiliary classifier GANs", ICML 2017): a collapsed generator draws near-identical images,
MS-SSIM near 1 and diversity near 0. MS-SSIM is Wang et al., "Multiscale structural similarity
for image quality assessment", Asilomar 2003, computed by torchmetrics.

Small images: the standard setting (5 scales, Gaussian window sigma 1.5, i.e. 11x11) needs at
least ~161 px. :func:`ms_ssim_settings` keeps sigma 1.5 with the most scales (5, 4 or 3) that fit,
else sigma 0.8 (7x7 window) with the most scales that fit, else falls back to single-scale SSIM
(sigma 1.5). The exponents are the first (finest) standard betas renormalised to sum to 1.
Resulting settings: 256 px: 5 scales, sigma 1.5; 128 px: 4, 1.5; 64 px: 3, 1.5; 32 and 28 px:
3 scales, sigma 0.8; below 28 px: SSIM. They are recorded in the result's ``details``.
Negative similarity/contrast terms are clipped at 0 before the product (torchmetrics
``normalize="relu"``; fractional powers of negatives are undefined); the SSIM fallback is clipped
the same way, so diversity lies in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from fedsilo.tasks.synthesis.stats import MetricResult, bootstrap_mean_ci, check_images

__all__ = ["STANDARD_BETAS", "ms_ssim_diversity", "ms_ssim_settings"]

STANDARD_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SIGMAS: tuple[float, ...] = (1.5, 0.8)


def _kernel(sigma: float) -> int:
    """Gaussian window size torchmetrics derives from sigma."""
    return int(3.5 * sigma + 0.5) * 2 + 1


def _fits(size: int, scales: int, sigma: float) -> bool:
    """torchmetrics' MS-SSIM size checks plus reflection padding at the coarsest scale."""
    k = _kernel(sigma)
    return size >= 2**scales and size // max(1, scales - 1) ** 2 > k - 1 and size // 2 ** (scales - 1) > (k - 1) // 2


def ms_ssim_settings(height: int, width: int) -> dict[str, object]:
    """Scales, sigma, window size and betas that fit ``height x width`` images (see module notes).

    Returns
    -------
    dict
        ``{"scales": int, "sigma": float, "kernel_size": int, "betas": tuple}``; ``scales == 1``
        means single-scale SSIM.
    """
    size = min(height, width)
    for sigma in _SIGMAS:
        for scales in (5, 4, 3):
            if _fits(size, scales, sigma):
                b = STANDARD_BETAS[:scales]
                return {
                    "scales": scales,
                    "sigma": sigma,
                    "kernel_size": _kernel(sigma),
                    "betas": tuple(x / sum(b) for x in b),
                }
    if size <= (_kernel(1.5) - 1) // 2:
        raise ValueError(f"images must be larger than 5x5 px for SSIM, got {height}x{width}")
    return {"scales": 1, "sigma": 1.5, "kernel_size": _kernel(1.5), "betas": (1.0,)}


def _similarity(a: Tensor, b: Tensor, settings: dict[str, object]) -> Tensor:
    """Per-pair similarity ``(B,)`` in [0, 1] of images in [-1, 1]."""
    common = {
        "sigma": settings["sigma"],
        "kernel_size": settings["kernel_size"],
        "data_range": (-1.0, 1.0),
        "reduction": "none",
    }
    if settings["scales"] == 1:
        return structural_similarity_index_measure(a, b, **common).clamp_min(0.0)
    return multiscale_structural_similarity_index_measure(a, b, betas=settings["betas"], normalize="relu", **common)


def ms_ssim_diversity(
    images: Tensor,
    *,
    n_pairs: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    n_bootstrap: int = 1000,
) -> MetricResult:
    """Mean ``1 - MS-SSIM`` over ``n_pairs`` random pairs of distinct images (higher = more diverse).

    Parameters
    ----------
    images
        ``(N, C, H, W)`` in [-1, 1], N >= 2, H and W >= 6.
    n_pairs
        Pairs ``(i, j)``, ``i != j``, drawn uniformly with replacement from a CPU generator seeded
        with ``seed``.
    batch_size
        Pairs per MS-SSIM call.
    n_bootstrap
        Resamples of the pairs for the 95% CI (pairs share images, so the CI is somewhat narrow).
    """
    check_images(images, min_batch=2)
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    settings = ms_ssim_settings(images.shape[2], images.shape[3])
    n = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (n_pairs,), generator=gen)
    j = (i + torch.randint(1, n, (n_pairs,), generator=gen)) % n
    i, j = i.to(images.device), j.to(images.device)
    sims = []
    with torch.no_grad():
        for start in range(0, n_pairs, batch_size):
            sl = slice(start, start + batch_size)
            sims.append(_similarity(images[i[sl]], images[j[sl]], settings).double())
    div = 1.0 - torch.cat(sims)
    lo, hi = bootstrap_mean_ci(div, n_bootstrap, seed)
    details: dict[str, float | int | str] = {
        "scales": int(settings["scales"]),
        "sigma": float(settings["sigma"]),
        "kernel_size": int(settings["kernel_size"]),
        "betas": ",".join(f"{b:.4f}" for b in settings["betas"]),
    }
    return MetricResult("ms_ssim_diversity", float(div.mean()), n_pairs, ci_low=lo, ci_high=hi, details=details)
