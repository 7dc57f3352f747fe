"""Shared machinery for the random intensity augmentations.

Every augmentation in :mod:`fedsilo.augment` is a :class:`torch.nn.Module` that maps a float batch
``(B, C, H, W)`` to a batch of the same shape, dtype and device. Randomness comes only from the
module's own :class:`torch.Generator` (never the global RNG, never the clock), so that a site
seeded with ``s`` produces the same augmented stream on every run and on every engine.

Random numbers are drawn on the generator's device (CPU unless a CUDA generator is passed) and
then moved to the input's device and dtype, so a CPU run and a GPU run draw the same networks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Seed used when neither a generator nor a seed is given. Documented, never the clock: two
#: sites that both rely on it draw identical augmentations, so federated runs should pass seeds.
DEFAULT_SEED = 0


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Return a :class:`torch.Generator` from a generator, a seed or ``None``.

    Parameters
    ----------
    generator
        An existing generator (used as is, shared with the caller), an integer seed (a new CPU
        generator seeded with it) or ``None`` (a new CPU generator seeded with
        :data:`DEFAULT_SEED`).
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        logger.debug("no generator or seed given; seeding with DEFAULT_SEED=%s", DEFAULT_SEED)
        generator = DEFAULT_SEED
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise ValueError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    return torch.Generator().manual_seed(generator)


def check_prob(prob: float) -> float:
    """Validate an application probability and return it as a float."""
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}")
    return float(prob)


def check_batch(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating-point tensor shaped ``(B, C, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor shaped (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"input must be shaped (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got dtype {x.dtype}")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype to compute in: the input's for float32/float64, float32 for half types."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


class RandomAugmentation(nn.Module, ABC):
    """Base class: applies :meth:`transform` to each sample with probability ``prob``.

    Parameters
    ----------
    prob
        Probability that a given sample of the batch is transformed; the other samples are
        returned unchanged. ``prob = 0`` makes the module the identity (it returns its input).
    generator
        A :class:`torch.Generator`, an int seed, or ``None`` (seed :data:`DEFAULT_SEED`).

    Notes
    -----
    Subclasses implement :meth:`transform` on the selected sub-batch. ``forward`` runs under
    :func:`torch.no_grad`: the augmentations are data transforms, not part of the model.
    """

    #: Number of tensors ``forward`` returns (IPA returns two views).
    n_views: int = 1

    def __init__(self, prob: float = 1.0, generator: torch.Generator | int | None = None) -> None:
        super().__init__()
        self.prob = check_prob(prob)
        self.generator = make_generator(generator)

    def manual_seed(self, seed: int) -> RandomAugmentation:
        """Re-seed the module's generator (e.g. once per federated round); returns ``self``."""
        self.generator.manual_seed(seed)
        return self

    # -- random draws on the generator's device, then moved to the input's ------------------
    def _rand(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Uniform ``[0, 1)`` tensor of ``shape`` on the device/dtype of ``like``."""
        r = torch.rand(shape, generator=self.generator, device=self.generator.device)
        return r.to(device=like.device, dtype=like.dtype)

    def _randn(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Standard normal tensor of ``shape`` on the device/dtype of ``like``."""
        r = torch.randn(shape, generator=self.generator, device=self.generator.device)
        return r.to(device=like.device, dtype=like.dtype)

    def _randint(self, high: int) -> int:
        """One integer uniform in ``[0, high)``."""
        return int(torch.randint(high, (1,), generator=self.generator, device=self.generator.device))

    def _select(self, batch_size: int) -> torch.Tensor:
        """Boolean CPU mask ``(B,)`` of the samples to transform (``rand < prob``)."""
        r = torch.rand(batch_size, generator=self.generator, device=self.generator.device)
        return (r < self.prob).cpu()

    @abstractmethod
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Transform every sample of ``x`` ``(n, C, H, W)`` (already in the compute dtype)."""

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Parameters
        ----------
        x
            Float tensor ``(B, C, H, W)``.

        Returns
        -------
        torch.Tensor
            ``(B, C, H, W)``, same dtype and device as ``x``.
        """
        check_batch(x)
        if self.prob == 0.0 or x.shape[0] == 0:
            return x
        selected = self._select(x.shape[0])
        if not bool(selected.any()):
            return x
        dtype = compute_dtype(x)
        if bool(selected.all()):
            return self.transform(x.to(dtype)).to(x.dtype)
        idx = selected.nonzero().squeeze(1).to(x.device)
        out = x.clone()
        out[idx] = self.transform(x[idx].to(dtype)).to(x.dtype)
        return out

    def extra_repr(self) -> str:
        return f"prob={self.prob}"


class NoAugmentation(RandomAugmentation):
    """The identity, so that "no augmentation" goes through the same code path as the others.

    ``prob`` and ``generator`` are accepted (and ignored) so that a training loop can build every
    augmentation with the same keyword arguments.
    """

    def __init__(self, prob: float = 1.0, generator: torch.Generator | int | None = None) -> None:
        super().__init__(prob=prob, generator=generator)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x)
        return x
