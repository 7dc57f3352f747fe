"""fedsilo.models: networks shared by the tasks."""

from fedsilo.models.dcgan import (
    IMAGE_SIZES,
    NORMS,
    DCGANDiscriminator,
    DCGANGenerator,
    dcgan_init_,
    sample_latent,
)
from fedsilo.models.dcgan_transfer import AdaptSummary, adapt_state_dict, load_adapted_
from fedsilo.models.gan_losses import discriminator_loss, generator_loss

__all__ = [
    "IMAGE_SIZES",
    "NORMS",
    "AdaptSummary",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "adapt_state_dict",
    "dcgan_init_",
    "discriminator_loss",
    "generator_loss",
    "load_adapted_",
    "sample_latent",
]
