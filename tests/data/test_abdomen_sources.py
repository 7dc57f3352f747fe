"""NIfTI / nnU-Net / manifest / PNG sources, orientation, and corrupted-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fedsilo.data.errors import DataError
from fedsilo.data.labels import ORGAN_IDS
from fedsilo.data.sources import (
    CaseRef,
    PngSliceSource,
    Volume,
    VolumeSource,
    amos_modality,
    chaos_source,
    internal_to_nifti,
    manifest_source,
    nnunet_source,
    pair_source,
    read_nifti,
)
from helpers import LAS, tiny_pair, write_nifti

# ------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def chaos(shared_data: Path) -> list[Volume]:
    return list(chaos_source(shared_data / "chaos_mr_t2", site="chaos"))


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> Volume:
    d = shared_data / "totalseg_ct"
    return next(iter(pair_source(d / "ct.nii.gz", d / "seg.nii.gz", "s0011", "ct", "totalsegmentator_v2")))


def test_chaos_all_patients_load_with_vocabulary(chaos: list[Volume]) -> None:
    assert [v.patient_id for v in chaos] == ["1", "2", "3", "5", "8", "10", "13", "15", "19", "20", "21", "22", "31", "32", "33"]
    for v in chaos:
        assert v.modality == "mr" and v.site == "chaos"
        assert v.shape[1:] == (256, 256) and 26 <= v.shape[0] <= 50
        assert v.spacing == pytest.approx((7.7, 1.25, 1.25))
        assert v.annotated == frozenset({1, 2, 3, 4})
        assert set(np.unique(v.labels)) <= {0, 1, 2, 3, 4}
        assert v.image.dtype == np.float32 and v.labels.dtype == np.uint8


def test_chaos_patient1_voxel_counts(chaos: list[Volume]) -> None:
    v = chaos[0]
    assert v.shape == (37, 256, 256)
    assert v.organ_voxels() == {1: 153742, 2: 18074, 3: 17961, 4: 10886}


def test_totalsegmentator_voxel_counts(totalseg: Volume) -> None:
    assert totalseg.shape == (30, 101, 122) and totalseg.spacing == (3.0, 3.0, 3.0)
    assert totalseg.organ_voxels() == {
        ORGAN_IDS["liver"]: 38634,
        ORGAN_IDS["right_kidney"]: 3947,
        ORGAN_IDS["left_kidney"]: 3676,
        ORGAN_IDS["spleen"]: 9452,
        ORGAN_IDS["pancreas"]: 644,
        ORGAN_IDS["gallbladder"]: 1333,
        ORGAN_IDS["stomach"]: 4675,
    }
    assert totalseg.image.min() == -1100 and totalseg.image.max() == 1207  # HU kept


@pytest.mark.parametrize("which", ["chaos", "totalseg"])
def test_real_volumes_are_radiological(which: str, chaos: list[Volume], totalseg: Volume) -> None:
    """Liver on the image left, right kidney left of left kidney, kidneys posterior of the liver."""
    v = chaos[0] if which == "chaos" else totalseg
    _, h, w = v.shape

    def centroid(organ: int) -> np.ndarray:
        return np.argwhere(v.labels == organ).mean(axis=0)

    liver, rk, lk = centroid(ORGAN_IDS["liver"]), centroid(ORGAN_IDS["right_kidney"]), centroid(ORGAN_IDS["left_kidney"])
    spleen = centroid(ORGAN_IDS["spleen"])
    assert liver[2] < w / 2 < spleen[2]
    assert rk[2] < w / 2 < lk[2]
    assert rk[1] > liver[1] and rk[1] > h / 2  # kidneys lie posterior (lower rows)
    assert liver[0] > rk[0]  # liver (dome) above the kidneys: D runs inferior -> superior


# ------------------------------------------------------------------------------------------ orientation


def test_reorientation_hand_checked(tmp_path: Path) -> None:
    data = np.zeros((4, 3, 2), dtype=np.float32)  # (I, J, K)
    data[0, 0, 0] = 7.0
    ras = np.diag([1.0, 2.0, 3.0, 1.0])
    arr, aff = read_nifti(write_nifti(tmp_path / "ras.nii.gz", data, ras))
    assert arr.shape == (2, 3, 4)
    # RAS: i grows toward the patient's right, so i=0 is the patient's left-most column -> image
    # right (w = W-1); j=0 is the most posterior row -> bottom (h = H-1); k=0 inferior -> d=0.
    assert arr[0, 2, 3] == 7.0 and arr.sum() == 7.0
    # LAS (CHAOS): i=0 is now the patient's right-most column -> image left (w=0).
    arr_las, _ = read_nifti(write_nifti(tmp_path / "las.nii.gz", data, np.diag([-1.0, 2.0, 3.0, 1.0])))
    assert arr_las[0, 2, 0] == 7.0
    # the internal affine maps (d, h, w) to RAS mm: voxel (0, 2, 3) is i=j=k=0 -> the origin.
    np.testing.assert_allclose(aff @ [0, 2, 3, 1], [0, 0, 0, 1])
    np.testing.assert_allclose(aff @ [1, 0, 0, 1], [3, 4, 3, 1])  # d+1 -> +3 mm S; h=0 -> j=2 (4 mm A)
    back = internal_to_nifti(arr, aff)
    np.testing.assert_array_equal(back.get_fdata(), data)
    np.testing.assert_allclose(back.affine, ras)


# ------------------------------------------------------------------------------------------ layouts


def test_chaos_layout_unlabelled_and_protocol(tmp_path: Path) -> None:
    tiny_pair(tmp_path, "2")
    tiny_pair(tmp_path, "10")
    write_nifti(tmp_path / "image_3.nii.gz", np.ones((12, 10, 4)))  # no label file
    src = chaos_source(tmp_path, site="s")
    assert isinstance(src, VolumeSource) and len(src) == 3
    assert [c.patient_id for c in src.cases()] == ["2", "3", "10"]
    vols = {v.patient_id: v for v in src}
    assert vols["3"].labels is None and vols["3"].annotated == frozenset()
    assert vols["2"].organ_voxels() == {1: 4 * 4 * 2, 4: 2 * 2 * 2}
    assert vols["2"].shape == (4, 10, 12) and vols["2"].spacing == (5.0, 2.0, 2.0)


def test_nnunet_amos_layout(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "AMOS", "modality": {"0": "CT"}}))
    for cid, value in (("amos_0005", 6), ("amos_0507", 10)):
        write_nifti(tmp_path / "imagesTr" / f"{cid}_0000.nii.gz", np.zeros((6, 5, 3)))
        lab = np.zeros((6, 5, 3), dtype=np.uint8)
        lab[1:3, 1:3, 1] = value
        lab[4, 4, 2] = 13  # duodenum -> background
        write_nifti(tmp_path / "labelsTr" / f"{cid}.nii.gz", lab)
    write_nifti(tmp_path / "imagesTr" / "amos_0005_0001.nii.gz", np.zeros((6, 5, 3)))  # second channel: ignored
    vols = list(nnunet_source(tmp_path))
    assert [(v.case_id, v.modality) for v in vols] == [("amos_0005", "ct"), ("amos_0507", "mr")]
    assert vols[0].organ_voxels() == {ORGAN_IDS["liver"]: 4}
    assert vols[1].organ_voxels() == {ORGAN_IDS["pancreas"]: 4}
    assert amos_modality("amos_0500") == "ct" and amos_modality("amos_0501") == "mr"
    with pytest.raises(ValueError, match="case_id must contain a number"):
        amos_modality("amos")


def test_nnunet_generic_needs_mapping_and_reads_channel(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Task03_Liver", "channel_names": {"0": "CT"}}))
    write_nifti(tmp_path / "imagesTr" / "liver_1.nii.gz", np.zeros((6, 5, 3)))
    write_nifti(tmp_path / "labelsTr" / "liver_1.nii.gz", np.ones((6, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="mapping is required"):
        nnunet_source(tmp_path)
    vol = next(iter(nnunet_source(tmp_path, mapping={1: "liver", 2: "liver"})))
    assert vol.modality == "ct" and vol.annotated == frozenset({1})
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "channel_names": {"0": "T2", "1": "ADC"}}))
    assert next(iter(nnunet_source(tmp_path, mapping={1: "liver"}))).modality == "mr"
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "channel_names": {"0": "CT", "1": "PET"}}))
    with pytest.raises(DataError, match="cannot tell CT from MR"):
        nnunet_source(tmp_path, mapping={1: "liver"})
    with pytest.raises(ValueError, match="split must be"):
        nnunet_source(tmp_path, split="Val")


def test_manifest_source(tmp_path: Path) -> None:
    img1, lab1 = tiny_pair(tmp_path / "a", "1")
    img2, _ = tiny_pair(tmp_path / "b", "2")
    (tmp_path / "m.csv").write_text(
        "image,label,modality,patient_id,site,mapping\n"
        "a/image_1.nii.gz,a/label_1.nii.gz,MR,p1,north,chaos_mr\n"
        "b/image_2.nii.gz,,ct,p2,,\n"
        "b/image_2.nii.gz,,ct,p2,south,\n"
    )
    src = manifest_source(tmp_path / "m.csv")
    assert [(c.case_id, c.modality, c.site) for c in src.cases()] == [("p1", "mr", "north"), ("p2#1", "ct", None), ("p2#2", "ct", "south")]
    vols = list(src)
    assert vols[0].annotated == frozenset({1, 2, 3, 4}) and vols[1].labels is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("image,modality\nx.nii.gz,ct\n", r"missing column\(s\) \['patient_id'\]"),
        ("image,modality,patient_id\nmissing.nii.gz,ct,p\n", r"line 2: .*missing\.nii\.gz does not exist"),
        ("image,modality,patient_id\na/image_1.nii.gz,pet,p\n", "line 2: modality must be one of"),
        ("image,label,modality,patient_id\na/image_1.nii.gz,a/label_1.nii.gz,mr,p\n", "line 2: labelled row without a mapping"),
        ("image,modality,patient_id\n", "no rows"),
        ("image,modality,patient_id\na/image_1.nii.gz,mr,\n", "empty patient_id"),
    ],
)
def test_manifest_errors(tmp_path: Path, body: str, message: str) -> None:
    tiny_pair(tmp_path / "a", "1")
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        manifest_source(tmp_path / "m.csv")


def test_png_slices_layout(tmp_path: Path) -> None:
    for pid, sid, n in (("10001", "200", 3), ("10002", "300", 2)):
        folder = tmp_path / pid / sid
        folder.mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((4, 5), 51 * (k + 1), dtype=np.uint8)).save(folder / f"{k * 10 + 5}.png")
    src = PngSliceSource(tmp_path)
    assert len(src) == 2 and src.num_slices() == 5
    slices = list(src.iter_slices())
    assert [(s.patient_id, s.slice_index) for s in slices] == [("10001", 0), ("10001", 1), ("10001", 2), ("10002", 0), ("10002", 1)]
    assert slices[0].image.shape == (1, 4, 5) and slices[2].image[0, 0, 0] == pytest.approx(153 / 255)
    vol = next(iter(src))
    assert vol.shape == (3, 4, 5) and vol.labels is None and vol.case_id == "10001/200"
    np.testing.assert_allclose(vol.image[:, 0, 0], [0.2, 0.4, 0.6], rtol=1e-6)
    (tmp_path / "10002" / "300" / "99.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"99\.png: cannot read PNG"):
        list(PngSliceSource(tmp_path).iter_slices())
    with pytest.raises(ValueError, match="scale must be"):
        PngSliceSource(tmp_path, scale="auto")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ bad input


def _load_pair(image: Path, label: Path | None, mapping: str = "chaos_mr", **kw: object) -> Volume:
    return next(iter(pair_source(image, label, "p", "mr", mapping if label else None, **kw)))  # type: ignore[arg-type]


def test_truncated_nifti_names_file(tmp_path: Path) -> None:
    img, lab = tiny_pair(tmp_path)
    blob = img.read_bytes()
    img.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"image_1\.nii\.gz: cannot read NIfTI .*truncated"):
        _load_pair(img, lab)


def test_image_label_shape_mismatch(tmp_path: Path) -> None:
    img, _ = tiny_pair(tmp_path)
    lab = write_nifti(tmp_path / "label_x.nii.gz", np.ones((12, 10, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape mismatch: .*image_1\.nii\.gz is \(4, 10, 12\), .*label_x\.nii\.gz is \(5, 10, 12\)"):
        _load_pair(img, lab)


def test_label_value_outside_mapping(tmp_path: Path) -> None:
    img, _ = tiny_pair(tmp_path)
    bad = np.zeros((12, 10, 4), dtype=np.uint8)
    bad[0, 0, 0], bad[1, 1, 1] = 1, 7
    lab = write_nifti(tmp_path / "label_bad.nii.gz", bad)
    with pytest.raises(DataError, match=r"label_bad\.nii\.gz: label values \[7\] are not in mapping 'chaos_mr'"):
        _load_pair(img, lab)


def test_empty_label_map(tmp_path: Path) -> None:
    img, _ = tiny_pair(tmp_path)
    lab = write_nifti(tmp_path / "label_empty.nii.gz", np.zeros((12, 10, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"label_empty\.nii\.gz: empty label map"):
        _load_pair(img, lab)
    assert _load_pair(img, lab, allow_empty_labels=True).organ_voxels() == {}


def test_nan_voxels(tmp_path: Path) -> None:
    data = np.ones((12, 10, 4))
    data[3, 3, 3] = np.nan
    data[4, 4, 2] = np.inf
    img = write_nifti(tmp_path / "image_nan.nii.gz", data)
    with pytest.raises(DataError, match=r"image_nan\.nii\.gz.*2 NaN/inf voxels"):
        _load_pair(img, None)


def test_spacing_mismatch(tmp_path: Path) -> None:
    img, _ = tiny_pair(tmp_path)
    aff = LAS.copy()
    aff[2, 2] = 2.5  # label resampled to 2.5 mm slices
    lab = write_nifti(tmp_path / "label_sp.nii.gz", np.ones((12, 10, 4), dtype=np.uint8), aff)
    with pytest.raises(DataError, match=r"spacing mismatch: .*image_1\.nii\.gz has .*\[5\.0, 2\.0, 2\.0\].*label_sp\.nii\.gz has \[2\.5, 2\.0, 2\.0\]"):
        _load_pair(img, lab)


def test_origin_mismatch(tmp_path: Path) -> None:
    img, _ = tiny_pair(tmp_path)
    aff = LAS.copy()
    aff[0, 3] += 10.0
    lab = write_nifti(tmp_path / "label_o.nii.gz", np.ones((12, 10, 4), dtype=np.uint8), aff)
    with pytest.raises(DataError, match="geometry mismatch"):
        _load_pair(img, lab)


def test_missing_files_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="NIfTI file not found"):
        read_nifti(tmp_path / "nope.nii.gz")
    with pytest.raises(ValueError, match="kind must be"):
        read_nifti(tmp_path / "nope.nii.gz", kind="mask")
    nib.save(nib.Nifti1Image(np.zeros((3, 3)), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(DataError, match="expected a 3D volume"):
        read_nifti(tmp_path / "flat.nii.gz")
    with pytest.raises(DataError, match="CHAOS folder not found"):
        chaos_source(tmp_path / "none")
    with pytest.raises(DataError, match="no image_<id>"):
        chaos_source(tmp_path)
    with pytest.raises(ValueError, match="mapping is required with a label file"):
        CaseRef("p", "ct", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")
    with pytest.raises(ValueError, match="modality must be one of"):
        CaseRef("p", "pet", tmp_path / "a.nii.gz")  # type: ignore[arg-type]


def test_volume_validation() -> None:
    img = np.zeros((2, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="image must be float32"):
        Volume(img.astype(np.float64), None, (1, 1, 1), "p", "ct")
    with pytest.raises(ValueError, match="3D array"):
        Volume(img[0], None, (1, 1, 1), "p", "ct")
    with pytest.raises(DataError, match="labels shape"):
        Volume(img, np.zeros((2, 3, 5), np.uint8), (1, 1, 1), "p", "ct")
    with pytest.raises(ValueError, match="labels must be uint8"):
        Volume(img, np.zeros((2, 3, 4), np.int32), (1, 1, 1), "p", "ct")
    with pytest.raises(ValueError, match="annotated must be empty"):
        Volume(img, None, (1, 1, 1), "p", "ct", annotated=frozenset({1}))
    with pytest.raises(ValueError, match="annotated organ ids must be in 1..7"):
        Volume(img, np.zeros((2, 3, 4), np.uint8), (1, 1, 1), "p", "ct", annotated=frozenset({0}))
    with pytest.raises(DataError, match="spacing must be three positive"):
        Volume(img, None, (1, 0, 1), "p", "ct")
    with pytest.raises(ValueError, match="affine must be"):
        Volume(img, None, (1, 1, 1), "p", "ct", affine=np.eye(3))
    assert Volume(img, None, (1, 1, 1), "p", "MRI").modality == "mr"
