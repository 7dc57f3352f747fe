"""Cross-modality methods of the FedGIN comparison: which augmentation and which normalisation.

``segmentation.method`` names one method of the sweep; it resolves to an intensity augmentation
of :mod:`fedsilo.augment` plus the U-Net's normalisation:

===========  =====================================  ==================================================
method       augmentation                           normalisation
===========  =====================================  ==================================================
none         none                                   ``unet.norm``
gin          GIN (Ouyang et al., IEEE TMI 2022)     ``unet.norm``
gin+ipa      GIN + IPA, consistency loss            ``unet.norm``
randconv     RandConv (Xu et al., ICLR 2021)        ``unet.norm``
prorandconv  ProRandConv (Choi et al., CVPR 2023)   ``unet.norm``
fmaug        Fourier amplitude mixing (FedDG-style) ``unet.norm``
raffesdg     random frequency filtering (RaffeSDG)  ``unet.norm``
dsbn         none                                   DSBN (Chang et al., CVPR 2019): a batch norm per modality
===========  =====================================  ==================================================

``unet.norm = "dsbn"`` with another method combines that augmentation with DSBN.
Augmentation generators are seeded per (experiment seed, round, site), so a site draws the same
augmented stream on every engine and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import torch

from fedsilo.augment import build_augmentation
from fedsilo.augment._base import RandomAugmentation
from fedsilo.config import ExperimentConfig
from fedsilo.config.schema import SegMethod
from fedsilo.seeding import derive_seed

__all__ = ["METHODS", "Method", "augmentation_kwargs", "make_augmentation", "resolve_method"]

#: Names accepted by ``segmentation.method``.
#: The method names ``segmentation.method`` accepts (the config schema's list).
METHODS: tuple[str, ...] = get_args(SegMethod)


@dataclass(frozen=True)
class Method:
    """A resolved method: augmentation name (a key of :data:`fedsilo.augment.AUGMENTATIONS`) and norm."""

    augmentation: str
    norm: str

    @property
    def dsbn(self) -> bool:
        return self.norm == "dsbn"


def resolve_method(method: str, norm: str = "batch") -> Method:
    """The augmentation and normalisation of ``method`` given the configured ``unet.norm``.

    Raises
    ------
    ValueError
        For a method not in :data:`METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"segmentation.method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "dsbn":
        return Method("none", "dsbn")
    return Method(method, norm)


def augmentation_kwargs(name: str, cfg: ExperimentConfig) -> dict[str, Any]:
    """Constructor options of augmentation ``name`` from the ``[augment]`` section."""
    a = cfg.augment
    if name in ("gin", "gin+ipa"):
        return {"n_layers": a.gin_layers, "interm_channels": a.gin_channels}
    if name == "randconv":
        return {"kernel_sizes": tuple(a.randconv_kernels)}
    if name == "fmaug":
        return {"band": a.fmaug_band}
    return {}


def make_augmentation(cfg: ExperimentConfig, rnd: int, site_index: int) -> RandomAugmentation:
    """The configured augmentation with a generator seeded by (seed, "augment", round, site)."""
    method = resolve_method(cfg.segmentation.method, cfg.unet.norm)
    gen = torch.Generator().manual_seed(derive_seed(cfg.experiment.seed, "augment", rnd, site_index))
    return build_augmentation(method.augmentation, prob=cfg.augment.prob, generator=gen,
                              **augmentation_kwargs(method.augmentation, cfg))
