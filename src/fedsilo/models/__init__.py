"""fedsilo.models: networks and their normalisation helpers."""

from .dsbn import (
    DomainSpecificBatchNorm,
    convert_to_dsbn,
    norm_key_domains,
    norm_parameter_keys,
    set_domain,
    use_domain,
)
from .unet import DEFAULT_DOMAINS, UNET_NORMS, SegUNet, build_unet

__all__ = [
    "DEFAULT_DOMAINS",
    "DomainSpecificBatchNorm",
    "SegUNet",
    "UNET_NORMS",
    "build_unet",
    "convert_to_dsbn",
    "norm_key_domains",
    "norm_parameter_keys",
    "set_domain",
    "use_domain",
]
