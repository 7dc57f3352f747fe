"""GAN losses on discriminator logits.

Non-saturating losses of Goodfellow et al., "Generative adversarial nets", NeurIPS 2014 (the
generator maximises log D(G(z))), with optional one-sided label smoothing of the real target
(Salimans et al., "Improved techniques for training GANs", NeurIPS 2016), as used by DCGAN-based
studies such as FedGAN (Kamran et al., PLOS ONE 2025).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["discriminator_loss", "discriminator_row_loss", "generator_loss"]


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """BCE-with-logits loss of the discriminator: ``BCE(real, real_target) + BCE(fake, 0)``.

    Parameters
    ----------
    real_logits
        Logits on real images, shape ``(B,)``.
    fake_logits
        Logits on generated images, shape ``(B',)``.
    real_target
        Target for real images; 0.9 gives one-sided label smoothing (fake targets stay 0).

    Returns
    -------
    Tensor
        Scalar: the sum of the two batch means (``2 log 2`` when all logits are 0 and the target is 1).
    """
    if not 0.0 < real_target <= 1.0:
        raise ValueError(f"real_target must be in (0, 1], got {real_target}")
    if real_logits.dim() != 1 or fake_logits.dim() != 1:
        raise ValueError(
            f"logits must have shape (B,), got {tuple(real_logits.shape)} and {tuple(fake_logits.shape)}"
        )
    real = F.binary_cross_entropy_with_logits(real_logits, real_logits.new_full(real_logits.shape, real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_zeros(fake_logits.shape))
    return real + fake


def discriminator_row_loss(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """The discriminator's BCE as one mean over all rows, real and fake together.

    DP-SGD clips each row's gradient, and Opacus recovers a row's own gradient from a batch mean
    by the number of rows; with :func:`discriminator_loss` (two separate means) a row's gradient
    would be scaled by how many real images the Poisson batch holds, so one added image would
    change every other row's contribution. Here each row's gradient is that of its own BCE term,
    whatever else the batch holds (and an empty real part is allowed).

    Parameters
    ----------
    real_logits
        Logits on real images, shape ``(B,)`` (B may be 0).
    fake_logits
        Logits on generated images, shape ``(M,)``, M >= 1.
    real_target
        Target for real images (one-sided label smoothing below 1); fakes' target is 0.

    Returns
    -------
    Tensor
        Scalar ``(sum_i BCE(real_i, real_target) + sum_j BCE(fake_j, 0)) / (B + M)``.
    """
    if not 0.0 < real_target <= 1.0:
        raise ValueError(f"real_target must be in (0, 1], got {real_target}")
    if real_logits.dim() != 1 or fake_logits.dim() != 1 or not len(fake_logits):
        raise ValueError(f"logits must have shape (B,) and (M,) with M >= 1, got {tuple(real_logits.shape)} and "
                         f"{tuple(fake_logits.shape)}")
    logits = torch.cat([real_logits, fake_logits])
    targets = torch.cat([real_logits.new_full(real_logits.shape, real_target), fake_logits.new_zeros(fake_logits.shape)])
    return F.binary_cross_entropy_with_logits(logits, targets)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean(-log sigmoid(D(G(z))))`` = ``BCE(fake, 1)``; ``log 2`` at logit 0.

    Parameters
    ----------
    fake_logits
        Discriminator logits on generated images, shape ``(B,)``.
    """
    if fake_logits.dim() != 1:
        raise ValueError(f"fake_logits must have shape (B,), got {tuple(fake_logits.shape)}")
    return F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_ones(fake_logits.shape))
