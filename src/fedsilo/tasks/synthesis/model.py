"""The GAN as one module, so the federation averages generator and discriminator together."""

from __future__ import annotations

from torch import Tensor, nn

from fedsilo.models.dcgan import DCGANDiscriminator, DCGANGenerator


class GANPair(nn.Module):
    """A DCGAN generator and discriminator (Radford et al., ICLR 2016) held side by side.

    The FedGAN protocol (Kamran et al., PLOS ONE 2025) averages both networks every round; as
    one module their state dict is one ArrayRecord (``generator.*`` and ``discriminator.*``
    keys), so every strategy, FedBN-style local normalisation and checkpoints treat them alike.
    ``forward`` is the generator: ``z (B, latent_dim)`` (and grades ``(B,)``) -> images
    ``(B, C, H, W)`` in [-1, 1].
    """

    def __init__(self, generator: DCGANGenerator, discriminator: DCGANDiscriminator) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z, labels)


class Generate(nn.Module):
    """The generator alone as an exportable module: z ``(B, latent_dim)`` -> images, or for a
    conditional generator z and one-hot grades ``(B, K)`` packed as ``(B, latent_dim + K)``."""

    def __init__(self, generator: DCGANGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.latent_dim = generator.latent_dim
        self.num_classes = generator.num_classes

    def forward(self, code: Tensor) -> Tensor:
        if self.num_classes:
            z, onehot = code[:, : self.latent_dim], code[:, self.latent_dim:]
            return self.generator(z, onehot.argmax(1))
        return self.generator(code)
