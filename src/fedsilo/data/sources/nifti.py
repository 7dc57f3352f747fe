"""NIfTI reading and writing (nibabel) in fedsilo's internal orientation.

Orientation: every array is reoriented with :func:`nibabel.as_closest_canonical` (RAS+) and then
to the internal ``(D, H, W)`` radiological convention by :func:`canonical_to_internal`.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from fedsilo.data.errors import DataError

__all__ = ["NIFTI_SUFFIXES", "canonical_to_internal", "internal_to_nifti", "label_named", "nifti_stem",
           "read_nifti", "spacing_from_affine"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def _internal_index_map(shape: tuple[int, int, int]) -> np.ndarray:
    """``(4, 4)`` map from internal ``(d, h, w, 1)`` to canonical ``(i, j, k, 1)``.

    For an internal array of shape ``(D, H, W)``: ``i = W-1-w``, ``j = H-1-h``, ``k = d``.
    """
    d, h, w = shape
    return np.array(
        [[0, 0, -1, w - 1], [0, -1, 0, h - 1], [1, 0, 0, 0], [0, 0, 0, 1]],
        dtype=np.float64,
    )


def canonical_to_internal(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn a RAS+ canonical array ``(I, J, K)`` into the internal ``(D, H, W)`` layout.

    Parameters
    ----------
    data : np.ndarray
        ``(I, J, K)`` with i increasing toward the patient's right (R), j toward anterior (A),
        k toward superior (S), as :func:`nibabel.as_closest_canonical` returns it.
    affine : np.ndarray
        ``(4, 4)`` canonical voxel -> RAS+ mm.

    Returns
    -------
    tuple
        ``(array (D, H, W), affine (4, 4))`` where ``D = K`` (inferior -> superior),
        ``H = J`` flipped (anterior at row 0) and ``W = I`` flipped (patient right at col 0),
        and the affine maps internal ``(d, h, w, 1)`` to RAS+ mm.
    """
    out = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    return out, np.asarray(affine, dtype=np.float64) @ _internal_index_map(out.shape)


def internal_to_nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Inverse of :func:`canonical_to_internal`: a RAS+ NIfTI image from an internal array.

    Parameters
    ----------
    array : np.ndarray
        ``(D, H, W)`` internal array.
    affine : np.ndarray
        ``(4, 4)`` internal index -> RAS+ mm (``Volume.affine``).
    """
    data = np.ascontiguousarray(np.transpose(array[:, ::-1, ::-1], (2, 1, 0)))
    canon_affine = np.asarray(affine, dtype=np.float64) @ np.linalg.inv(_internal_index_map(array.shape))
    return nib.Nifti1Image(data, canon_affine)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """``(dz, dy, dx)`` of an internal affine: column norms of its ``(d, h, w)`` part, rounded to
    1e-6 mm (float32 headers otherwise give 7.699999809 for 7.7)."""
    norms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return round(float(norms[0]), 6), round(float(norms[1]), 6), round(float(norms[2]), 6)


def read_nifti(path: str | Path, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI file into the internal layout.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file; a trailing singleton 4th axis is dropped.
    kind : {"image", "label"}
        ``"image"`` returns ``float32``; ``"label"`` returns the values in the file's own dtype
        (both with scl_slope/scl_inter applied when the header sets them).

    Returns
    -------
    tuple
        ``(array (D, H, W), affine (4, 4) internal index -> RAS+ mm)``.

    Raises
    ------
    DataError
        Missing, truncated or corrupted file, or not 3D.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    try:
        img = nib.load(path)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise DataError(f"{path}: expected a 3D volume, got shape {img.shape}")
        canon = nib.as_closest_canonical(img)
        if kind == "image":
            data = np.asarray(canon.get_fdata(dtype=np.float32))
        else:
            data = np.asanyarray(canon.dataobj)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(
            f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); the file is truncated or corrupted"
        ) from exc
    return canonical_to_internal(data, canon.affine)


def nifti_stem(path: Path) -> str:
    """A NIfTI file's name without ``.nii.gz`` / ``.nii``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


#: File stems of label maps rather than scans (CHAOS ``label_<id>``, TotalSegmentator ``seg``, ``*_mask``).
_LABEL_STEM = re.compile(r"(^|[_.-])(labels?|seg|segmentation|masks?)([_.-]|$)", re.I)


def label_named(path: Path) -> bool:
    """Whether a NIfTI file is named like a label map (``label_1``, ``seg``, ``liver_mask``...)."""
    return bool(_LABEL_STEM.search(nifti_stem(Path(path))))
