"""Random intensity augmentations for cross-modality segmentation, and their registry.

Every augmentation is a :class:`torch.nn.Module` mapping a float batch ``(B, C, H, W)`` to the
same shape, dtype and device, with its own :class:`torch.Generator` and a per-sample
application probability ``prob``. :class:`~fedsilo.augment.ipa.IPA` returns two views
(``n_views == 2``); all others return one tensor.

Registered names (see :func:`build_augmentation`):

- ``none``: :class:`NoAugmentation` (baseline);
- ``gin``: :class:`~fedsilo.augment.gin.GIN` (Ouyang et al., IEEE TMI 2022);
- ``gin+ipa``: :class:`~fedsilo.augment.ipa.IPA` (Ouyang et al., IEEE TMI 2022);
- ``randconv``: :class:`~fedsilo.augment.randconv.RandConv` (Xu et al., ICLR 2021);
- ``prorandconv``: :class:`~fedsilo.augment.prorandconv.ProRandConv` (Choi et al., CVPR 2023);
- ``fmaug``: :class:`~fedsilo.augment.fourier.AmplitudeMix` (FedDG, Liu et al., CVPR 2021);
- ``raffesdg``: :class:`~fedsilo.augment.fourier.RandomFrequencyFilter` (Li et al., arXiv 2405.01228).
"""

from __future__ import annotations

import difflib
from typing import Any

from fedsilo.augment._base import DEFAULT_SEED, NoAugmentation, RandomAugmentation, make_generator
from fedsilo.augment.fourier import AmplitudeMix, RandomFrequencyFilter
from fedsilo.augment.gin import GIN
from fedsilo.augment.ipa import IPA, consistency_loss, smooth_random_mask
from fedsilo.augment.prorandconv import ProRandConv
from fedsilo.augment.randconv import RandConv

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_SEED",
    "AmplitudeMix",
    "GIN",
    "IPA",
    "NoAugmentation",
    "ProRandConv",
    "RandConv",
    "RandomAugmentation",
    "RandomFrequencyFilter",
    "build_augmentation",
    "consistency_loss",
    "make_generator",
    "smooth_random_mask",
]

#: Registry: name -> augmentation class.
AUGMENTATIONS: dict[str, type[RandomAugmentation]] = {
    "none": NoAugmentation,
    "gin": GIN,
    "gin+ipa": IPA,
    "randconv": RandConv,
    "prorandconv": ProRandConv,
    "fmaug": AmplitudeMix,
    "raffesdg": RandomFrequencyFilter,
}


def build_augmentation(name: str, **kwargs: Any) -> RandomAugmentation:
    """Build a registered augmentation by name.

    Parameters
    ----------
    name
        One of ``none, gin, gin+ipa, randconv, prorandconv, fmaug, raffesdg`` (case-insensitive).
    **kwargs
        Passed to the class (e.g. ``prob=0.5, generator=seed``); every class accepts ``prob`` and
        ``generator``.

    Returns
    -------
    RandomAugmentation
        The module; check ``module.n_views`` (2 for ``gin+ipa``) to know what ``forward`` returns.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the allowed names and the closest match).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in AUGMENTATIONS:
        allowed = ", ".join(AUGMENTATIONS)
        close = difflib.get_close_matches(str(key), list(AUGMENTATIONS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"augmentation name must be one of {allowed}, got {name!r}{hint}")
    return AUGMENTATIONS[key](**kwargs)
