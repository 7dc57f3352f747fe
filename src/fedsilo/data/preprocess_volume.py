"""CT/MR volume preprocessing: per-modality intensity normalisation, optional crop to the body,
and in-plane resampling to a square target size (MONAI transforms where they fit).

Order: intensity (on the native grid) -> crop to the body foreground -> pad to square ->
resize in-plane (images: area averaging when shrinking, bilinear when enlarging; labels
nearest). The slice axis ``D`` is never resampled, so slice indices keep pointing at the original slices (3D Dice needs them).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from monai.transforms import (
    ClipIntensityPercentiles,
    NormalizeIntensity,
    Resize,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
)
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_numpy
from scipy import ndimage

from fedsilo.data.sources.volume import Volume

__all__ = ["CTIntensity", "MRIntensity", "PreprocessSettings", "body_mask", "normalize_intensity", "preprocess_volume"]

logger = logging.getLogger(__name__)

OutputRange = Literal["unit", "symmetric"]
_RANGES: dict[str, tuple[float, float]] = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}


@dataclass(frozen=True)
class CTIntensity:
    """CT window (Hounsfield units) mapped linearly to the output range, values outside clipped.

    Defaults: the abdomen soft-tissue window W400/L40, i.e. [-160, 240] HU -> [0, 1].
    """

    level: float = 40.0
    width: float = 400.0
    output: OutputRange = "unit"

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"ct width must be > 0 HU, got {self.width}")
        if self.output not in _RANGES:
            raise ValueError(f"ct output must be one of {tuple(_RANGES)}, got {self.output!r}")


@dataclass(frozen=True)
class MRIntensity:
    """MR: clip to per-volume percentiles, then z-score or min-max.

    ``"minmax"`` maps [p_lower, p_upper] to the output range (the default, so MR lands in the same
    [0, 1] as windowed CT); ``"zscore"`` clips then standardises to mean 0, std 1 (unbounded;
    ``output`` is ignored).
    """

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    method: Literal["minmax", "zscore"] = "minmax"
    output: OutputRange = "unit"

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                "mr percentiles must satisfy 0 <= lower < upper <= 100, "
                f"got lower={self.lower_percentile}, upper={self.upper_percentile}"
            )
        if self.method not in ("minmax", "zscore"):
            raise ValueError(f"mr method must be 'minmax' or 'zscore', got {self.method!r}")
        if self.output not in _RANGES:
            raise ValueError(f"mr output must be one of {tuple(_RANGES)}, got {self.output!r}")


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes a preprocessed volume (and hence its cache key).

    Parameters
    ----------
    ct, mr : CTIntensity, MRIntensity
        Per-modality intensity settings.
    normalize : bool
        False leaves intensities alone (corpora already scaled, e.g. PNG slices in [0, 1]).
    size : int or None
        In-plane target: every slice becomes ``size x size`` (e.g. 96, 128, 192, 256). None keeps
        the native grid.
    keep_aspect : bool
        Pad to square (with the volume's minimum, labels with background) before resizing, so
        anatomy is not stretched.
    crop_foreground : bool
        Crop in-plane to the body (largest connected component of the thresholded image,
        projected over all slices) before padding/resizing; labelled voxels are always kept.
    foreground_threshold : float
        Body threshold on the normalised image rescaled to [0, 1] by its min/max.
    foreground_margin : int
        Pixels kept around the body box (native grid).
    """

    ct: CTIntensity = field(default_factory=CTIntensity)
    mr: MRIntensity = field(default_factory=MRIntensity)
    normalize: bool = True
    size: int | None = 128
    keep_aspect: bool = True
    crop_foreground: bool = False
    foreground_threshold: float = 0.05
    foreground_margin: int = 4

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 8):
            raise ValueError(f"size must be an int >= 8 or None, got {self.size!r}")
        if not 0.0 <= self.foreground_threshold < 1.0:
            raise ValueError(f"foreground_threshold must be in [0, 1), got {self.foreground_threshold}")
        if self.foreground_margin < 0:
            raise ValueError(f"foreground_margin must be >= 0, got {self.foreground_margin}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able), used in cache keys and run records."""
        return dataclasses.asdict(self)


def normalize_intensity(image: np.ndarray, modality: str, settings: PreprocessSettings) -> np.ndarray:
    """Per-modality intensity normalisation.

    Parameters
    ----------
    image : np.ndarray
        ``(D, H, W)`` raw intensities (CT in HU).
    modality : {"ct", "mr"}
    settings : PreprocessSettings

    Returns
    -------
    np.ndarray
        ``float32`` ``(D, H, W)``.
    """
    if not settings.normalize:
        return image.astype(np.float32, copy=True)
    if modality == "ct":
        ct = settings.ct
        b_min, b_max = _RANGES[ct.output]
        tf = ScaleIntensityRange(ct.level - ct.width / 2, ct.level + ct.width / 2, b_min, b_max, clip=True)
        out = tf(image)
    elif modality == "mr":
        mr = settings.mr
        if mr.method == "minmax":
            b_min, b_max = _RANGES[mr.output]
            lo, hi = mr.lower_percentile, mr.upper_percentile
            out = ScaleIntensityRangePercentiles(lo, hi, b_min, b_max, clip=True)(image)
        else:
            clipped = ClipIntensityPercentiles(mr.lower_percentile, mr.upper_percentile)(image)
            out = NormalizeIntensity()(clipped)
    else:
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    return np.asarray(convert_to_numpy(out), dtype=np.float32)


def body_mask(image: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """In-plane body mask: the largest connected component of ``image > threshold`` (after a
    min-max rescale to [0, 1]) projected over all slices.

    Parameters
    ----------
    image : np.ndarray
        ``(D, H, W)`` normalised image.

    Returns
    -------
    np.ndarray
        ``bool`` ``(H, W)``.
    """
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.ones(image.shape[1:], dtype=bool)
    projected = ((image - lo) / (hi - lo) > threshold).any(axis=0)
    components, n = ndimage.label(projected)
    if n <= 1:
        return projected
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def _shift_affine(
    affine: np.ndarray | None, offset_h: float, offset_w: float, scale_h: float, scale_w: float
) -> np.ndarray | None:
    """Compose ``affine`` with new-index -> old-index: ``old = offset + (new + 0.5) * scale - 0.5``."""
    if affine is None:
        return None
    index_map = np.eye(4)
    index_map[1, 1], index_map[1, 3] = scale_h, offset_h + 0.5 * scale_h - 0.5
    index_map[2, 2], index_map[2, 3] = scale_w, offset_w + 0.5 * scale_w - 0.5
    return np.asarray(affine) @ index_map


def preprocess_volume(volume: Volume, settings: PreprocessSettings) -> Volume:
    """Normalise, crop and resize a volume (see the module docstring for the order).

    Parameters
    ----------
    volume : Volume
        ``(D, H, W)`` raw volume.
    settings : PreprocessSettings

    Returns
    -------
    Volume
        ``(D, size, size)`` (or native ``H, W``), image ``float32``, labels ``uint8`` with the same
        ids, spacing ``(dz, dy', dx')`` and affine updated to the new grid.
    """
    image = normalize_intensity(volume.image, volume.modality, settings)
    labels = volume.labels
    affine = volume.affine
    _, dy, dx = volume.spacing
    if settings.crop_foreground:
        mask = body_mask(image, settings.foreground_threshold)
        if labels is not None:
            mask |= (labels > 0).any(axis=0)
        start, end = generate_spatial_bounding_box(mask[None], margin=settings.foreground_margin, allow_smaller=True)
        if end[0] > start[0] and end[1] > start[1]:
            image = image[:, start[0] : end[0], start[1] : end[1]]
            labels = None if labels is None else labels[:, start[0] : end[0], start[1] : end[1]]
            affine = _shift_affine(affine, start[0], start[1], 1.0, 1.0)
    if settings.keep_aspect and settings.size is not None and image.shape[1] != image.shape[2]:
        h, w = image.shape[1:]
        side = max(h, w)
        ph, pw = (side - h) // 2, (side - w) // 2
        pad = ((0, 0), (ph, side - h - ph), (pw, side - w - pw))
        image = np.pad(image, pad, constant_values=float(image.min()))
        labels = None if labels is None else np.pad(labels, pad, constant_values=0)
        affine = _shift_affine(affine, -ph, -pw, 1.0, 1.0)
    if settings.size is not None and image.shape[1:] != (settings.size, settings.size):
        h, w = image.shape[1:]
        size = (settings.size, settings.size)
        # Downsampling: "area" (mean over each output pixel's footprint) is the anti-aliasing;
        # MONAI's anti_aliasing option blurs with zero padding, which darkens the borders.
        mode = "area" if max(h, w) > settings.size else "bilinear"
        image = np.asarray(convert_to_numpy(Resize(size, mode=mode)(image)), dtype=np.float32)
        if labels is not None:
            nearest = Resize(size, mode="nearest-exact")(labels.astype(np.float32))
            labels = np.asarray(convert_to_numpy(nearest), dtype=np.uint8)
        sh, sw = h / settings.size, w / settings.size
        affine = _shift_affine(affine, 0.0, 0.0, sh, sw)
        dy, dx = dy * sh, dx * sw
    return dataclasses.replace(
        volume,
        image=np.ascontiguousarray(image, dtype=np.float32),
        labels=None if labels is None else np.ascontiguousarray(labels),
        spacing=(volume.spacing[0], dy, dx),
        affine=affine,
    )
