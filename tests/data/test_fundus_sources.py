"""Fundus sources (MedMNIST npz, image folder + CSV) and preprocessing; every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fedsilo.config.data_schema import FundusPreprocessSection
from fedsilo.data.errors import DataError
from fedsilo.data.images import ImageArrays
from fedsilo.data.preprocess_fundus import preprocess_fundus
from fedsilo.data.sources.imagefolder import load_image_folder
from fedsilo.data.sources.medmnist import load_medmnist, medmnist_splits


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_medmnist_any_subset_of_splits(tmp_path):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    y = np.array([[0], [1], [2], [4]], np.uint8)
    p = _npz(tmp_path / "m.npz", val_images=x, val_labels=y)
    assert medmnist_splits(p) == ["val"]
    arr = load_medmnist(p, "val", num_classes=5)
    assert arr.images.shape == (4, 8, 8, 3) and arr.labels.tolist() == [0, 1, 2, 4]


def test_medmnist_grayscale_gets_channel_axis(tmp_path):
    p = _npz(tmp_path / "g.npz", train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0, 1]))
    assert load_medmnist(p, "train").images.shape == (2, 8, 8, 1)


@pytest.mark.parametrize(
    ("arrays", "split", "message"),
    [
        ({"train_images": np.zeros((2, 4, 4, 3), np.uint8)}, "train",
         "missing key(s) train_labels; splits present: none"),
        ({"val_images": np.zeros((2, 4, 4, 3), np.uint8), "val_labels": np.zeros(2, np.uint8)}, "train",
         "missing key(s) train_images, train_labels; splits present: val"),
        ({"train_images": np.zeros((3, 4, 4, 3), np.uint8), "train_labels": np.zeros(2, np.uint8)}, "train",
         "train_images has 3 images but train_labels has 2 labels"),
        ({"train_images": np.zeros((2, 4, 4, 3), np.float32), "train_labels": np.zeros(2, np.uint8)}, "train",
         "train_images must be uint8 images, got dtype float32"),
        ({"train_images": np.zeros((2, 4, 4, 3), np.uint8), "train_labels": np.array([0, 7])}, "train",
         "label 7 of sample 1 is outside 0..4"),
        ({"train_images": np.zeros((2, 4, 4, 3), np.uint8), "train_labels": np.array([0.5, 1.0])}, "train",
         "train_labels must be integers"),
        ({"train_images": np.zeros((2, 4, 4, 3), np.uint8), "train_labels": np.zeros((2, 3), np.uint8)}, "train",
         "must hold one label per image"),
        ({"train_images": np.zeros((2, 4, 4, 3), np.uint8), "train_labels": np.zeros(2, np.uint8)}, "tset",
         "split must be one of train, val, test, got 'tset'"),
    ],
)
def test_medmnist_bad_input(tmp_path, arrays, split, message):
    p = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_medmnist(p, split, num_classes=5)
    assert message in str(err.value) and "bad.npz" in str(err.value)


def test_medmnist_missing_and_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="missing.npz: MedMNIST file does not exist"):
        load_medmnist(tmp_path / "missing.npz", "train")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="corrupt.npz: not a readable .npz file"):
        load_medmnist(bad, "train")


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(4096),  # random bytes: numpy would take them for a pickle
    b"\x80\x04K\x01.",  # a real pickle
    b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (0,), }" + b" " * 53 + b"\n",  # .npy
])
def test_medmnist_file_that_is_no_npz_archive_says_so_and_never_suggests_pickles(tmp_path, content):
    bad = tmp_path / "random.npz"
    bad.write_bytes(content)
    for call in (lambda: load_medmnist(bad, "train"), lambda: medmnist_splits(bad)):
        with pytest.raises(DataError) as err:
            call()
        assert str(err.value) == (f"{bad}: not a readable .npz file: not a valid .npz archive (a zip of .npy "
                                  "arrays); it is truncated, corrupt or another format")
        assert "pickle" not in str(err.value)


def test_medmnist_object_arrays_are_refused_as_such(tmp_path):
    p = _npz(tmp_path / "objects.npz", train_images=np.array([None, {"a": 1}], dtype=object),
             train_labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"objects.npz: train_images/train_labels must be plain numeric arrays, "
                                        r"not Python objects"):
        load_medmnist(p, "train")


def _folder(tmp_path, rows, make=True):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    lines = ["id_code,diagnosis"]
    for image_id, grade in rows:
        lines.append(f"{image_id},{grade}")
        if make:
            Image.fromarray(np.full((20, 30, 3), 10 * int(grade) if str(grade).isdigit() else 0, np.uint8)).save(
                img_dir / f"{image_id}.png")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return img_dir


def test_image_folder_loads_and_resizes(tmp_path):
    _folder(tmp_path, [("a", 0), ("b", 3)])
    arr = load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=16, num_classes=5)
    assert arr.images.shape == (2, 16, 16, 3)
    assert arr.labels.tolist() == [0, 3]
    assert arr.images[1].mean() == pytest.approx(30, abs=1)


def test_image_folder_bad_input(tmp_path):
    img_dir = _folder(tmp_path, [("a", 0), ("b", 9)])
    with pytest.raises(DataError, match="label 9 of sample 1 is outside 0..4"):
        load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=8, num_classes=5)
    (img_dir / "b.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "labels.csv").write_text("id_code,diagnosis\na,0\nb,1\n")
    with pytest.raises(DataError, match=r"b.png: unreadable image"):
        load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=8)
    (tmp_path / "labels.csv").write_text("id_code,diagnosis\na,0\nc,1\n")
    with pytest.raises(DataError, match=r"no image file for id 'c'"):
        load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=8)
    (tmp_path / "labels.csv").write_text("id_code,grade\na,0\n")
    with pytest.raises(DataError, match=r"no column 'diagnosis'; columns are id_code, grade"):
        load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=8)
    (tmp_path / "labels.csv").write_text("id_code,diagnosis\na,mild\n")
    with pytest.raises(DataError, match=r"line 2: label 'mild' in column 'diagnosis' is not an integer"):
        load_image_folder(tmp_path, "labels.csv", image_dir="imgs", size=8)
    with pytest.raises(DataError, match="label CSV does not exist"):
        load_image_folder(tmp_path, "nope.csv", image_dir="imgs", size=8)
    with pytest.raises(DataError, match="image folder does not exist"):
        load_image_folder(tmp_path, "labels.csv", image_dir="absent", size=8)


def test_image_arrays_validation():
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageArrays(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3), origin="x")
    with pytest.raises(DataError, match="must have shape"):
        ImageArrays(np.zeros((2, 4, 4, 2), np.uint8), np.zeros(2), origin="x")


def _ramp(n=2, size=16):
    ramp = np.linspace(0, 255, size * size).reshape(size, size).astype(np.uint8)
    return ImageArrays(np.stack([np.stack([ramp, ramp // 2, 255 - ramp], -1)] * n), np.zeros(n))


def test_preprocess_identity_keeps_pixels():
    arr = _ramp()
    ds = preprocess_fundus(arr, 16, FundusPreprocessSection())
    assert ds.images.shape == (2, 3, 16, 16)
    assert np.array_equal(ds.images[0].permute(1, 2, 0).numpy(), arr.images[0])
    x, _ = ds.batch(np.array([0]))
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0


def test_preprocess_grayscale_gamma_quantise_clahe():
    arr = _ramp()
    gray = preprocess_fundus(arr, 8, FundusPreprocessSection(grayscale=True))
    assert gray.images.shape == (2, 1, 8, 8)
    q = preprocess_fundus(arr, 16, FundusPreprocessSection(quantise_levels=4))
    assert sorted(np.unique(q.images.numpy()).tolist()) == [0, 85, 170, 255]
    g = preprocess_fundus(arr, 16, FundusPreprocessSection(gamma=2.0))
    # a mid-grey 128/255 under gamma 2 becomes ~64
    plain = preprocess_fundus(arr, 16, FundusPreprocessSection())
    assert float(g.images.float().mean()) < float(plain.images.float().mean())
    c = preprocess_fundus(ImageArrays(np.full((1, 16, 16, 3), 100, np.uint8) + np.eye(16, dtype=np.uint8)[..., None] * 20,
                                      np.zeros(1)), 16, FundusPreprocessSection(clahe=True, clahe_tiles=2))
    assert c.images.float().std() > 10  # local contrast stretched from a nearly flat image
