"""Random convolutions (RandConv).

Xu, Liu, Yang, Raffel, Niethammer, "Robust and Generalizable Visual Representation Learning via
Random Convolutions", ICLR 2021. One convolution layer with random weights (kernel size drawn from
a set) is applied to the batch, which distorts local texture and contrast but keeps shapes;
optionally the result is mixed with the input. The same layer applied to medical images is the
"RC" augmentation of random-convolution U-Nets for cross-modality abdominal segmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedsilo.augment._base import RandomAugmentation
from fedsilo.augment.gin import check_kernel_sizes

__all__ = ["RandConv", "RANDCONV_INITS"]

RANDCONV_INITS = ("normal", "kaiming")


class RandConv(RandomAugmentation):
    """One random ``C -> C`` convolution per batch, optionally mixed with the input.

    Per call a kernel size ``k`` is drawn from ``kernel_sizes`` and weights
    ``w ~ N(0, sigma^2)`` with ``sigma = gain / sqrt(k^2 C)`` (``gain`` 1 for ``init="normal"``,
    the RandConv default; sqrt(2) for ``init="kaiming"``, He-normal). No bias. With ``mix=True``,
    ``alpha ~ U(0, 1)`` (one per call) and ``y = alpha * x + (1 - alpha) * conv(x)``.

    Parameters
    ----------
    kernel_sizes
        Odd kernel sizes to draw from (RandConv: ``(1, 3, 5, 7)``).
    init
        Weight scale, one of :data:`RANDCONV_INITS`.
    mix
        Mix the random-conv output with the input by a random ``alpha`` (RandConv "mix" variant).
    prob
        Probability that a sample is transformed (all transformed samples share the layer).
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0).

    Notes
    -----
    The transform is linear in ``x`` for a fixed draw (no bias, no non-linearity), and its sign
    is random: contrast may be inverted, which is the point for CT <-> MR generalisation.
    """

    def __init__(
        self,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7),
        init: str = "normal",
        mix: bool = True,
        prob: float = 1.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__(prob=prob, generator=generator)
        if init not in RANDCONV_INITS:
            raise ValueError(f"init must be one of {RANDCONV_INITS}, got {init!r}")
        self.kernel_sizes = check_kernel_sizes(kernel_sizes)
        self.init = init
        self.mix = bool(mix)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = self.kernel_sizes[self._randint(len(self.kernel_sizes))]
        gain = 1.0 if self.init == "normal" else math.sqrt(2.0)
        weight = self._randn(c, c, k, k, like=x) * (gain / math.sqrt(k * k * c))
        out = F.conv2d(x, weight, padding=k // 2)
        if self.mix:
            alpha = self._rand(1, like=x)
            out = alpha * x + (1.0 - alpha) * out
        return out

    def extra_repr(self) -> str:
        return f"kernel_sizes={self.kernel_sizes}, init={self.init!r}, mix={self.mix}, prob={self.prob}"
