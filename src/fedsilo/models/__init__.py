"""fedsilo.models: networks shared by the tasks (re-exported lazily: importing one model
does not import the others' dependencies, e.g. MONAI for the U-Net)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GradeCNN": "classifier",
    "IMAGE_SIZES": "dcgan",
    "NORMS": "dcgan",
    "DCGANDiscriminator": "dcgan",
    "DCGANGenerator": "dcgan",
    "dcgan_init_": "dcgan",
    "sample_latent": "dcgan",
    "AdaptSummary": "dcgan_transfer",
    "adapt_state_dict": "dcgan_transfer",
    "load_adapted_": "dcgan_transfer",
    "discriminator_loss": "gan_losses",
    "generator_loss": "gan_losses",
    "DomainSpecificBatchNorm": "dsbn",
    "convert_to_dsbn": "dsbn",
    "norm_key_domains": "dsbn",
    "norm_parameter_keys": "dsbn",
    "set_domain": "dsbn",
    "use_domain": "dsbn",
    "DEFAULT_DOMAINS": "unet",
    "UNET_NORMS": "unet",
    "SegUNet": "unet",
    "build_unet": "unet",
    "make_norm": "norms",
    "norm_state_keys": "norms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
