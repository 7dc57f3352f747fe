"""Differentiable augmentation for data-efficient GAN training (DiffAugment).

Zhao et al., "Differentiable augmentation for data-efficient GAN training", NeurIPS 2020: with a
few hundred images the discriminator memorises them and the generator stops learning. Applying
the *same family* of random transforms ``T`` to the real and to the generated images every time
the discriminator sees them (``D(T(x))`` and ``D(T(G(z)))``, in the generator's step too) keeps
the discriminator from overfitting without teaching the generator the transforms, because ``T``
is differentiable and the generator's gradient flows through it.

Policies (images ``(B, C, H, W)`` in [-1, 1]; each image draws its own parameters):

- ``color``: brightness ``x + b``, ``b ~ U(-0.5, 0.5)``; saturation: the deviation from the
  per-pixel channel mean scaled by ``s ~ U(0, 2)`` (nothing for grey images); contrast: the
  deviation from the image mean scaled by ``c ~ U(0.5, 1.5)``;
- ``translation``: an integer shift of up to 1/8 of the side in each direction, zero-filled;
- ``cutout``: a zeroed square of half the side at a uniformly drawn centre (cut at the borders).

Every random number comes from the :class:`torch.Generator` passed in (drawn on the CPU, then
moved), so a seed fixes the transforms on every device. Each image's transform depends on that
image and the random draws alone, never on the rest of the batch, so under DP-SGD a real image's
augmented copy still adds exactly one per-sample gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["POLICIES", "DiffAugment", "color", "cutout", "translation"]

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(x: Tensor, generator: torch.Generator, low: float, high: float) -> Tensor:
    """One draw per image ``(B, 1, 1, 1)`` from U(low, high), on ``x``'s device and dtype."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=generator)
    return (low + (high - low) * u).to(x.device, x.dtype)


def color(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random brightness, saturation and contrast per image (see the module docstring)."""
    x = x + _uniform(x, generator, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, generator, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, generator, 0.5, 1.5) + mean


def translation(x: Tensor, generator: torch.Generator, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its side per axis; vacated pixels are 0."""
    b, c, h, w = x.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_y, max_y + 1, (b, 1, 1), generator=generator)
    dx = torch.randint(-max_x, max_x + 1, (b, 1, 1), generator=generator)
    rows = torch.arange(h).view(1, h, 1) - dy  # output pixel (i, j) reads input (i - dy, j - dx)
    cols = torch.arange(w).view(1, 1, w) - dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    moved = x.reshape(b, c, h * w).gather(2, index.to(x.device)).reshape(b, c, h, w)
    return moved * inside.unsqueeze(1).to(x.device, x.dtype)


def cutout(x: Tensor, generator: torch.Generator, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero a square of ``ratio`` of the side per image, centred at a uniformly drawn pixel."""
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), generator=generator) - size_y // 2
    left = torch.randint(0, w, (b, 1, 1), generator=generator) - size_x // 2
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~hole).unsqueeze(1).to(x.device, x.dtype)


_TRANSFORMS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}
#: The policy names, in DiffAugment's usual order.
POLICIES: tuple[str, ...] = tuple(_TRANSFORMS)


class DiffAugment:
    """Apply ``policies`` in order to a batch ``(B, C, H, W)``, drawing from ``generator``.

    Parameters
    ----------
    policies
        Names from :data:`POLICIES`, each at most once.
    generator
        CPU :class:`torch.Generator` for every random draw (its state advances).

    Raises
    ------
    ValueError
        For an unknown or repeated policy, or a non-CPU generator.
    """

    def __init__(self, policies: Sequence[str], generator: torch.Generator) -> None:
        unknown = [p for p in policies if p not in _TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown DiffAugment policies {unknown}; expected some of {', '.join(POLICIES)}")
        if len(set(policies)) != len(policies):
            raise ValueError(f"each DiffAugment policy may appear once, got {list(policies)}")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got {generator!r}")
        self.policies, self.generator = tuple(policies), generator

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        for name in self.policies:
            x = _TRANSFORMS[name](x, self.generator)
        return x
