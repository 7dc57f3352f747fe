"""DICOM series: round trip from NIfTI with slope/intercept, ordering, and the error cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from fedsilo.data.errors import DataError
from fedsilo.data.sources import (
    Volume,
    dicom_source,
    find_series_folders,
    manifest_source,
    pair_source,
    read_dicom_series,
    write_dicom_series,
)
from helpers import write_nifti


def _ct_volume(tmp_path: Path, shape: tuple[int, int, int] = (9, 7, 5)) -> tuple[Volume, Path, Path]:
    """A small CT in HU (integers -1024..1500) saved as LAS NIfTI, with a label map, then loaded."""
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 1500, size=shape).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:5, 2:4, 1:3] = 1
    img = write_nifti(tmp_path / "ct.nii.gz", hu)
    lab = write_nifti(tmp_path / "seg.nii.gz", label)
    vol = next(iter(pair_source(img, lab, "P7", "ct", "chaos_mr")))
    return vol, img, lab


def test_roundtrip_hu_and_spacing(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    files = write_dicom_series(vol, tmp_path / "dcm", rescale=(0.5, -1024.0))
    # Independent check with plain pydicom: first file is the most inferior slice, stored values
    # are (HU + 1024) / 0.5, PixelSpacing is (dy, dx) = (2, 2), IPP z grows by dz = 5 mm.
    first = pydicom.dcmread(files[0])
    assert float(first.RescaleSlope) == 0.5 and float(first.RescaleIntercept) == -1024.0
    np.testing.assert_array_equal(first.pixel_array * 0.5 - 1024.0, vol.image[0])
    assert [float(x) for x in first.PixelSpacing] == [2.0, 2.0]
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    np.testing.assert_allclose(np.diff(z), 5.0)
    # Shuffle the file names: order must come from positions, not names.
    for f in files:
        f.rename(f.with_name(f"x{(len(files) - int(f.stem[-4:])):03d}.dcm"))
    series = read_dicom_series(tmp_path / "dcm")
    np.testing.assert_array_equal(series.image, vol.image)
    np.testing.assert_allclose(series.affine, vol.affine, atol=1e-6)
    assert series.modality == "ct" and series.patient_id == "P7"


def test_dicom_image_with_nifti_label_via_manifest(tmp_path: Path) -> None:
    vol, _, lab = _ct_volume(tmp_path)
    write_dicom_series(vol, tmp_path / "dcm")
    (tmp_path / "m.csv").write_text("image,label,modality,patient_id,site,mapping\ndcm,seg.nii.gz,ct,P7,a,chaos_mr\n")
    back = next(iter(manifest_source(tmp_path / "m.csv")))
    np.testing.assert_array_equal(back.image, vol.image)
    np.testing.assert_array_equal(back.labels, vol.labels)
    assert back.spacing == (5.0, 2.0, 2.0)


def test_roundtrip_real_totalsegmentator(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / "totalseg_ct"
    vol = next(iter(pair_source(d / "ct.nii.gz", None, "s0011", "ct")))
    write_dicom_series(vol, tmp_path / "dcm")
    back = read_dicom_series(tmp_path / "dcm")
    np.testing.assert_array_equal(back.image, vol.image)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_dicom_source_finds_series(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    write_dicom_series(vol, tmp_path / "root" / "a" / "s1")
    (tmp_path / "root" / "a" / "s1" / "notes.txt").write_text("not dicom")
    assert find_series_folders(tmp_path / "root") == [tmp_path / "root" / "a" / "s1"]
    src = dicom_source(tmp_path / "root", site="x")
    (case,) = src.cases()
    assert case.patient_id == "P7" and case.case_id == "a/s1" and case.modality is None
    loaded = next(iter(src))
    assert loaded.modality == "ct" and loaded.labels is None and loaded.site == "x"


def test_mixed_series_error(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    write_dicom_series(vol, tmp_path / "s1")
    other = Volume(vol.image, None, vol.spacing, "P8", "ct", affine=vol.affine)
    for f in write_dicom_series(other, tmp_path / "s2"):
        shutil.move(f, tmp_path / "s1" / f"other_{f.name}")
    with pytest.raises(DataError, match=r"s1: mixed DICOM series, 2 SeriesInstanceUIDs"):
        read_dicom_series(tmp_path / "s1")


def test_missing_slice_error(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    files = write_dicom_series(vol, tmp_path / "s")
    files[2].unlink()
    with pytest.raises(DataError, match=r"missing slice\(s\).*step 10\.000 mm between slice_0001\.dcm and slice_0003\.dcm.*5\.000 mm"):
        read_dicom_series(tmp_path / "s")


def test_inconsistent_orientation_and_size(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    files = write_dicom_series(vol, tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(files[2])
    with pytest.raises(DataError, match=r"slice_0002\.dcm: ImageOrientationPatient differs"):
        read_dicom_series(tmp_path / "s")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows = 3
    ds.save_as(files[2])
    with pytest.raises(DataError, match=r"slice_0002\.dcm: size \(3, 9\) differs"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_position_error(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    files = write_dicom_series(vol, tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.save_as(files[1])
    with pytest.raises(DataError, match="duplicate slice position"):
        read_dicom_series(tmp_path / "s")


def test_undecodable_pixel_data_names_package(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    files = write_dicom_series(vol, tmp_path / "s")
    ds = pydicom.dcmread(files[3])
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 64])
    ds.save_as(files[3], enforce_file_format=True)
    with pytest.raises(DataError, match=r"slice_0003\.dcm: cannot decode pixel data \(transfer syntax JPEG-LS.*Install a decoder: pylibjpeg"):
        read_dicom_series(tmp_path / "s")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="DICOM folder not found"):
        read_dicom_series(tmp_path / "none")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no DICOM image slices"):
        read_dicom_series(tmp_path / "e")
    with pytest.raises(DataError, match="no DICOM series found"):
        dicom_source(tmp_path / "e")


def test_writer_arguments(tmp_path: Path) -> None:
    vol, *_ = _ct_volume(tmp_path)
    with pytest.raises(ValueError, match="volume.affine must be set"):
        write_dicom_series(Volume(vol.image, None, vol.spacing, "p", "ct"), tmp_path / "a")
    with pytest.raises(ValueError, match="rescale slope must be > 0"):
        write_dicom_series(vol, tmp_path / "b", rescale=(0.0, 0.0))
    with pytest.raises(ValueError, match="outside 16-bit range"):
        write_dicom_series(vol, tmp_path / "c", rescale=(0.01, 0.0))
    write_dicom_series(vol, tmp_path / "d")
    with pytest.raises(DataError, match="already holds slice"):
        write_dicom_series(vol, tmp_path / "d")


def test_mr_writer_lossless_for_integers(tmp_path: Path) -> None:
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # internal (d, h, w) -> RAS: d superior 4 mm, h posterior 1.5 mm, w toward patient left 1.5 mm
    affine = np.array([[0, 0, -1.5, 0], [0, -1.5, 0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])
    vol = Volume(image, None, (4.0, 1.5, 1.5), "m1", "mr", affine=affine)
    write_dicom_series(vol, tmp_path / "mr")
    back = read_dicom_series(tmp_path / "mr")
    assert back.modality == "mr"
    np.testing.assert_array_equal(back.image, image)
    np.testing.assert_allclose(back.affine, affine, atol=1e-9)
