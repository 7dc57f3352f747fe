"""The :class:`Volume` record every abdominal source yields, and the source protocol.

Internal convention (shared by every source, the phantoms and the models)
------------------------------------------------------------------------
A volume is a numpy array ``(D, H, W)`` = (slices, rows, cols) with spacing ``(dz, dy, dx)``
in mm, and axial slices in *radiological display*:

- ``D`` runs from the patient's feet to head (inferior -> superior),
- ``H`` (rows) runs from anterior (row 0, top of the image) to posterior,
- ``W`` (cols) runs from the patient's right (col 0, image left) to the patient's left,

so the liver appears on the left of a displayed slice, anterior up. Readers get there by
reorienting to RAS+ (nibabel :func:`~nibabel.funcs.as_closest_canonical`, axes i->R, j->A,
k->S) and then taking ``data.transpose(2, 1, 0)[:, ::-1, ::-1]``; see
:func:`fedsilo.data.sources.nifti.canonical_to_internal`. ``Volume.affine`` maps internal voxel
indices ``(d, h, w, 1)`` to RAS+ millimetres, so a prediction can be written back in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.labels import IGNORE_INDEX, NUM_CLASSES, LabelMapping

__all__ = ["MODALITIES", "CaseRef", "Modality", "Volume", "VolumeSource", "check_modality"]

Modality = Literal["ct", "mr"]
MODALITIES: tuple[str, ...] = ("ct", "mr")


def check_modality(modality: str, where: str = "modality") -> Modality:
    """Normalise ``"CT"``/``"ct"``/``"MR"``/``"MRI"`` to ``"ct"`` or ``"mr"``."""
    value = str(modality).strip().lower()
    value = "mr" if value == "mri" else value
    if value not in MODALITIES:
        raise ValueError(f"{where} must be one of {MODALITIES} (or 'MRI'), got {modality!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3D scan in the internal convention (see the module docstring).

    Parameters
    ----------
    image : np.ndarray
        ``float32`` ``(D, H, W)``; CT in Hounsfield units, MR in scanner units (until
        preprocessing).
    labels : np.ndarray or None
        ``uint8`` ``(D, H, W)`` organ ids (:mod:`fedsilo.data.labels`, 255 = ignore), or None for
        an unlabelled volume.
    spacing : tuple of float
        ``(dz, dy, dx)`` in mm.
    patient_id : str
        Patient identifier; splits are made on it.
    modality : {"ct", "mr"}
    site : str or None
        Hospital / silo the volume belongs to.
    source : tuple of Path
        Files (or DICOM folders) it was read from.
    annotated : frozenset of int
        Organ ids its labels annotate (empty when unlabelled); the others are unannotated.
    case_id : str
        Identifier of this scan (defaults to ``patient_id``; differs when a patient has several).
    affine : np.ndarray or None
        ``(4, 4)`` map from internal indices ``(d, h, w, 1)`` to RAS+ mm, when known.
    """

    image: np.ndarray
    labels: np.ndarray | None
    spacing: tuple[float, float, float]
    patient_id: str
    modality: Modality
    site: str | None = None
    source: tuple[Path, ...] = ()
    annotated: frozenset[int] = frozenset()
    case_id: str = ""
    affine: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = ", ".join(str(p) for p in self.source) or f"patient {self.patient_id}"
        image = self.image
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(f"image must be a 3D array (D, H, W), got shape {getattr(image, 'shape', None)}")
        if image.dtype != np.float32:
            raise ValueError(f"image must be float32, got {image.dtype}")
        if min(image.shape) < 1:
            raise DataError(f"{where}: image is empty, shape {image.shape}")
        n_bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if n_bad:
            raise DataError(f"{where}: image holds {n_bad} NaN/inf voxels")
        if self.labels is not None:
            if self.labels.shape != image.shape:
                raise DataError(f"{where}: labels shape {self.labels.shape} != image shape {image.shape}")
            if self.labels.dtype != np.uint8:
                raise ValueError(f"labels must be uint8, got {self.labels.dtype}")
        elif self.annotated:
            raise ValueError(f"annotated must be empty for an unlabelled volume, got {sorted(self.annotated)}")
        if not all(0 < int(a) < NUM_CLASSES for a in self.annotated):
            raise ValueError(f"annotated organ ids must be in 1..{NUM_CLASSES - 1}, got {sorted(self.annotated)}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise DataError(f"{where}: spacing must be three positive finite mm values, got {self.spacing}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "modality", check_modality(self.modality))
        object.__setattr__(self, "annotated", frozenset(int(a) for a in self.annotated))
        object.__setattr__(self, "source", tuple(Path(p) for p in self.source))
        if not self.case_id:
            object.__setattr__(self, "case_id", str(self.patient_id))
        if self.affine is not None and np.asarray(self.affine).shape != (4, 4):
            raise ValueError(f"affine must be (4, 4), got {np.asarray(self.affine).shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        return self.image.shape  # type: ignore[return-value]

    @property
    def labelled(self) -> bool:
        """Whether the volume has a label map."""
        return self.labels is not None

    def organ_voxels(self) -> dict[int, int]:
        """Voxel count per organ id present in the labels (background and ignore excluded)."""
        if self.labels is None:
            return {}
        counts = np.bincount(self.labels.ravel(), minlength=256)
        return {i: int(counts[i]) for i in range(1, NUM_CLASSES) if counts[i] and i != IGNORE_INDEX}


@dataclass(frozen=True)
class CaseRef:
    """Where one case lives, before anything is decoded (cheap to list and to fingerprint).

    Parameters
    ----------
    patient_id : str
    modality : {"ct", "mr"} or None
        None lets the reader take it from the file (DICOM ``Modality``).
    image : Path
        A NIfTI file or a DICOM series folder.
    label : Path or None
        A NIfTI label map on the same grid, or None.
    mapping : LabelMapping or None
        Table from the label file's values to the organ vocabulary (required with ``label``).
    site : str or None
    case_id : str
        Defaults to ``patient_id``.
    """

    patient_id: str
    modality: Modality | None
    image: Path
    label: Path | None = None
    mapping: LabelMapping | None = None
    site: str | None = None
    case_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))
            if self.mapping is None:
                raise ValueError(f"mapping is required with a label file ({self.label}), got None")
        if self.modality is not None:
            object.__setattr__(self, "modality", check_modality(self.modality))
        if not self.case_id:
            object.__setattr__(self, "case_id", str(self.patient_id))

    def files(self) -> list[Path]:
        """Every file the case reads (a DICOM folder's files, sorted), for cache fingerprints."""
        paths = sorted(p for p in self.image.rglob("*") if p.is_file()) if self.image.is_dir() else [self.image]
        return paths + ([self.label] if self.label is not None else [])


@runtime_checkable
class VolumeSource(Protocol):
    """Anything that lists cases cheaply and decodes them on demand into :class:`Volume`."""

    name: str

    def cases(self) -> Sequence[CaseRef]:
        """The cases, in a stable order, without decoding anything."""
        ...

    def load(self, case: CaseRef) -> Volume:
        """Decode one case."""
        ...

    def __iter__(self) -> Iterator[Volume]: ...

    def __len__(self) -> int: ...
