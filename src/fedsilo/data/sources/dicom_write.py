"""Write a :class:`Volume` as a DICOM series (pydicom), e.g. to hand phantoms or NIfTI data to
DICOM tools, to demonstrate de-identification, and to test the DICOM reader."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from fedsilo.data.errors import DataError
from fedsilo.data.sources.volume import Volume

__all__ = ["write_dicom_series"]

logger = logging.getLogger(__name__)

#: Identity attributes written when the caller gives none (obviously synthetic values).
DEFAULT_IDENTITY: dict[str, str] = {
    "PatientName": "SYNTHETIC^PATIENT",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20240101",
    "SeriesDate": "20240101",
    "AcquisitionDate": "20240101",
    "ContentDate": "20240101",
    "StudyTime": "120000",
    "SeriesTime": "120000",
    "AccessionNumber": "ACC0001",
    "InstitutionName": "fedsilo",
    "ReferringPhysicianName": "",
}


def _ds(values: np.ndarray) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    rescale: tuple[float, float] | None = None,
    identity: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write one file per slice (``slice_0000.dcm`` ...), Explicit VR Little Endian.

    Parameters
    ----------
    volume : Volume
        Needs ``affine`` (internal index -> RAS+ mm); the series reads back to the same array.
    out_dir : str or Path
        Created if missing; must not already hold ``slice_*.dcm`` files.
    rescale : (slope, intercept) or None
        Stored value ``s`` means ``slope * s + intercept``. None: CT ``(1, -1024)``; MR ``(1, 0)``
        when the values are whole numbers in 0..65535, else a min-max fit into uint16 (lossy).
    identity : mapping or None
        Patient/study attributes (keyword -> value) added to :data:`DEFAULT_IDENTITY`;
        ``PatientID`` defaults to ``volume.patient_id``.

    Returns
    -------
    list of Path
        The files, inferior -> superior.
    """
    if volume.affine is None:
        raise ValueError("volume.affine must be set to write DICOM geometry, got None")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("slice_*.dcm")):
        raise DataError(f"{out}: already holds slice_*.dcm files; choose an empty folder")
    image = volume.image.astype(np.float64)
    if rescale is None:
        whole = np.array_equal(image, np.round(image))
        if volume.modality == "ct":
            rescale = (1.0, -1024.0)
        elif whole and image.min() >= 0 and image.max() <= 65535:
            rescale = (1.0, 0.0)
        else:
            lo, hi = float(image.min()), float(image.max())
            rescale = ((hi - lo) / 65535.0 or 1.0, lo)
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope <= 0:
        raise ValueError(f"rescale slope must be > 0, got {slope}")
    stored = np.round((image - intercept) / slope)
    signed = stored.min() < 0
    lo, hi = (-32768, 32767) if signed else (0, 65535)
    if stored.min() < lo or stored.max() > hi:
        raise ValueError(f"rescale {rescale} maps the image outside 16-bit range ({stored.min()}..{stored.max()})")
    stored = stored.astype(np.int16 if signed else np.uint16)

    affine = np.asarray(volume.affine, dtype=np.float64)
    to_lps = np.diag([-1.0, -1.0, 1.0])
    dz, dy, dx = volume.spacing
    row_dir = to_lps @ affine[:3, 2] / dx  # increasing column (w)
    col_dir = to_lps @ affine[:3, 1] / dy  # increasing row (h)
    ident = {**DEFAULT_IDENTITY, "PatientID": volume.patient_id, **dict(identity or {})}
    entropy = [volume.patient_id, volume.case_id, str(volume.shape)]
    study_uid = generate_uid(entropy_srcs=[*entropy, "study"])
    series_uid = generate_uid(entropy_srcs=[*entropy, "series"])
    frame_uid = generate_uid(entropy_srcs=[*entropy, "frame"])
    sop_class = CTImageStorage if volume.modality == "ct" else MRImageStorage
    paths = []
    for d in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*entropy, "sop", str(d)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        for key, value in ident.items():
            setattr(ds, key, value)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = volume.modality.upper()
        ds.SeriesNumber, ds.InstanceNumber = 1, d + 1
        ds.ImagePositionPatient = _ds(to_lps @ (affine @ np.array([d, 0.0, 0.0, 1.0]))[:3])
        ds.ImageOrientationPatient = _ds(np.concatenate([row_dir, col_dir]))
        ds.PixelSpacing = _ds(np.array([dy, dx]))
        ds.SliceThickness = DSfloat(dz, auto_format=True)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope, ds.RescaleIntercept = DSfloat(slope, auto_format=True), DSfloat(intercept, auto_format=True)
        ds.RescaleType = "HU" if volume.modality == "ct" else "US"
        ds.PixelData = np.ascontiguousarray(stored[d]).tobytes()
        path = out / f"slice_{d:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("wrote %d DICOM slices to %s", len(paths), out)
    return paths
