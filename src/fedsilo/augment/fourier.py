"""Frequency-domain augmentations: low-frequency amplitude mixing and random frequency filtering.

- :class:`AmplitudeMix` ("fmaug"): the amplitude spectrum of an image carries its low-level
  appearance (intensity distribution, contrast) and the phase its structure. Mixing the
  low-frequency amplitude of an image with that of another image of the batch, phase kept, changes
  the appearance but not the anatomy. This is the continuous frequency-space interpolation of
  FedDG/ELCFS (Liu, Chen, Qin, Dou, Heng, "FedDG: Federated Domain Generalization on Medical Image
  Segmentation via Episodic Learning in Continuous Frequency Space", CVPR 2021), which builds on
  Fourier domain adaptation (Yang & Soatto, CVPR 2020); the FedGIN follow-up cites it as the
  FMAug-style baseline. Here partners come from the same batch (no amplitude bank is shared
  across sites, which would leak information between silos).
- :class:`RandomFrequencyFilter` ("raffesdg"): a random Butterworth high-pass filter in the
  frequency domain (random cut-off and order), magnitude of the filtered image, robustly rescaled,
  and two such views blended through a smooth random mask (Li, Li, Chen, Ou, Shu, Miao, "RaffeSDG:
  Random Frequency Filtering enabled Single-source Domain Generalization for Medical Image
  Segmentation", arXiv 2405.01228, 2024). The structural-saliency attention and the
  self-supervised parts of RaffeSDG are model/training components and are not included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedsilo.augment._base import RandomAugmentation
from fedsilo.augment.ipa import _pair, smooth_random_mask

__all__ = ["AmplitudeMix", "RandomFrequencyFilter", "low_frequency_mask", "butterworth_highpass"]


def _check_unit_range(value: Sequence[float], name: str) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not 0.0 <= pair[0] <= pair[1] <= 1.0:
        raise ValueError(f"{name} must be a pair (lo, hi) with 0 <= lo <= hi <= 1, got {value!r}")
    return pair[0], pair[1]


def low_frequency_mask(height: int, width: int, band: float, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(H, W)`` mask (unshifted FFT layout) of ``|k_y| <= floor(band H / 2)``, same for x.

    The set is symmetric under ``k -> -k`` and never holds the Nyquist frequency, so amplitude
    spectra edited inside it stay those of real images.
    """
    if not 0.0 < band < 1.0:
        raise ValueError(f"band must be in (0, 1), got {band!r}")
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=device).abs()
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=device).abs()
    by, bx = math.floor(band * height / 2), math.floor(band * width / 2)
    return (ky[:, None] <= by) & (kx[None, :] <= bx)


def butterworth_highpass(height: int, width: int, cutoff: float, order: int, *,
                         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Butterworth high-pass response ``1 / (1 + (cutoff / D)^(2 order))`` ``(H, W)``, unshifted layout.

    ``D`` is the distance to the zero frequency in frequency-index units; the response is 0 at
    ``D = 0``, 1/2 at ``D = cutoff`` and tends to 1 at high frequency.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be > 0, got {cutoff!r}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=device, dtype=dtype)
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=device, dtype=dtype)
    dist = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    ratio = cutoff / dist.clamp_min(torch.finfo(dtype).tiny)
    return torch.where(dist == 0, torch.zeros_like(dist), 1.0 / (1.0 + ratio ** (2 * order)))


class AmplitudeMix(RandomAugmentation):
    """FMAug-style low-frequency amplitude mixing between images of the batch, phase kept.

    For sample ``i`` with partner ``j`` (the batch rolled by a random shift, so ``j != i`` when
    ``B > 1``) and ``lam ~ U(lam_range)`` per sample, per channel::

        A_i <- (1 - lam) A_i + lam A_j   on the low-frequency band (see low_frequency_mask)
        y_i = IFFT(A_i * exp(1j * phase_i))

    ``lam = 1`` swaps the band's amplitude (Fourier domain adaptation); ``lam`` in (0, 1)
    interpolates (FedDG's continuous frequency space).

    Parameters
    ----------
    band
        Relative size of the low-frequency square, in (0, 1) (default 0.1).
    lam_range
        Range of the interpolation weight, within [0, 1] (default ``(0, 1)``).
    prob
        Probability that a sample is transformed. Partners are drawn among the transformed
        samples; a single transformed sample is left unchanged.
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0).
    """

    def __init__(self, band: float = 0.1, lam_range: Sequence[float] = (0.0, 1.0), prob: float = 1.0,
                 generator: torch.Generator | int | None = None) -> None:
        super().__init__(prob=prob, generator=generator)
        if isinstance(band, bool) or not isinstance(band, (int, float)) or not 0.0 < band < 1.0:
            raise ValueError(f"band must be in (0, 1), got {band!r}")
        self.band = float(band)
        self.lam_range = _check_unit_range(lam_range, "lam_range")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if n < 2:
            return x
        spec = torch.fft.fft2(x)
        amp, phase = spec.abs(), spec.angle()
        partner = torch.roll(amp, shifts=1 + self._randint(n - 1), dims=0)
        lo, hi = self.lam_range
        lam = lo + (hi - lo) * self._rand(n, 1, 1, 1, like=x)
        band = low_frequency_mask(h, w, self.band, device=x.device)
        mixed = torch.where(band, (1.0 - lam) * amp + lam * partner, amp)
        return torch.fft.ifft2(torch.polar(mixed, phase)).real.to(x.dtype)

    def extra_repr(self) -> str:
        return f"band={self.band}, lam_range={self.lam_range}, prob={self.prob}"


