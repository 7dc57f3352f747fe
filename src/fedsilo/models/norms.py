"""Normalisation layer factory shared by every model.

``batch`` is the usual choice; ``group`` and ``none`` are what DP-SGD needs (per-sample gradients
are undefined through BatchNorm, Opacus rejects it); ``instance`` suits intensity-varying
segmentation inputs.
"""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "group", "instance", "none")


def group_count(channels: int, max_groups: int = 8) -> int:
    """Largest divisor of ``channels`` that is <= ``max_groups``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2D normalisation layer for ``channels`` feature maps (``(B, C, H, W)`` in and out)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def is_norm_layer(module: nn.Module) -> bool:
    """True for the normalisation layers whose parameters FedBN-style strategies keep local."""
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def norm_state_keys(model: nn.Module) -> set[str]:
    """state_dict keys that belong to normalisation layers (weights, biases, running statistics)."""
    keys: set[str] = set()
    for name, module in model.named_modules():
        if is_norm_layer(module):
            prefix = f"{name}." if name else ""
            keys.update(prefix + k for k in module.state_dict().keys())
    return keys
