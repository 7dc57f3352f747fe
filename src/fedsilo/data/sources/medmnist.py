"""MedMNIST ``.npz`` files (Yang et al., "MedMNIST v2", Scientific Data 2023).

A MedMNIST file holds ``<split>_images`` and ``<split>_labels`` for any subset of the splits
``train``, ``val`` and ``test`` (RetinaMNIST in ``../shared/data`` has train and val only).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.images import ImageArrays

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def medmnist_splits(path: str | Path) -> list[str]:
    """Splits present in a MedMNIST file (those with both images and labels)."""
    keys = _keys(Path(path))
    return [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]


def _keys(path: Path) -> set[str]:
    if not path.is_file():
        raise DataError(f"{path}: MedMNIST file does not exist")
    if not zipfile.is_zipfile(path):  # else numpy takes it for a pickle and suggests allow_pickle
        raise DataError(f"{path}: not a readable .npz file: not a valid .npz archive (a zip of .npy "
                        f"arrays); it is truncated, corrupt or another format")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return set(npz.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def load_medmnist(path: str | Path, split: str, *, num_classes: int | None = None) -> ImageArrays:
    """Load one split of a MedMNIST file.

    Parameters
    ----------
    path
        The ``.npz`` file.
    split
        ``train``, ``val`` or ``test``; must be present in the file.
    num_classes
        When given, every label must be in ``0 .. num_classes - 1``.

    Returns
    -------
    ImageArrays
        uint8 images (N, H, W, C) and int64 labels (N,).

    Raises
    ------
    DataError
        Missing or unreadable file, missing keys, count mismatch, bad dtype, labels out of range.
    """
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"{path}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    keys = _keys(path)
    img_key, lab_key = f"{split}_images", f"{split}_labels"
    missing = [k for k in (img_key, lab_key) if k not in keys]
    if missing:
        present = medmnist_splits(path)
        raise DataError(
            f"{path}: missing key(s) {', '.join(missing)}; splits present: {', '.join(present) or 'none'} "
            f"(keys: {', '.join(sorted(keys))})"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz[img_key], npz[lab_key]
    except ValueError as exc:  # object arrays (pickles) are never loaded: they can run code
        raise DataError(f"{path}: {img_key}/{lab_key} must be plain numeric arrays, not Python objects "
                        f"({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {img_key} must be uint8 images, got dtype {images.dtype}")
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(f"{path}: {lab_key} must hold one label per image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {lab_key} must be integers, got dtype {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{path}: {img_key} has {len(images)} images but {lab_key} has {len(labels)} labels")
    arrays = ImageArrays(images, labels.reshape(-1), origin=f"{path}[{split}]")
    if num_classes is not None:
        arrays.check_labels(num_classes)
    logger.info("Loaded %s split of %s: %d images %s", split, path.name, len(arrays), images.shape[1:])
    return arrays
