"""Global Intensity Non-linear augmentation (GIN).

Ouyang, Chen, Li, Li, Qin, Bai, Rueckert, "Causality-inspired single-source domain generalization
for medical image segmentation", IEEE Transactions on Medical Imaging, 2022 (vol. 42, 2023).
GIN passes each image through a shallow convolutional network with freshly drawn random weights,
which changes intensities and textures non-linearly while keeping shapes, mixes the result with
the input, and restores the input's Frobenius norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fedsilo.augment._base import RandomAugmentation

__all__ = ["GIN", "check_kernel_sizes"]


def check_kernel_sizes(kernel_sizes: Sequence[int], name: str = "kernel_sizes") -> tuple[int, ...]:
    """Validate a non-empty sequence of odd positive kernel sizes and return it as a tuple."""
    if isinstance(kernel_sizes, int):
        kernel_sizes = (kernel_sizes,)
    sizes = tuple(kernel_sizes)
    if not sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"{name} must be a non-empty sequence of odd positive ints, got {kernel_sizes!r}")
    return sizes


class GIN(RandomAugmentation):
    """GIN: a random shallow conv network per sample, blended with the input, norm-preserving.

    For each transformed sample a new network is drawn: ``n_layers`` convolutions
    ``C -> m -> ... -> m -> C`` (``m = interm_channels``), each with a kernel size drawn per layer
    per call from ``kernel_sizes`` (shared by the batch, as in the reference implementation),
    weights and biases i.i.d. N(0, 1), LeakyReLU(0.01) between layers and none after the last.
    With ``g(x)`` the network output and ``alpha ~ U(0, 1)`` per sample::

        y = alpha * g(x) + (1 - alpha) * x
        y = y * ||x||_F / ||y||_F          (per sample, over C, H, W)

    All samples go through one grouped convolution per layer (``groups`` = number of samples), so
    the cost is that of one small convolution over the batch.

    Parameters
    ----------
    n_layers
        Number of random conv layers (paper: 4); at least 2.
    interm_channels
        Channels of the intermediate layers (paper: 2).
    kernel_sizes
        Odd kernel sizes to draw from, per layer per call (paper: ``(1, 3)``).
    negative_slope
        LeakyReLU slope between layers (paper: 0.01).
    prob
        Probability that a sample is transformed; 0 gives the identity.
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed 0).

    Examples
    --------
    >>> gin = GIN(generator=7)
    >>> y = gin(torch.randn(4, 1, 32, 32))   # (4, 1, 32, 32), same Frobenius norm per sample
    """

    def __init__(
        self,
        n_layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: Sequence[int] = (1, 3),
        negative_slope: float = 0.01,
        prob: float = 1.0,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__(prob=prob, generator=generator)
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 2:
            raise ValueError(f"n_layers must be an int >= 2, got {n_layers!r}")
        if isinstance(interm_channels, bool) or not isinstance(interm_channels, int) or interm_channels < 1:
            raise ValueError(f"interm_channels must be an int >= 1, got {interm_channels!r}")
        if not isinstance(negative_slope, (int, float)) or negative_slope < 0:
            raise ValueError(f"negative_slope must be a float >= 0, got {negative_slope!r}")
        self.n_layers = n_layers
        self.interm_channels = interm_channels
        self.kernel_sizes = check_kernel_sizes(kernel_sizes)
        self.negative_slope = float(negative_slope)

    def random_network(self, x: torch.Tensor) -> torch.Tensor:
        """The raw random-network output ``g(x)`` ``(n, C, H, W)``, before blending and rescaling."""
        n, c, h, w = x.shape
        widths = [c] + [self.interm_channels] * (self.n_layers - 1) + [c]
        out = x.reshape(1, n * c, h, w)
        for layer in range(self.n_layers):
            c_in, c_out = widths[layer], widths[layer + 1]
            k = self.kernel_sizes[self._randint(len(self.kernel_sizes))]
            weight = self._randn(n * c_out, c_in, k, k, like=x)
            bias = self._randn(n * c_out, like=x)
            out = F.conv2d(out, weight, bias, padding=k // 2, groups=n)
            if layer < self.n_layers - 1:
                out = F.leaky_relu(out, self.negative_slope)
        return out.reshape(n, c, h, w)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = self.random_network(x)
        alpha = self._rand(n, 1, 1, 1, like=x)
        mixed = alpha * g + (1.0 - alpha) * x
        norm_in = torch.linalg.vector_norm(x.reshape(n, -1), dim=1).reshape(n, 1, 1, 1)
        norm_out = torch.linalg.vector_norm(mixed.reshape(n, -1), dim=1).reshape(n, 1, 1, 1)
        tiny = torch.finfo(x.dtype).tiny
        return mixed * (norm_in / norm_out.clamp_min(tiny))

    def extra_repr(self) -> str:
        return (
            f"n_layers={self.n_layers}, interm_channels={self.interm_channels}, "
            f"kernel_sizes={self.kernel_sizes}, negative_slope={self.negative_slope}, prob={self.prob}"
        )
