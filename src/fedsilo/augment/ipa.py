"""Interventional pseudo-correlation augmentation (IPA) on top of GIN.

Ouyang et al., "Causality-inspired single-source domain generalization for medical image
segmentation", IEEE TMI 2022. IPA draws two GIN views of the same image and blends them through a
smooth random spatial mask ``m`` (a B-spline interpolated low-resolution control grid)::

    view1 = m * gin1(x) + (1 - m) * gin2(x)
    view2 = (1 - m) * gin1(x) + m * gin2(x)

so that the appearance of each region is intervened on independently of the others; a
consistency loss between the predictions on the views (:func:`consistency_loss`) asks the network
to give the same segmentation whatever the local appearance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedsilo.augment._base import RandomAugmentation, check_batch, compute_dtype
from fedsilo.augment.gin import GIN

__all__ = ["IPA", "smooth_random_mask", "consistency_loss", "CONSISTENCY_KINDS"]

CONSISTENCY_KINDS = ("kl", "js", "symmetric_kl")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair[0], pair[1]


def _box_filter_valid(t: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Mean over windows of ``size`` along ``dim`` ('valid': the dim shrinks by ``size - 1``)."""
    if size == 1:
        return t
    zero = torch.zeros_like(t.narrow(dim, 0, 1))
    c = torch.cat([zero, torch.cumsum(t, dim=dim)], dim=dim)
    n = t.shape[dim] - size + 1
    return (c.narrow(dim, size, n) - c.narrow(dim, 0, n)) / size


