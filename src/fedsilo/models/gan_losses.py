"""GAN losses on discriminator logits.

Non-saturating losses of Goodfellow et al., "Generative adversarial nets", NeurIPS 2014 (the
generator maximises log D(G(z))), with optional one-sided label smoothing of the real target
(Salimans et al., "Improved techniques for training GANs", NeurIPS 2016), as used by DCGAN-based
studies such as FedGAN (Kamran et al., PLOS ONE 2025).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["discriminator_loss", "generator_loss"]


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
