"""``fedsilo data``: phantoms written in the loaders' layouts, inspection, de-identification CLI."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.cli import main
from fedsilo.data.phantoms.abdomen import phantom_patient
from fedsilo.data.sources.imagefolder import load_image_folder
from fedsilo.data.tools import volumes_at


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
