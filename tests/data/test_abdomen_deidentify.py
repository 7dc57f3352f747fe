"""DICOM de-identification through dicognito."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedsilo.data.deidentify import GEOMETRY_KEYWORDS, deidentify
from fedsilo.data.errors import DataError
from fedsilo.data.sources import Volume, read_dicom_series, write_dicom_series

IDENTITY = {
    "PatientName": "DOE^JOHN",
    "PatientID": "MRN12345",
    "PatientBirthDate": "19600215",
    "StudyDate": "20230102",
    "SeriesDate": "20230103",
    "AcquisitionDate": "20230104",
    "ContentDate": "20230105",
    "AccessionNumber": "ACC98765",
    "InstitutionName": "St Example Hospital",
}


def _series(folder: Path) -> Volume:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, size=(4, 6, 5)).astype(np.float32)
    affine = np.array([[0, 0, -0.8, 120.0], [0, -0.7, 0, 90.0], [2.5, 0, 0, -30.0], [0, 0, 0, 1]])
    vol = Volume(image, None, (2.5, 0.7, 0.8), "MRN12345", "ct", affine=affine)
    write_dicom_series(vol, folder / "DOE_JOHN" / "ct", identity=IDENTITY)
    private = pydicom.dcmread(folder / "DOE_JOHN" / "ct" / "slice_0000.dcm")
    block = private.private_block(0x0011, "HOSPITAL", create=True)
    block.add_new(0x01, "LO", "DOE JOHN internal")
    private.save_as(folder / "DOE_JOHN" / "ct" / "slice_0000.dcm")
    (folder / "DOE_JOHN" / "notes.txt").write_text("not dicom")
    return vol


def test_no_identity_survives_and_pixels_geometry_kept(tmp_path: Path) -> None:
    vol = _series(tmp_path / "in")
    report = deidentify(tmp_path / "in", tmp_path / "out", seed="test-seed")
    assert len(report.files) == 4 and report.skipped == ["DOE_JOHN/notes.txt"]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "series_000", "series_000/00000.dcm", "series_000/00001.dcm", "series_000/00002.dcm", "series_000/00003.dcm"
    ]
    secrets = [*IDENTITY.values(), "DOE JOHN internal", "DOE_JOHN"]
    for row in report.files:
        src = pydicom.dcmread(tmp_path / "in" / row["input"])
        out_path = tmp_path / "out" / row["output"]
        out = pydicom.dcmread(out_path)
        raw = out_path.read_bytes()
        assert not any(s.encode() in raw for s in secrets), row["output"]
        assert out.PatientName != IDENTITY["PatientName"] and out.PatientID != IDENTITY["PatientID"]
        for key in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            assert str(out.get(key, "")) != IDENTITY[key]
        assert out.StudyInstanceUID != src.StudyInstanceUID and out.SOPInstanceUID != src.SOPInstanceUID
        np.testing.assert_array_equal(out.pixel_array, src.pixel_array)
        for key in GEOMETRY_KEYWORDS:
            assert str(out.get(key)) == str(src.get(key)), key
        assert {"PatientName", "PatientID", "StudyDate"} <= set(row["replaced"])
    back = read_dicom_series(tmp_path / "out" / "series_000")
    np.testing.assert_array_equal(back.image, vol.image)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)
    # all files of the series still share one (new) series and study UID
    outs = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").rglob("*.dcm"))]
    assert len({o.SeriesInstanceUID for o in outs}) == 1 and len({o.PatientID for o in outs}) == 1


def test_log_is_outside_out_dir_and_holds_no_values(tmp_path: Path) -> None:
    _series(tmp_path / "in")
    report = deidentify(tmp_path / "in", tmp_path / "out", seed="s")
    assert report.log_path == tmp_path / "out_deid_log.csv" and report.log_path.is_file()
    rows = list(csv.DictReader(report.log_path.open()))
    assert len(rows) == 5 and rows[-1]["added"] == "skipped: not DICOM"
    assert "PatientName" in rows[0]["replaced"]
    assert "DOE^JOHN" not in report.log_path.read_text() and "MRN12345" not in report.log_path.read_text()
    js = deidentify(tmp_path / "in", tmp_path / "out2", seed="s", log_format="json")
    payload = json.loads(js.log_path.read_text())
    assert len(payload["files"]) == 4 and js.log_path.suffix == ".json"
    # the private tag is gone
    out = pydicom.dcmread(tmp_path / "out" / "series_000" / "00000.dcm")
    assert not any(elem.tag.is_private for elem in out)


def test_refuses_non_empty_out_dir_and_bad_input(tmp_path: Path) -> None:
    _series(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="out_dir must be absent or an empty folder"):
        deidentify(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    with pytest.raises(ValueError, match="out_dir must not lie inside dicom_dir"):
        deidentify(tmp_path / "in", tmp_path / "in" / "anon")
    with pytest.raises(ValueError, match="log_format must be 'csv' or 'json'"):
        deidentify(tmp_path / "in", tmp_path / "o", log_format="xml")
    with pytest.raises(DataError, match="DICOM folder not found"):
        deidentify(tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files found"):
        deidentify(tmp_path / "empty", tmp_path / "o")
