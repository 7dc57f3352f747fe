"""Progressive random convolutions (Pro-RandConv).

Choi, Jeong, Choi, Kim, "Progressive Random Convolutions for Single Domain Generalization",
CVPR 2023. Instead of one random convolution with a large kernel (which blurs semantics), the
*same* small random block is applied ``L`` times. The block is a deformable convolution with
random offsets and a Gaussian-smoothed random kernel (texture diversification), followed by
standardisation, a random affine transform and ``tanh`` (contrast diversification).

torchvision's ``deform_conv2d`` is not used (torchvision is not a dependency): the deformable
convolution is a sum over the ``k * k`` kernel taps of bilinearly resampled inputs
(:func:`deform_conv2d`), one ``grid_sample`` call for all taps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedsilo.augment._base import RandomAugmentation

__all__ = ["ProRandConv", "deform_conv2d", "deform_conv_from_grid", "deform_grid", "gaussian_window"]


def gaussian_window(kernel_size: int, sigma: float, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unnormalised Gaussian window ``exp(-(di^2 + dj^2) / (2 sigma^2))`` ``(k, k)``, 1 at the centre."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    r = torch.arange(kernel_size, device=device, dtype=dtype) - (kernel_size - 1) / 2
    return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))


def deform_grid(offsets: torch.Tensor, kernel_size: int, batch: int, height: int, width: int) -> torch.Tensor:
    """Sampling grid of a 'same' deformable convolution for :func:`torch.nn.functional.grid_sample`.

    Parameters
    ----------
    offsets
        ``(2 k k, H, W)`` (shared by the batch) or ``(B, 2 k k, H, W)`` displacements in pixels;
        channel ``2 t`` is the row (y) and ``2 t + 1`` the column (x) offset of tap ``t`` (taps in
        row-major order).
    kernel_size, batch, height, width
        ``k`` (odd) and the input size; ``H, W >= 2``.

    Returns
    -------
    torch.Tensor
        ``(B, k k H, W, 2)`` normalised ``(x, y)`` coordinates (``align_corners=True``), the taps
        stacked along the rows.
    """
    k, b, h, w = kernel_size, batch, height, width
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {k!r}")
    if h < 2 or w < 2:
        raise ValueError(f"input height and width must be >= 2, got {(h, w)}")
    if offsets.ndim == 3:
        offsets = offsets.unsqueeze(0)
    if offsets.shape[1:] != (2 * k * k, h, w) or offsets.shape[0] not in (1, b):
        raise ValueError(f"offsets must be (2*k*k, H, W) or (B, 2*k*k, H, W) = ({b}, {2 * k * k}, {h}, {w}), "
                         f"got {tuple(offsets.shape)}")
    taps = torch.arange(k * k, device=offsets.device, dtype=offsets.dtype)
    di = (torch.div(taps, k, rounding_mode="floor") - k // 2).view(1, k * k, 1, 1)
    dj = (taps % k - k // 2).view(1, k * k, 1, 1)
    ys = torch.arange(h, device=offsets.device, dtype=offsets.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=offsets.device, dtype=offsets.dtype).view(1, 1, 1, w)
    py = ys + di + offsets[:, 0::2]  # (B', k k, H, W)
    px = xs + dj + offsets[:, 1::2]
    grid = torch.stack([2.0 * px / (w - 1) - 1.0, 2.0 * py / (h - 1) - 1.0], dim=-1)
    return grid.expand(b, -1, -1, -1, -1).reshape(b, k * k * h, w, 2)


def deform_conv_from_grid(x: torch.Tensor, weight: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Deformable convolution with a grid from :func:`deform_grid`: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""
    b, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(b, c_in, k * k, h, w)
    return torch.einsum("oct,bcthw->bohw", weight.reshape(c_out, c_in, k * k), sampled)


def deform_conv2d(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """'Same' deformable convolution (stride 1, zero padding, no bias).

    Output pixel ``p`` is ``sum_t w_t * x(p + p_t + offset_t(p))`` over the kernel taps ``t``
    (Dai et al., ICCV 2017), sampled bilinearly with zeros outside the image.

    Parameters
    ----------
    x
        Input ``(B, C_in, H, W)``, ``H, W >= 2``.
    weight
        Kernel ``(C_out, C_in, k, k)`` with ``k`` odd.
    offsets
        Per-tap displacements in pixels, ``(2 k k, H, W)`` or ``(B, 2 k k, H, W)`` (see
        :func:`deform_grid`). All zeros gives ``F.conv2d(x, weight, padding=k // 2)``.

    Returns
    -------
    torch.Tensor
        ``(B, C_out, H, W)``.
    """
    b, c_in, h, w = x.shape
    c_out, c_w, k, k2 = weight.shape
    if c_w != c_in or k != k2 or k % 2 == 0:
        raise ValueError(f"weight must be (C_out, {c_in}, k, k) with k odd, got {tuple(weight.shape)}")
    grid = deform_grid(offsets.to(device=x.device, dtype=x.dtype), k, b, h, w)
    return deform_conv_from_grid(x, weight, grid)


def _check_range(value: Sequence[float], name: str, low: float, low_open: bool = False) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    ok = len(pair) == 2 and pair[0] <= pair[1] and (pair[0] > low if low_open else pair[0] >= low)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be a pair (lo, hi) with {bound} lo <= hi, got {value!r}")
    return pair[0], pair[1]


class ProRandConv(RandomAugmentation):
    """Progressive random convolution block, the same block applied ``L ~ U{1..max_repeats}`` times.

    Per call (one block per batch): ``sigma_g ~ U(sigma_g_range)``; weights
    ``w = N(0, 1/(k^2 C)) * gaussian_window(k, sigma_g)``; offsets ``~ N(0, s^2)`` per pixel and
    tap with ``s ~ U(0, max_offset_std)`` pixels; per-channel ``gamma ~ N(0, gamma_std^2)`` and
    ``beta ~ N(0, beta_std^2)``. One application of the block is::

        z = deform_conv2d(x, w, offsets);  z = (z - mean) / std  (per sample, per channel)
        x = tanh(gamma * z + beta)

    Parameters
    ----------
    kernel_size
        Odd kernel size of the block (paper: 3).
    max_repeats
        ``L`` is drawn uniformly in ``1..max_repeats`` per call (paper: 10 on digits).
    sigma_g_range
        Range of the Gaussian smoothing sigma of the kernel (paper: ``(eps, 1)``).
    max_offset_std
        Upper bound of the deformable-offset std in pixels (paper: 0.2); 0 disables deformation.
    gamma_std, beta_std
        Std of the random affine contrast parameters (paper: 0.5 each).
    rescale
        Map each transformed sample's output range (min, max) onto the input sample's range, so
        the network sees intensities on its usual scale (the raw block output is in (-1, 1)).
    prob
        Probability that a sample is transformed (transformed samples share the block).
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0).
    """

    def __init__(
        self,
        kernel_size: int = 3,
        max_repeats: int = 10,
        sigma_g_range: Sequence[float] = (1e-2, 1.0),
        max_offset_std: float = 0.2,
        gamma_std: float = 0.5,
        beta_std: float = 0.5,
        rescale: bool = True,
        prob: float = 1.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__(prob=prob, generator=generator)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        if isinstance(max_repeats, bool) or not isinstance(max_repeats, int) or max_repeats < 1:
            raise ValueError(f"max_repeats must be an int >= 1, got {max_repeats!r}")
        for name, val in (("max_offset_std", max_offset_std), ("gamma_std", gamma_std), ("beta_std", beta_std)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
                raise ValueError(f"{name} must be a float >= 0, got {val!r}")
        self.kernel_size = kernel_size
        self.max_repeats = max_repeats
        self.sigma_g_range = _check_range(sigma_g_range, "sigma_g_range", 0.0, low_open=True)
        self.max_offset_std = float(max_offset_std)
        self.gamma_std = float(gamma_std)
        self.beta_std = float(beta_std)
        self.rescale = bool(rescale)

    def _uniform(self, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
        return lo + (hi - lo) * self._rand(1, like=like)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.kernel_size
        repeats = 1 + self._randint(self.max_repeats)
        sigma_g = float(self._uniform(*self.sigma_g_range, like=x))
        window = gaussian_window(k, sigma_g, device=x.device, dtype=x.dtype)
        weight = self._randn(c, c, k, k, like=x) * (window / (k * c**0.5))
        offset_std = self._uniform(0.0, self.max_offset_std, like=x)
        offsets = self._randn(2 * k * k, h, w, like=x) * offset_std
        gamma = self._randn(1, c, 1, 1, like=x) * self.gamma_std
        beta = self._randn(1, c, 1, 1, like=x) * self.beta_std
        grid = deform_grid(offsets, k, n, h, w)  # the same deformation at every repetition
        out = x
        for _ in range(repeats):
            z = deform_conv_from_grid(out, weight, grid)
            mean = z.mean(dim=(2, 3), keepdim=True)
            std = z.std(dim=(2, 3), keepdim=True, unbiased=False)
            z = (z - mean) / (std + 1e-5)
            out = torch.tanh(gamma * z + beta)
        if self.rescale:
            out = _match_range(out, x)
        return out

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, max_repeats={self.max_repeats}, "
                f"sigma_g_range={self.sigma_g_range}, max_offset_std={self.max_offset_std}, "
                f"gamma_std={self.gamma_std}, beta_std={self.beta_std}, rescale={self.rescale}, prob={self.prob}")


def _match_range(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Affinely map each sample of ``out`` so its (min, max) over (C, H, W) equals ``ref``'s."""
    dims = (1, 2, 3)
    o_lo, o_hi = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
    r_lo, r_hi = ref.amin(dim=dims, keepdim=True), ref.amax(dim=dims, keepdim=True)
    span = o_hi - o_lo
    flat = span <= torch.finfo(out.dtype).eps
    scaled = (out - o_lo) / torch.where(flat, 1.0, span)
    return torch.where(flat, (r_lo + r_hi) / 2, r_lo + scaled * (r_hi - r_lo))
