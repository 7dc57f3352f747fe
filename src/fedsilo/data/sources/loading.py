"""Decoding a :class:`CaseRef` into a :class:`Volume`, with the image/label consistency checks,
and :class:`CaseListSource`, the concrete :class:`VolumeSource` every layout builds."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from fedsilo.data.errors import DataError
from fedsilo.data.sources.dicom import read_dicom_series
from fedsilo.data.sources.nifti import read_nifti, spacing_from_affine
from fedsilo.data.sources.volume import CaseRef, Volume

__all__ = ["CaseListSource", "load_case"]

logger = logging.getLogger(__name__)

#: Relative tolerance on spacing, and absolute tolerance (mm) on the affine, between an image and
#: its label map. Loose enough for float32 headers, tight enough to catch a resampled label map.
SPACING_RTOL: float = 1e-3
AFFINE_ATOL_MM: float = 1e-2


def _read_image(case: CaseRef) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    if case.image.is_dir():
        series = read_dicom_series(case.image)
        return series.image, series.affine, {"modality": series.modality or "", "patient_id": series.patient_id}
    array, affine = read_nifti(case.image, "image")
    return array, affine, {}


def load_case(case: CaseRef, allow_empty_labels: bool = False) -> Volume:
    """Decode one case into a :class:`Volume`.

    Parameters
    ----------
    case : CaseRef
    allow_empty_labels : bool
        Accept a label map with no labelled voxel. Off by default: an all-zero map is almost
        always a wrong or broken file, and training on it would teach "no organ here".

    Returns
    -------
    Volume

    Raises
    ------
    DataError
        Unreadable files, NaN/inf voxels, image/label shape, spacing or affine mismatch, an
        empty label map, or label values outside the mapping; the message names the file(s).
    """
    image, affine, meta = _read_image(case)
    modality = case.modality or meta.get("modality") or None
    if modality is None:
        raise DataError(f"{case.image}: modality unknown (no DICOM Modality tag); give it in the source")
    labels, annotated = None, frozenset[int]()
    if case.label is not None:
        raw, label_affine = read_nifti(case.label, "label")
        if raw.shape != image.shape:
            raise DataError(
                f"image/label shape mismatch: {case.image} is {image.shape}, {case.label} is {raw.shape} "
                "(after reorientation to (D, H, W))"
            )
        sp_img, sp_lab = spacing_from_affine(affine), spacing_from_affine(label_affine)
        if not np.allclose(sp_img, sp_lab, rtol=SPACING_RTOL, atol=0.0):
            raise DataError(
                f"image/label spacing mismatch: {case.image} has (dz, dy, dx) = {np.round(sp_img, 4).tolist()} mm, "
                f"{case.label} has {np.round(sp_lab, 4).tolist()} mm"
            )
        if not np.allclose(affine, label_affine, atol=AFFINE_ATOL_MM, rtol=0.0):
            raise DataError(
                f"image/label geometry mismatch: {case.image} and {case.label} have the same spacing but "
                f"different origin or orientation (affines {np.round(affine, 3).tolist()} vs "
                f"{np.round(label_affine, 3).tolist()})"
            )
        if not allow_empty_labels and not np.any(raw):
            raise DataError(f"{case.label}: empty label map (every voxel is 0); pass allow_empty_labels=True if intended")
        assert case.mapping is not None  # CaseRef enforces it
        labels = case.mapping.remap(raw, source=case.label)
        annotated = case.mapping.annotated
    sources = (case.image,) + ((case.label,) if case.label is not None else ())
    return Volume(
        image=np.ascontiguousarray(image, dtype=np.float32),
        labels=labels,
        spacing=spacing_from_affine(affine),
        patient_id=case.patient_id,
        modality=modality,  # type: ignore[arg-type]
        site=case.site,
        source=sources,
        annotated=annotated,
        case_id=case.case_id,
        affine=affine,
    )


class CaseListSource:
    """A :class:`~fedsilo.data.sources.volume.VolumeSource` over a fixed list of cases.

    Parameters
    ----------
    cases : sequence of CaseRef
    name : str
        Shown in logs and inspection tables.
    allow_empty_labels : bool
        Passed to :func:`load_case`.
    """

    def __init__(self, cases: Sequence[CaseRef], name: str = "cases", allow_empty_labels: bool = False) -> None:
        duplicates = sorted(i for i, n in Counter(c.case_id for c in cases).items() if n > 1)
        if duplicates:
            raise ValueError(f"case ids must be unique within a source, got duplicates {duplicates}")
        self._cases = list(cases)
        self.name = name
        self.allow_empty_labels = allow_empty_labels

    def cases(self) -> Sequence[CaseRef]:
        """The cases, in order, without decoding."""
        return list(self._cases)

    def load(self, case: CaseRef) -> Volume:
        """Decode one case (see :func:`load_case`)."""
        logger.debug("loading %s (%s)", case.case_id, case.image)
        return load_case(case, allow_empty_labels=self.allow_empty_labels)

    def __iter__(self) -> Iterator[Volume]:
        for case in self._cases:
            yield self.load(case)

    def __len__(self) -> int:
        return len(self._cases)

    def __repr__(self) -> str:
        return f"CaseListSource(name={self.name!r}, cases={len(self._cases)})"
