"""Reading DICOM series folders (pydicom): one folder = one series -> an image and its geometry.

Slices are ordered by ``ImagePositionPatient`` projected on the slice normal
(``row direction x column direction`` of ``ImageOrientationPatient``), the modality LUT
(``RescaleSlope`` / ``RescaleIntercept``) is applied (CT comes out in Hounsfield units), the
in-plane spacing comes from ``PixelSpacing`` and the slice spacing from the position
differences. The geometry is turned into a RAS+ affine and reoriented exactly as NIfTI files are
(:func:`fedsilo.data.sources.nifti.canonical_to_internal`), so both readers agree voxel for voxel.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from fedsilo.data.errors import DataError
from fedsilo.data.sources.nifti import canonical_to_internal
from fedsilo.data.sources.volume import Modality, check_modality

__all__ = ["DicomSeries", "find_series_folders", "read_dicom_series"]

logger = logging.getLogger(__name__)

#: Relative tolerance on slice-position steps before a series counts as having a gap.
GAP_RTOL: float = 0.1
#: Tolerance on ImageOrientationPatient direction cosines across slices.
ORIENTATION_ATOL: float = 1e-4

#: Transfer syntax UID prefix -> pip packages that decode it.
_DECODERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
      "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
     "pylibjpeg + pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg) or python-gdcm"),
    (("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
      "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
     "pylibjpeg + pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg) or python-gdcm"),
    (("1.2.840.10008.1.2.5",), "pylibjpeg-rle (pip install pylibjpeg pylibjpeg-rle) or python-gdcm"),
)


def decoder_hint(transfer_syntax: str) -> str:
    """Which package(s) decode a transfer syntax, for error messages."""
    for uids, packages in _DECODERS:
        if transfer_syntax in uids:
            return packages
    return "pylibjpeg with its plugins or python-gdcm"


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A decoded series.

    Attributes
    ----------
    image : np.ndarray
        ``float32`` ``(D, H, W)`` in the internal convention, modality LUT applied.
    affine : np.ndarray
        ``(4, 4)`` internal index -> RAS+ mm.
    files : tuple of Path
        Slice files in slice order (inferior -> superior for an axial series).
    patient_id, modality, series_uid : str
    """

    image: np.ndarray
    affine: np.ndarray
    files: tuple[Path, ...]
    patient_id: str
    modality: Modality | None
    series_uid: str


def _read_headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError) as exc:
            logger.debug("skipping non-DICOM file %s (%s)", path, exc)
            continue
        if "Rows" not in ds or "ImagePositionPatient" not in ds:
            logger.debug("skipping %s: not an image slice with geometry", path)
            continue
        found.append((path, ds))
    return found


def _check_consistent(folder: Path, headers: Sequence[tuple[Path, pydicom.Dataset]]) -> None:
    uids = Counter(str(ds.get("SeriesInstanceUID", "")) for _, ds in headers)
    if len(uids) > 1:
        examples = {}
        for path, ds in headers:
            examples.setdefault(str(ds.get("SeriesInstanceUID", "")), path.name)
        raise DataError(
            f"{folder}: mixed DICOM series, {len(uids)} SeriesInstanceUIDs "
            f"({', '.join(f'{u} x{n} e.g. {examples[u]}' for u, n in uids.items())}); put one series per folder"
        )
    first_path, first = headers[0]
    iop0 = np.asarray(first.ImageOrientationPatient, dtype=float)
    size0 = (int(first.Rows), int(first.Columns))
    ps0 = np.asarray(first.get("PixelSpacing", [1.0, 1.0]), dtype=float)
    for path, ds in headers[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop0, atol=ORIENTATION_ATOL):
            raise DataError(f"{path}: ImageOrientationPatient differs from {first_path.name} in the same series {folder}")
        if (int(ds.Rows), int(ds.Columns)) != size0:
            raise DataError(f"{path}: size {(int(ds.Rows), int(ds.Columns))} differs from {first_path.name} {size0} in {folder}")
        if not np.allclose(np.asarray(ds.get("PixelSpacing", [1.0, 1.0]), dtype=float), ps0, rtol=1e-4):
            raise DataError(f"{path}: PixelSpacing differs from {first_path.name} in {folder}")


