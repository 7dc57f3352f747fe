"""Small builders shared by the tests/test_abdomen_*.py files (tiny synthetic NIfTI data)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

#: A LAS affine like CHAOS' (x flipped), 2 x 2 x 5 mm.
LAS = np.array([[-2.0, 0, 0, 50.0], [0, 2.0, 0, -40.0], [0, 0, 5.0, 10.0], [0, 0, 0, 1]])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LAS) -> Path:
    """Save ``data`` (NIfTI voxel order (I, J, K)) with ``affine``."""
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def tiny_pair(folder: Path, pid: str = "1", shape: tuple[int, int, int] = (12, 10, 4), prefix: tuple[str, str] = ("image_", "label_")) -> tuple[Path, Path]:
    """A CHAOS-style image/label pair: a bright box labelled liver (1) and a smaller one spleen (4)."""
    rng = np.random.default_rng(int(pid) if pid.isdigit() else 0)
    image = rng.uniform(0, 100, size=shape).astype(np.float64)
    label = np.zeros(shape, dtype=np.float64)
    label[2:6, 2:6, 1:3] = 1
    label[8:10, 6:8, 1:3] = 4
    folder.mkdir(parents=True, exist_ok=True)
    img = write_nifti(folder / f"{prefix[0]}{pid}.nii.gz", image)
    lab = write_nifti(folder / f"{prefix[1]}{pid}.nii.gz", label)
    return img, lab
