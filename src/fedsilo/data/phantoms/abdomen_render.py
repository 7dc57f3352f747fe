"""Render an :class:`AbdomenAnatomy` as CT (Hounsfield units) or MRI (T1- or T2-weighted).

Both renderers colour the tissue map with a per-tissue table, draw per-patient offsets of every
tissue value, add fine tissue texture, blur for partial volume and add scanner noise:

* CT: unenhanced ("native") or portal-venous ("venous") values after the usual abdominal
  ranges (liver 55-65 HU native, ~110 HU venous; fat ~-100; bone 230-750), correlated Gaussian
  noise of 6-16 HU, float32 HU clipped to [-1024, 3071].
* MR: relative signal tables for a fat-suppressed T2 (like CHAOS T2-SPIR: bile, CSF and fluid
  brightest, spleen and kidney bright, liver dark-grey, fat and muscle dark) and an in-phase T1
  (fat brightest, pancreas and liver brighter than spleen and kidney, fluid dark). The organ
  ordering differs from CT on purpose: this is the cross-modality gap that GIN augmentation must
  bridge (Ouyang et al., IEEE TMI 2022). A smooth multiplicative bias field (coil sensitivity),
  a random gain and Rician noise (magnitude of a complex Gaussian, Gudbjartsson & Patz, MRM
  1995) follow; output float32 in arbitrary positive units.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from fedsilo.data.phantoms._geometry import axis_centres, smooth_field
from fedsilo.data.phantoms.abdomen_anatomy import AbdomenAnatomy, Tissue, check_seed

CT_PHASES: tuple[str, ...] = ("native", "venous")
MR_CONTRASTS: tuple[str, ...] = ("t2", "t1")

# Per tissue: (mean, per-patient standard deviation, texture amplitude), in HU.
_CT: dict[str, dict[Tissue, tuple[float, float, float]]] = {
    "native": {
        Tissue.AIR: (-1000, 0, 0), Tissue.LUNG: (-860, 30, 40), Tissue.FAT: (-100, 8, 12),
        Tissue.MUSCLE: (45, 5, 8), Tissue.BONE: (750, 100, 100), Tissue.MARROW: (230, 40, 40),
        Tissue.DISC: (85, 10, 8), Tissue.CSF: (8, 3, 3), Tissue.ARTERY: (42, 4, 3),
        Tissue.VEIN: (40, 4, 3), Tissue.WALL: (38, 6, 8), Tissue.CONTENT: (20, 15, 40),
        Tissue.FLUID: (8, 5, 4), Tissue.LIVER: (60, 5, 4), Tissue.KIDNEY: (33, 4, 4),
        Tissue.MEDULLA: (30, 4, 4), Tissue.SPLEEN: (48, 4, 4), Tissue.PANCREAS: (40, 6, 10),
        Tissue.BILE: (10, 5, 3),
    },
    "venous": {
        Tissue.AIR: (-1000, 0, 0), Tissue.LUNG: (-860, 30, 40), Tissue.FAT: (-100, 8, 12),
        Tissue.MUSCLE: (58, 6, 8), Tissue.BONE: (750, 100, 100), Tissue.MARROW: (240, 40, 40),
        Tissue.DISC: (90, 10, 8), Tissue.CSF: (8, 3, 3), Tissue.ARTERY: (170, 25, 5),
        Tissue.VEIN: (160, 20, 5), Tissue.WALL: (85, 10, 10), Tissue.CONTENT: (25, 15, 40),
        Tissue.FLUID: (10, 5, 4), Tissue.LIVER: (110, 12, 5), Tissue.KIDNEY: (185, 20, 8),
        Tissue.MEDULLA: (165, 20, 8), Tissue.SPLEEN: (118, 12, 5),
        Tissue.PANCREAS: (100, 12, 10), Tissue.BILE: (12, 5, 3),
    },
}

# Per tissue: (relative signal, texture amplitude as a fraction of the signal).
_MR: dict[str, dict[Tissue, tuple[float, float]]] = {
    "t2": {
        Tissue.AIR: (0.0, 0), Tissue.LUNG: (0.02, 0.3), Tissue.FAT: (0.12, 0.15),
        Tissue.MUSCLE: (0.2, 0.08), Tissue.BONE: (0.03, 0.2), Tissue.MARROW: (0.22, 0.15),
        Tissue.DISC: (0.55, 0.1), Tissue.CSF: (1.0, 0.03), Tissue.ARTERY: (0.08, 0.4),
        Tissue.VEIN: (0.6, 0.15), Tissue.WALL: (0.35, 0.1), Tissue.CONTENT: (0.45, 0.3),
        Tissue.FLUID: (0.95, 0.05), Tissue.LIVER: (0.38, 0.05), Tissue.KIDNEY: (0.78, 0.05),
        Tissue.MEDULLA: (0.88, 0.05), Tissue.SPLEEN: (0.75, 0.05), Tissue.PANCREAS: (0.5, 0.1),
        Tissue.BILE: (1.0, 0.03),
    },
    "t1": {
        Tissue.AIR: (0.0, 0), Tissue.LUNG: (0.02, 0.3), Tissue.FAT: (1.0, 0.05),
        Tissue.MUSCLE: (0.32, 0.06), Tissue.BONE: (0.03, 0.2), Tissue.MARROW: (0.75, 0.1),
        Tissue.DISC: (0.3, 0.1), Tissue.CSF: (0.1, 0.05), Tissue.ARTERY: (0.15, 0.3),
        Tissue.VEIN: (0.2, 0.2), Tissue.WALL: (0.38, 0.08), Tissue.CONTENT: (0.35, 0.3),
        Tissue.FLUID: (0.12, 0.05), Tissue.LIVER: (0.6, 0.04), Tissue.KIDNEY: (0.42, 0.05),
        Tissue.MEDULLA: (0.32, 0.05), Tissue.SPLEEN: (0.45, 0.05), Tissue.PANCREAS: (0.7, 0.06),
        Tissue.BILE: (0.15, 0.05),
    },
}

_N_TISSUES = len(Tissue)


def _table(rows: dict[Tissue, tuple[float, ...]], column: int) -> np.ndarray:
    out = np.zeros(_N_TISSUES, dtype=np.float32)
    for tissue, row in rows.items():
        out[int(tissue)] = row[column]
    return out


def _check_anatomy(anatomy: object) -> AbdomenAnatomy:
    if not isinstance(anatomy, AbdomenAnatomy):
        raise ValueError(f"anatomy must be an AbdomenAnatomy, got {type(anatomy).__name__}")
    return anatomy


def _texture(rng: np.random.Generator, anatomy: AbdomenAnatomy, corr_mm: float) -> np.ndarray:
    """Unit-variance smooth field ``(D, H, W)`` on the anatomy's grid."""
    d, h, w = anatomy.shape
    dz, dy, dx = anatomy.spacing
    coords = (axis_centres(d, dz), axis_centres(h, dy), axis_centres(w, dx))
    return smooth_field(rng, coords, (d * dz, h * dy, w * dx), corr_mm)