def _pixels(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError by plugin
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "unknown"))
        name = getattr(getattr(ds.file_meta, "TransferSyntaxUID", None), "name", syntax)
        raise DataError(
            f"{path}: cannot decode pixel data (transfer syntax {name} {syntax}): {' '.join(str(exc).split())}. "
            f"Install a decoder: {decoder_hint(syntax)}"
        ) from exc
    if raw.ndim != 2:
        raise DataError(f"{path}: expected one 2D frame per file, got pixel array shape {raw.shape}")
    return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)


def read_dicom_series(folder: str | Path) -> DicomSeries:
    """Read one DICOM series folder.

    Parameters
    ----------
    folder : str or Path
        Folder whose files are the slices of one series (non-DICOM files are skipped).

    Returns
    -------
    DicomSeries

    Raises
    ------
    DataError
        No slices, several series, inconsistent orientation/size/pixel spacing, duplicate
        positions, a missing slice (non-uniform position steps), or undecodable pixel data (the
        message names the package to install).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found")
    headers = _read_headers(folder)
    if not headers:
        raise DataError(f"{folder}: no DICOM image slices with ImagePositionPatient")
    _check_consistent(folder, headers)
    iop = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for _, ds in headers])
    order = np.argsort(positions @ normal, kind="stable")
    headers = [headers[i] for i in order]
    positions = positions[order]
    along = positions @ normal
    steps = np.diff(along)
    if len(steps):
        if np.any(steps < 1e-3):
            i = int(np.argmin(steps))
            raise DataError(
                f"{folder}: duplicate slice position {along[i]:.3f} mm in {headers[i][0].name} and {headers[i + 1][0].name}"
            )
        step = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - step) > GAP_RTOL * step)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{folder}: missing slice(s) or non-uniform spacing: step {steps[i]:.3f} mm between "
                f"{headers[i][0].name} and {headers[i + 1][0].name}, the series' usual step is {step:.3f} mm"
            )
        slice_vec = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        ds0 = headers[0][1]
        thickness = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
        slice_vec = normal * thickness
    dy, dx = (float(v) for v in headers[0][1].get("PixelSpacing", [1.0, 1.0]))
    stack = np.stack([_pixels(path) for path, _ in headers])  # (n, rows, cols)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx  # i: column index
    lps[:3, 1] = col_dir * dy  # j: row index
    lps[:3, 2] = slice_vec  # k: slice index
    lps[:3, 3] = positions[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.transpose(stack, (2, 1, 0)), ras))
    image, affine = canonical_to_internal(np.asarray(canon.dataobj, dtype=np.float32), canon.affine)
    ds0 = headers[0][1]
    modality_tag = str(ds0.get("Modality", "")).lower()
    modality = check_modality(modality_tag) if modality_tag in ("ct", "mr") else None
    patient_id = str(ds0.get("PatientID", "") or folder.name)
    files = tuple(p for p, _ in headers)
    return DicomSeries(image, affine, files, patient_id, modality, str(ds0.get("SeriesInstanceUID", "")))


def find_series_folders(root: str | Path) -> list[Path]:
    """Folders under ``root`` (itself included) that directly hold at least one DICOM file.

    Only each file's preamble is read (``*.dcm`` files, or extension-less files with the
    ``DICM`` magic at byte 128), so listing is cheap.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    found = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        for path in folder.iterdir():
            if path.is_file() and (path.suffix.lower() == ".dcm" or _has_dicm_magic(path)):
                found.append(folder)
                break
    return found


def _has_dicm_magic(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