def smooth_random_mask(
    batch: int,
    height: int,
    width: int,
    *,
    n_control: int | Sequence[int] = 4,
    order: int = 2,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Smooth random masks in ``[0, 1]``: a B-spline interpolated random control grid.

    A grid of N(0, 1) control points spaced ``s = ceil(H / n_control)`` pixels apart (plus a margin)
    is interpolated with a uniform B-spline of degree ``order`` (nearest upsampling by ``s``
    followed by ``order`` box filters of width ``s``), centre-cropped to ``(H, W)`` and min-max
    rescaled per sample to ``[0, 1]`` (as in Ouyang et al.'s random bias-field blender).

    Parameters
    ----------
    batch, height, width
        Output size ``(B, 1, H, W)``.
    n_control
        Control-point intervals across the image (rows, cols); fewer means smoother.
    order
        B-spline degree, >= 1 (1 linear, 2 quadratic, 3 cubic).
    generator
        Source of the control-point values (drawn on the generator's device).
    device, dtype
        Where the mask is built and returned.

    Returns
    -------
    torch.Tensor
        ``(B, 1, H, W)`` with per-sample minimum 0 and maximum 1 (0.5 if the field is flat).
    """
    n_h, n_w = _pair(n_control, "n_control")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    if min(batch, height, width) < 1:
        raise ValueError(f"batch, height and width must be >= 1, got {(batch, height, width)}")
    s_h, s_w = math.ceil(height / n_h), math.ceil(width / n_w)
    pad = (order + 1) // 2
    ctrl = torch.randn((batch, 1, n_h + 2 * pad, n_w + 2 * pad), generator=generator, device=generator.device)
    field = ctrl.to(device=device, dtype=dtype)
    field = field.repeat_interleave(s_h, dim=2).repeat_interleave(s_w, dim=3)
    for _ in range(order):  # separable box filters (running sums): rows then columns
        field = _box_filter_valid(_box_filter_valid(field, s_h, dim=2), s_w, dim=3)
    top = (field.shape[2] - height) // 2
    left = (field.shape[3] - width) // 2
    field = field[:, :, top : top + height, left : left + width]
    lo = field.amin(dim=(2, 3), keepdim=True)
    span = field.amax(dim=(2, 3), keepdim=True) - lo
    flat = span <= torch.finfo(dtype).eps
    return torch.where(flat, torch.full_like(field, 0.5), (field - lo) / torch.where(flat, 1.0, span))


class IPA(RandomAugmentation):
    """GIN + IPA: two GIN views blended through a smooth random mask; returns both views.

    Parameters
    ----------
    n_layers, interm_channels, kernel_sizes, negative_slope
        Passed to the inner :class:`~fedsilo.augment.gin.GIN` (paper: 4, 2, ``(1, 3)``, 0.01).
    n_control
        Control-point intervals of the blending mask across the image (default 4; the reference
        spaces control points ~1/4 of the image apart).
    order
        B-spline degree of the mask (reference: 2).
    prob
        Probability that a sample is augmented; for the others both views equal the input.
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0); shared with the inner GIN.

    Notes
    -----
    ``forward(x)`` returns ``(view1, view2)``, each ``(B, C, H, W)`` (``n_views = 2``). Train on
    both views and add ``lambda * consistency_loss([model(view1), model(view2)])``.
    """

    n_views = 2

    def __init__(
        self,
        n_layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        negative_slope: float = 0.01,
        n_control: int | Sequence[int] = 4,
        order: int = 2,
        prob: float = 1.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__(prob=prob, generator=generator)
        self.gin = GIN(n_layers, interm_channels, kernel_sizes, negative_slope, prob=1.0, generator=self.generator)
        self.n_control = _pair(n_control, "n_control")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        self.order = order

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Both views of every sample, stacked: ``(2, n, C, H, W)``."""
        g1 = self.gin.transform(x)
        g2 = self.gin.transform(x)
        n, _, h, w = x.shape
        m = smooth_random_mask(
            n, h, w, n_control=self.n_control, order=self.order, generator=self.generator,
            device=x.device, dtype=x.dtype,
        )
        return torch.stack([m * g1 + (1.0 - m) * g2, (1.0 - m) * g1 + m * g2])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Two IPA views of a batch ``(B, C, H, W)``, each ``(B, C, H, W)`` like ``x``."""
        check_batch(x)
        if self.prob == 0.0 or x.shape[0] == 0:
            return x, x
        selected = self._select(x.shape[0])
        if not bool(selected.any()):
            return x, x
        idx = selected.nonzero().squeeze(1).to(x.device)
        views = self.transform(x[idx].to(compute_dtype(x))).to(x.dtype)
        v1, v2 = x.clone(), x.clone()
        v1[idx], v2[idx] = views[0], views[1]
        return v1, v2

    def extra_repr(self) -> str:
        return f"n_control={self.n_control}, order={self.order}, prob={self.prob}"


def consistency_loss(logits: Sequence[torch.Tensor], kind: str = "kl") -> torch.Tensor:
    """Consistency between the softmax predictions of several views of the same images.

    With ``p_v = softmax(logits[v])`` over dim 1 and ``p_mean`` their average:

    - ``"kl"``: mean over views of KL(p_mean || p_v), the term of Ouyang et al.'s reference
      training code (which follows RandConv, Xu et al. ICLR 2021);
    - ``"js"``: mean over views of KL(p_v || p_mean), the generalised Jensen-Shannon divergence
      (AugMix, Hendrycks et al. ICLR 2020);
    - ``"symmetric_kl"``: mean over ordered pairs (u != v) of KL(p_u || p_v).

    KL is summed over classes and averaged over the batch and spatial positions.

    Parameters
    ----------
    logits
        At least two tensors ``(B, K, ...)`` of the same shape (K classes).
    kind
        One of :data:`CONSISTENCY_KINDS`.

    Returns
    -------
    torch.Tensor
        A scalar, differentiable with respect to every view's logits; 0 when all views agree.
    """
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"kind must be one of {CONSISTENCY_KINDS}, got {kind!r}")
    views = list(logits)
    if len(views) < 2:
        raise ValueError(f"logits must hold at least 2 views, got {len(views)}")
    shape = views[0].shape
    if len(shape) < 2 or any(v.shape != shape for v in views):
        raise ValueError(f"logits must all be shaped (B, K, ...) alike, got {[tuple(v.shape) for v in views]}")
    log_p = torch.stack([F.log_softmax(v, dim=1) for v in views])  # (V, B, K, ...)
    n_views = log_p.shape[0]
    if kind == "symmetric_kl":
        total = log_p.new_zeros(())
        for u in range(n_views):
            for v in range(n_views):
                if u != v:
                    total = total + (log_p[u].exp() * (log_p[u] - log_p[v])).sum(dim=1).mean()
        return total / (n_views * (n_views - 1))
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(n_views)  # (B, K, ...)
    if kind == "kl":
        kl = (log_mean.exp().unsqueeze(0) * (log_mean.unsqueeze(0) - log_p)).sum(dim=2)
    else:
        kl = (log_p.exp() * (log_p - log_mean.unsqueeze(0))).sum(dim=2)
    return kl.mean()
