"""2D U-Net for multi-organ segmentation with selectable normalisation, built on MONAI.

The network is :class:`monai.networks.nets.UNet` (residual units, strided convolutions; Kerfoot
et al., "Left-Ventricle Quantification Using Residual U-Net", STACOM 2018, after Ronneberger et
al., MICCAI 2015) wrapped in :class:`SegUNet`, which adds the ``domain`` argument used by
domain-specific batch normalisation (:mod:`fedsilo.models.dsbn`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

from fedsilo.data.labels import NUM_CLASSES
from fedsilo.models.dsbn import DomainSpecificBatchNorm, convert_to_dsbn, use_domain

__all__ = ["SegUNet", "build_unet", "UNET_NORMS", "DEFAULT_DOMAINS"]

logger = logging.getLogger(__name__)

#: Normalisation choices of :func:`build_unet`.
UNET_NORMS = ("batch", "instance", "group", "dsbn")
#: Domains of a DSBN U-Net unless told otherwise.
DEFAULT_DOMAINS = ("ct", "mr")


class SegUNet(nn.Module):
    """A segmentation network whose ``forward`` optionally selects the DSBN domain.

    Parameters
    ----------
    net
        The underlying network, ``(B, C_in, H, W) -> (B, K, H, W)`` logits.
    domains
        DSBN domains of ``net`` (empty when it has no DSBN layer).
    """

    def __init__(self, net: nn.Module, domains: Sequence[str] = ()) -> None:
        super().__init__()
        self.net = net
        self.domains = tuple(domains)

    def forward(self, x: torch.Tensor, domain: str | None = None) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for images ``(B, C_in, H, W)``.

        ``domain`` selects the BatchNorm of that domain in every DSBN layer for this call only;
        with ``None`` the active domain set by :func:`~fedsilo.models.dsbn.set_domain` is used.
        It must be ``None`` for a model without DSBN.
        """
        if domain is None:
            return self.net(x)
        if not self.domains:
            raise ValueError(f"domain must be None for a model without DSBN layers, got {domain!r}")
        with use_domain(self.net, domain):
            return self.net(x)


def _norm_arg(norm: str, channels: Sequence[int], num_classes: int, num_groups: int | None) -> str | tuple:
    if norm in ("batch", "dsbn"):
        return "batch"
    if norm == "instance":
        return ("instance", {"affine": True})
    widths = list(channels) + [num_classes]
    if num_groups is None:
        num_groups = min(8, math.gcd(*widths))
        logger.debug("group norm: num_groups=%s (gcd of widths %s, at most 8)", num_groups, widths)
    elif isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or any(
        w % num_groups for w in widths
    ):
        raise ValueError(
            f"num_groups must be a positive int dividing every width and num_classes {widths}, got {num_groups!r}"
        )
    return ("group", {"num_groups": num_groups})


def build_unet(
    in_channels: int = 1,
    num_classes: int = NUM_CLASSES,
    norm: str = "batch",
    base_width: int = 16,
    depth: int = 5,
    channels: Sequence[int] | None = None,
    num_res_units: int = 2,
    dropout: float = 0.0,
    num_groups: int | None = None,
    domains: Sequence[str] | None = None,
) -> SegUNet:
    """Build the 2D segmentation U-Net.

    Parameters
    ----------
    in_channels
        Image channels: 1 for single slices, 3 for 2.5D (slice and its two neighbours).
    num_classes
        Output classes including background (default :data:`fedsilo.data.labels.NUM_CLASSES`).
    norm
        One of :data:`UNET_NORMS`: ``"batch"``, ``"instance"`` (affine), ``"group"`` or
        ``"dsbn"`` (batch norm with one BatchNorm per domain, Chang et al. CVPR 2019).
    base_width, depth
        Widths ``base_width * 2**i`` for ``i < depth``: ``depth - 1`` down-samplings, so ``H`` and
        ``W`` must be divisible by ``2**(depth - 1)``. Ignored when ``channels`` is given.
    channels
        Explicit widths per level (at least 2), overriding ``base_width``/``depth``.
    num_res_units
        Residual units per block (MONAI ``UNet``).
    dropout
        Dropout probability in ``[0, 1)``.
    num_groups
        Groups for ``norm="group"``; must divide every width and ``num_classes``. ``None`` picks
        the largest divisor of them all that is at most 8.
    domains
        DSBN domains for ``norm="dsbn"`` (default :data:`DEFAULT_DOMAINS`); must be ``None``
        for the other norms.

    Returns
    -------
    SegUNet
        ``model(x, domain=None) -> logits (B, num_classes, H, W)``.
    """
    if norm not in UNET_NORMS:
        raise ValueError(f"norm must be one of {UNET_NORMS}, got {norm!r}")
    for name, val, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2),
                           ("base_width", base_width, 1), ("depth", depth, 2), ("num_res_units", num_res_units, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if channels is None:
        channels = tuple(base_width * 2**i for i in range(depth))
    else:
        channels = tuple(channels)
        if len(channels) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels must hold at least 2 positive ints, got {channels!r}")
    if norm != "dsbn" and domains is not None:
        raise ValueError(f"domains is only used with norm='dsbn', got norm={norm!r} and domains={domains!r}")
    if norm != "group" and num_groups is not None:
        raise ValueError(f"num_groups is only used with norm='group', got norm={norm!r} and num_groups={num_groups!r}")
    net = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm=_norm_arg(norm, channels, num_classes, num_groups),
        dropout=float(dropout),
    )
    if norm != "dsbn":
        return SegUNet(net)
    doms = tuple(DEFAULT_DOMAINS if domains is None else domains)
    convert_to_dsbn(net, doms)
    n_layers = sum(isinstance(m, DomainSpecificBatchNorm) for m in net.modules())
    logger.debug("DSBN U-Net: %s layers, domains %s", n_layers, doms)
    return SegUNet(net, doms)
