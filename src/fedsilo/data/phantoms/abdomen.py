"""Built-in abdomen phantom: synthetic CT and MRI patients with organ label maps.

A stand-in for abdominal segmentation data (CHAOS, AMOS, TotalSegmentator) that needs no
download: every patient has the organs of :mod:`fedsilo.data.labels` (liver, both kidneys,
spleen, pancreas, gallbladder, stomach) with realistic relative sizes and positions, rendered as
CT or as T1/T2 MRI with modality-specific organ contrast, so that a federation of CT-only and
MRI-only sites shows the cross-modality gap studied by FedGIN (Dudda Nagaraju et al.).

Example
-------
>>> ct = phantom_patient(0, modality="ct", seed=1)
>>> mr = phantom_patient(0, modality="mr", seed=1)   # a different (unpaired) patient
>>> anatomy = generate_anatomy(7)                      # paired: one anatomy, two renderings
>>> ct_img, t2_img = render_ct(anatomy, 0), render_mr(anatomy, 0, contrast="t2")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.data.phantoms.abdomen_anatomy import (
    DEFAULT_SHAPE,
    AbdomenAnatomy,
    Tissue,
    check_seed,
    check_shape,
)
from fedsilo.data.phantoms.abdomen_organs import generate_anatomy
from fedsilo.data.phantoms.abdomen_render import CT_PHASES, MR_CONTRASTS, render_ct, render_mr

__all__ = [
    "AbdomenAnatomy",
    "CT_PHASES",
    "MODALITIES",
    "MR_CONTRASTS",
    "PhantomVolume",
    "Tissue",
    "generate_anatomy",
    "phantom_patient",
    "render_ct",
    "render_mr",
]

MODALITIES: tuple[str, ...] = ("ct", "mr")
_MODALITY_KEY = {"ct": 0, "mr": 1}


@dataclass(frozen=True)
class PhantomVolume:
    """One rendered phantom patient.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(D, H, W)``: HU for CT, arbitrary positive units for MR.
    labels : numpy.ndarray
        uint8 ``(D, H, W)`` organ ids of :mod:`fedsilo.data.labels`.
    spacing : tuple of 3 float
        ``(dz, dy, dx)`` in mm.
    patient_id : str
        e.g. ``"phantom-ct-0007"``.
    modality : str
        ``"ct"`` or ``"mr"``.
    contrast : str
        CT phase (``"native"``, ``"venous"``) or MR weighting (``"t2"``, ``"t1"``).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    patient_id: str
    modality: str
    contrast: str


def phantom_patient(
    index: int,
    *,
    modality: str,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    contrast: str | None = None,
) -> PhantomVolume:
    """Patient ``index`` of a phantom CT or MR cohort.

    Patient ``i`` depends only on ``(seed, modality, i)``, never on the cohort size, and CT and
    MR patients with the same index are different people (unpaired sites); use
    :func:`generate_anatomy` with :func:`render_ct` and :func:`render_mr` for paired data.

    Parameters
    ----------
    index : int
        Non-negative patient index within the cohort.
    modality : {"ct", "mr"}
    seed : int
        Non-negative cohort seed.
    shape : tuple of 3 int
        ``(D, H, W)``, see :func:`generate_anatomy`.
    contrast : str, optional
        CT phase in :data:`CT_PHASES` (default ``"native"``) or MR weighting in
        :data:`MR_CONTRASTS` (default ``"t2"``).

    Returns
    -------
    PhantomVolume
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    seed = check_seed(seed)
    shape = check_shape(shape)
    allowed = CT_PHASES if modality == "ct" else MR_CONTRASTS
    contrast = allowed[0] if contrast is None else contrast
    if contrast not in allowed:
        raise ValueError(f"contrast for modality {modality!r} must be one of {allowed}, "
                         f"got {contrast!r}")
    sequence = np.random.SeedSequence(seed, spawn_key=(_MODALITY_KEY[modality], int(index)))
    anatomy_seed, render_seed = (int(s) for s in sequence.generate_state(2))
    anatomy = generate_anatomy(anatomy_seed, shape)
    if modality == "ct":
        image = render_ct(anatomy, render_seed, phase=contrast)
    else:
        image = render_mr(anatomy, render_seed, contrast=contrast)
    return PhantomVolume(image=image, labels=anatomy.labels, spacing=anatomy.spacing,
                         patient_id=f"phantom-{modality}-{int(index):04d}", modality=modality,
                         contrast=contrast)
