"""``fedsilo data``: phantoms written in the loaders' layouts, inspection, de-identification CLI."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.cli import main
from fedsilo.data.errors import DataError
from fedsilo.data.phantoms.abdomen import phantom_patient
from fedsilo.data.sources.imagefolder import load_image_folder
from fedsilo.data.tools import volumes_at
from helpers import write_nifti


def test_abdomen_phantom_round_trips_through_the_chaos_reader(tmp_path, capsys):
    out = tmp_path / "ct"
    assert main(["data", "phantom", "--kind", "abdomen", "--modality", "ct", "--n", "2", "--out", str(out),
                 "--shape", "8x48x48"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["image_1.nii.gz", "image_2.nii.gz",
                                                            "label_1.nii.gz", "label_2.nii.gz"]
    vols = volumes_at(out)
    truth = phantom_patient(1, modality="ct", seed=0, shape=(8, 48, 48))
    assert vols[1].modality == "ct"
    assert np.array_equal(vols[1].labels, truth.labels)
    assert np.allclose(vols[1].image, truth.image, atol=1e-3)
    assert vols[1].spacing == pytest.approx(truth.spacing, abs=1e-5)
    # radiological orientation survives the file round trip: the liver is on the image's left
    liver_cols = np.nonzero(vols[1].labels == 1)[2]
    assert liver_cols.mean() < 24
    # the folder is never overwritten
    assert main(["data", "phantom", "--kind", "abdomen", "--n", "1", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_fundus_phantom_is_read_by_the_image_folder_source(tmp_path):
    out = tmp_path / "fundus"
    assert main(["data", "phantom", "--kind", "fundus", "--n", "6", "--size", "32", "--out", str(out)]) == 0
    arrays = load_image_folder(out, "labels.csv", image_dir="images", site_column="camera", size=32, num_classes=5)
    assert arrays.images.shape == (6, 32, 32, 3)
    assert set(arrays.groups) <= {"camera-1", "camera-2", "camera-3"}


def test_inspect_folder_and_file(tmp_path, capsys, shared_data):
    preview = tmp_path / "ts.png"
    assert main(["data", "inspect", str(shared_data / "totalseg_ct" / "ct.nii.gz"), "--preview", str(preview)]) == 0
    text = capsys.readouterr().out
    assert "ct" in text and "pancreas" in text and "gallbladder" in text
    assert preview.stat().st_size > 10_000
    assert main(["data", "inspect", str(tmp_path / "absent")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # the folder holding the pair reads the same as its scan
    assert main(["data", "inspect", str(shared_data / "totalseg_ct"), "--preview", str(tmp_path / "f.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == text.splitlines()[0]


def _scan_and_labels(folder, scan="ct.nii.gz", labels="seg.nii.gz"):
    """A (12, 10, 4) scan; its label map has TotalSegmentator's liver (5) in a box and spleen (1) in another."""
    folder.mkdir()
    seg = np.zeros((12, 10, 4), np.uint8)
    seg[2:6, 2:6, 1:3] = 5
    seg[8:10, 6:8, 1:3] = 1
    write_nifti(folder / scan, np.random.default_rng(0).uniform(-100, 200, (12, 10, 4)).astype(np.int16))
    if labels:
        write_nifti(folder / labels, seg)
    return folder


def test_a_folder_with_one_scan_and_its_label_map_is_read_as_a_pair(tmp_path, capsys):
    folder = _scan_and_labels(tmp_path / "totalseg")
    (vol,) = volumes_at(folder)
    assert (vol.patient_id, vol.modality) == ("ct", "ct")
    assert np.count_nonzero(vol.labels == 1) == 4 * 4 * 2  # liver, mapped from TotalSegmentator's 5
    assert np.count_nonzero(vol.labels == 4) == 2 * 2 * 2  # spleen, from 1
    assert main(["data", "inspect", str(folder), "--preview", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "patients=1 volumes=1 slices=4" in out and "'liver': 1" in out and "'spleen': 1" in out
    # other names for the label map, and a scan alone
    (vol,) = volumes_at(_scan_and_labels(tmp_path / "b", "scan.nii.gz", "scan_mask.nii.gz"), mapping="totalsegmentator_v2")
    assert np.count_nonzero(vol.labels == 1) == 32
    (vol,) = volumes_at(_scan_and_labels(tmp_path / "c", labels=""))
    assert vol.labels is None


def test_a_folder_in_no_known_layout_names_the_layouts_looked_for(tmp_path, capsys):
    folder = _scan_and_labels(tmp_path / "two")
    write_nifti(folder / "mr.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(DataError) as err:
        volumes_at(folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: no layout fedsilo reads; looked for a CHAOS folder")
    for layout in ("nnU-Net/MSD folder", "one scan NIfTI with its label NIfTI", "DICOM series"):
        assert layout in message
    assert "found 3 NIfTI file(s): ct.nii.gz, mr.nii.gz, seg.nii.gz and no DICOM file" in message
    (tmp_path / "empty").mkdir()
    assert main(["data", "inspect", str(tmp_path / "empty"), "--preview", str(tmp_path / "e.png")]) == 2
    assert "found no NIfTI file and no DICOM file" in capsys.readouterr().err


def test_inspect_config(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("""
[experiment]
task = "classification"
[data]
source = "volumes"
[[data.sites]]
name = "ct-a"
kind = "phantom"
count = 2
shape = [8, 48, 48]
[federation]
num_sites = 1
""")
    preview = tmp_path / "p.png"
    assert main(["data", "inspect", str(cfg), "--preview", str(preview)]) == 0
    assert "ct-a" in capsys.readouterr().out and preview.is_file()
    # without --preview: under runs/inspect/ (ignored by git), not loose in the current directory
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "inspect", str(cfg)]) == 0
    assert [p.relative_to(work).as_posix() for p in work.rglob("*.png")] == ["runs/inspect/inspect-c.png"]