def _partial_volume(img: np.ndarray, anatomy: AbdomenAnatomy) -> np.ndarray:
    """Blur by a Gaussian of ~0.35 slice in z and ~1.1 mm (at least 0.4 pixel) in-plane."""
    sigma_xy = max(0.4, 1.1 / anatomy.spacing[1])
    return gaussian_filter(img, sigma=(0.35, sigma_xy, sigma_xy), mode="nearest")


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=(0, 0.6, 0.6))
    return noise * np.float32(sd / noise.std())


def _bias_field(rng: np.random.Generator, anatomy: AbdomenAnatomy) -> np.ndarray:
    """Smooth multiplicative MR bias field ``(D, H, W)``: exp of a random field with a 15-25 cm
    correlation scale and a 0.1-0.3 log-amplitude, a stand-in for receive-coil sensitivity."""
    amplitude = rng.uniform(0.1, 0.3)
    return np.exp(amplitude * _texture(rng, anatomy, rng.uniform(150.0, 250.0)))


def render_ct(anatomy: AbdomenAnatomy, seed: int, *, phase: str = "native") -> np.ndarray:
    """Render the anatomy as a CT volume in Hounsfield units.

    Parameters
    ----------
    anatomy : AbdomenAnatomy
        From :func:`generate_anatomy`.
    seed : int
        Non-negative seed of the rendering randomness (tissue offsets, texture, noise).
    phase : {"native", "venous"}
        Unenhanced, or portal-venous contrast (bright vessels, kidneys, liver and spleen).

    Returns
    -------
    numpy.ndarray
        float32 ``(D, H, W)`` in HU, clipped to [-1024, 3071].
    """
    anatomy = _check_anatomy(anatomy)
    seed = check_seed(seed)
    if phase not in CT_PHASES:
        raise ValueError(f"phase must be one of {CT_PHASES}, got {phase!r}")
    rng = np.random.default_rng(seed)
    rows = _CT[phase]
    mean = _table(rows, 0) + _table(rows, 1) * rng.standard_normal(_N_TISSUES).astype(np.float32)
    mean[int(Tissue.AIR)] = -1000.0
    texture = _texture(rng, anatomy, rng.uniform(4.0, 8.0))
    img = mean[anatomy.tissue] + _table(rows, 2)[anatomy.tissue] * texture
    img = _partial_volume(img, anatomy)
    img += _correlated_noise(rng, img.shape, rng.uniform(6.0, 16.0))
    return np.clip(img, -1024.0, 3071.0).astype(np.float32)


def render_mr(anatomy: AbdomenAnatomy, seed: int, contrast: str = "t2") -> np.ndarray:
    """Render the anatomy as a T2- or T1-weighted MR volume.

    Parameters
    ----------
    anatomy : AbdomenAnatomy
        From :func:`generate_anatomy`.
    seed : int
        Non-negative seed of the rendering randomness (tissue jitter, bias field, gain, noise).
    contrast : {"t2", "t1"}
        Fat-suppressed T2 (CHAOS T2-SPIR-like) or in-phase T1.

    Returns
    -------
    numpy.ndarray
        float32 ``(D, H, W)``, non-negative arbitrary units (gain 300-1200 per patient).
    """
    anatomy = _check_anatomy(anatomy)
    seed = check_seed(seed)
    if contrast not in MR_CONTRASTS:
        raise ValueError(f"contrast must be one of {MR_CONTRASTS}, got {contrast!r}")
    rng = np.random.default_rng(seed)
    rows = _MR[contrast]
    jitter = np.exp(0.08 * rng.standard_normal(_N_TISSUES)).astype(np.float32)
    signal = _table(rows, 0) * jitter
    texture = _texture(rng, anatomy, rng.uniform(4.0, 8.0))
    img = signal[anatomy.tissue] * (1.0 + _table(rows, 1)[anatomy.tissue] * texture)
    img = _partial_volume(np.maximum(img, 0.0), anatomy)
    bias = _bias_field(rng, anatomy)
    gain = rng.uniform(300.0, 1200.0)
    img *= bias * np.float32(gain)
    sigma = np.float32(rng.uniform(0.01, 0.035) * gain)
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)
