"""fedsilo predict's building blocks: finding cases, checking arguments before the model loads, and
mapping predictions back to native grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsilo.data.errors import DataError
from fedsilo.data.labels import NUM_CLASSES
from fedsilo.data.preprocess_volume import PreprocessSettings, preprocess_volume
from fedsilo.data.sources.volume import Volume
from fedsilo.inference.predict import find_cases, probabilities_to_native
from fedsilo.inference.predict.geometry import native_index_map
from fedsilo.run.folder import RunDir, RunDirError
from helpers import make_volume, radiological_affine, seg_config, tiny_config


def _volume(shape=(6, 40, 56), spacing=(3.0, 0.8, 0.7)) -> Volume:
    d, h, w = shape
    labels = np.zeros(shape, np.uint8)
    labels[:, 8:24, 6:30] = 1  # a "liver" block
    labels[1:5, 26:34, 36:48] = 4  # a "spleen" block
    image = np.where(labels > 0, 60.0 + 20 * labels, -100.0).astype(np.float32)
    image[:, :3, :] = -1000  # air above the body, so a foreground crop has something to cut
    return make_volume(image, labels, spacing=spacing, annotated=(),
                       affine=radiological_affine(spacing, origin=(10.0, 20.0, -5.0)))


def _one_hot(labels: np.ndarray) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(labels.astype(np.int64)), NUM_CLASSES).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("size", [56, 112])
def test_pad_and_upsample_round_trip_is_exact(size):
    vol = _volume()
    pre = preprocess_volume(vol, PreprocessSettings(size=size, keep_aspect=True))  # pad 40 -> 56, then x1 or x2
    back = probabilities_to_native(_one_hot(pre.labels), pre.affine, vol.affine, vol.shape)
    np.testing.assert_array_equal(back, vol.labels)


@pytest.mark.parametrize("crop", [False, True])
def test_crop_pad_resize_round_trip_keeps_organs(crop):
    vol = _volume()
    pre = preprocess_volume(vol, PreprocessSettings(size=32, keep_aspect=True, crop_foreground=crop))
    assert pre.shape[1:] == (32, 32)
    back = probabilities_to_native(_one_hot(pre.labels), pre.affine, vol.affine, vol.shape)
    assert back.shape == vol.shape
    for organ in (1, 4):
        a, b = back == organ, vol.labels == organ
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        # 1.75x downsampling quantises an 8-pixel organ by up to half a native pixel per edge
        assert dice > 0.85, (organ, dice)
    # nothing appears where the preprocessed grid saw only background
    assert set(np.unique(back)) <= {0, 1, 4}


def test_outside_the_field_of_view_is_background():
    vol = _volume()
    pre = preprocess_volume(vol, PreprocessSettings(size=56))
    # probabilities that say "liver" everywhere on the preprocessed grid ...
    probs = torch.zeros(vol.shape[0], NUM_CLASSES, 56, 56)
    probs[:, 1] = 1
    shifted = pre.affine.copy()
    shifted[:3, 3] += shifted[:3, 2] * 30  # ... but a grid moved 30 columns away covers only part of the scan
    back = probabilities_to_native(probs, shifted, vol.affine, vol.shape)
    assert (back == 1).any() and (back == 0).any()


def test_index_map_rejects_a_slice_change():
    vol = _volume()
    moved = vol.affine.copy()
    moved[:3, 3] += moved[:3, 0]  # one slice further
    with pytest.raises(ValueError, match="must keep the native slices"):
        native_index_map(moved, vol.affine)
    with pytest.raises(ValueError, match=r"one slice per native slice \(6\), got 5"):
        probabilities_to_native(torch.zeros(5, NUM_CLASSES, 8, 8), vol.affine, vol.affine, vol.shape)


def test_find_cases(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.nii").write_bytes(b"")
    cases = find_cases(tmp_path, "mr")
    assert [(c.case_id, c.modality) for c in cases] == [("a", "mr"), ("b", "mr")]
    assert [c.case_id for c in find_cases(tmp_path / "a.nii.gz")] == ["a"]
    (tmp_path / "label_a.nii.gz").write_bytes(b"")  # label maps beside scans are not cases
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "labelsTr" / "c.nii.gz").write_bytes(b"")
    assert [c.case_id for c in find_cases(tmp_path, "mr")] == ["a", "b"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt: unsupported input"):
        find_cases(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="input not found"):
        find_cases(tmp_path / "missing")
    with pytest.raises(DataError, match="no NIfTI file or DICOM series"):
        find_cases(_empty(tmp_path))
    (tmp_path / "sub" / "a.nii").write_bytes(b"")
    with pytest.raises(DataError, match=r"share the name\(s\) \['a'\]"):
        find_cases(tmp_path)
    with pytest.raises(ValueError, match="--modality must be one of"):
        find_cases(tmp_path, "pet")


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


@pytest.fixture
def no_model_loading(monkeypatch):
    """predict_path fails the test if it loads a model (its arguments are checked first)."""
    import fedsilo.inference.predict.run as predict_run

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(predict_run, "load_trained", refuse)


def test_predict_checks_inputs_and_modality_before_loading_the_model(tmp_path, no_model_loading):
    from fedsilo.inference.predict import predict_path

    run = RunDir.create(tmp_path / "run", seg_config(), "local")  # no trained weights needed
    with pytest.raises(DataError, match=f"{tmp_path / 'missing.nii.gz'}: input not found"):
        predict_path(run.path, tmp_path / "missing.nii.gz", tmp_path / "out")
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a", "b", "c", "d"):
        (scans / f"{name}.nii.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        predict_path(run.path, scans, tmp_path / "out")
    assert str(err.value) == (f"{scans / 'a.nii.gz'}, {scans / 'b.nii.gz'}, {scans / 'c.nii.gz'} and 1 more: "
                              "NIfTI files do not say their modality; give --modality ct or mr")
    other = RunDir.create(tmp_path / "cls", tiny_config(tmp_path / "x.npz"), "local")
    with pytest.raises(RunDirError, match="is a classification run; `fedsilo predict` needs a segmentation run"):
        predict_path(other.path, scans, tmp_path / "out", modality="ct")
    assert not (tmp_path / "out").exists()


def test_predict_cli_names_a_missing_input_before_importing_the_model_code(tmp_path, capsys, no_model_loading):
    from fedsilo.cli import main

    run = RunDir.create(tmp_path / "run", seg_config(), "local")
    assert main(["predict", str(run.path), "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"fedsilo: error: --input {tmp_path / 'nope'}: not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--input", str(run.path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a fedsilo run folder (no config.toml)" in capsys.readouterr().err


def test_predict_cli_reports_a_missing_input_without_importing_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("")
    code = ("import sys; from fedsilo.cli import main; "
            f"rc = main(['predict', {str(tmp_path / 'run')!r}, '--input', 'nope.nii.gz', '--out', 'o']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert "fedsilo: error: --input nope.nii.gz: not found" in done.stderr