class RandomFrequencyFilter(RandomAugmentation):
    """RaffeSDG-style random frequency filtering with blending of two filtered views.

    Each view of a sample: a Butterworth high-pass filter with a random relative cut-off
    ``r ~ logU(cutoff_range)`` (cut-off ``r * min(H, W) / 2`` frequency indices, at least 1) and
    order drawn from ``orders``, the magnitude of the filtered image, and a per-sample affine
    rescale mapping its ``(q, 100 - q)`` percentiles (nearest rank) onto the input's. With ``blend=True`` two
    views are blended through a smooth random mask (RaffeSDG's mixing of homologous samples).

    Parameters
    ----------
    cutoff_range
        Range of the relative cut-off, ``0 < lo <= hi < 1`` (default ``(0.005, 0.1)``; RaffeSDG
        draws exponentially spaced cut-offs up to 0.1).
    orders
        Butterworth orders to draw from (RaffeSDG: 1, 2, 3).
    percentile
        ``q`` of the robust rescale, in [0, 50) (RaffeSDG normalises by the 3rd/97th percentiles).
    blend
        Blend two independently filtered views through a smooth random mask.
    n_control
        Control-point intervals of the blending mask (see :func:`~fedsilo.augment.ipa.smooth_random_mask`).
    prob
        Probability that a sample is transformed.
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0).
    """

    def __init__(self, cutoff_range: Sequence[float] = (0.005, 0.1), orders: Sequence[int] = (1, 2, 3),
                 percentile: float = 3.0, blend: bool = True, n_control: int | Sequence[int] = 4,
                 prob: float = 1.0, generator: torch.Generator | int | None = None) -> None:
        super().__init__(prob=prob, generator=generator)
        lo_hi = tuple(float(v) for v in cutoff_range)
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] < 1.0:
            raise ValueError(f"cutoff_range must be a pair (lo, hi) with 0 < lo <= hi < 1, got {cutoff_range!r}")
        orders = tuple(orders)
        if not orders or any(isinstance(o, bool) or not isinstance(o, int) or o < 1 for o in orders):
            raise ValueError(f"orders must be a non-empty sequence of ints >= 1, got {orders!r}")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0.0 <= percentile < 50.0:
            raise ValueError(f"percentile must be in [0, 50), got {percentile!r}")
        self.cutoff_range = (lo_hi[0], lo_hi[1])
        self.orders = orders
        self.percentile = float(percentile)
        self.blend = bool(blend)
        self.n_control = _pair(n_control, "n_control")

    def _quantiles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample nearest-rank ``q`` and ``100 - q`` percentiles over (C, H, W), ``(n, 1, 1, 1)`` each."""
        flat = x.reshape(x.shape[0], -1)
        last = flat.shape[1] - 1
        k_lo = round(self.percentile / 100.0 * last)
        k_hi = round((1.0 - self.percentile / 100.0) * last)
        lo = torch.kthvalue(flat, k_lo + 1, dim=1).values
        hi = torch.kthvalue(flat, k_hi + 1, dim=1).values
        return lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)

    def filtered_view(self, x: torch.Tensor, ref_range: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One randomly filtered view ``(n, C, H, W)`` (a filter per sample), before blending.

        ``ref_range`` is the input's percentile range (computed from ``x`` when ``None``).
        """
        n, _, h, w = x.shape
        lo, hi = self.cutoff_range
        u = torch.rand(n, generator=self.generator, device=self.generator.device, dtype=torch.float64).tolist()
        responses = []
        for i in range(n):
            rel = math.exp(math.log(lo) + u[i] * (math.log(hi) - math.log(lo)))
            order = self.orders[self._randint(len(self.orders))]
            cutoff = max(rel * min(h, w) / 2.0, 1.0)
            responses.append(butterworth_highpass(h, w, cutoff, order, device=x.device, dtype=x.dtype))
        response = torch.stack(responses).unsqueeze(1)  # (n, 1, H, W)
        out = torch.fft.ifft2(torch.fft.fft2(x) * response).abs().to(x.dtype)
        o_lo, o_hi = self._quantiles(out)
        r_lo, r_hi = self._quantiles(x) if ref_range is None else ref_range
        span = o_hi - o_lo
        flat = span <= torch.finfo(x.dtype).eps
        return r_lo + (out - o_lo) * torch.where(flat, 0.0, (r_hi - r_lo) / torch.where(flat, 1.0, span))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        ref_range = self._quantiles(x)
        v1 = self.filtered_view(x, ref_range)
        if not self.blend:
            return v1
        v2 = self.filtered_view(x, ref_range)
        n, _, h, w = x.shape
        m = smooth_random_mask(n, h, w, n_control=self.n_control, generator=self.generator,
                               device=x.device, dtype=x.dtype)
        return m * v1 + (1.0 - m) * v2

    def extra_repr(self) -> str:
        return (f"cutoff_range={self.cutoff_range}, orders={self.orders}, percentile={self.percentile}, "
                f"blend={self.blend}, prob={self.prob}")
