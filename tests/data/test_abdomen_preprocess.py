"""CT/MR intensity normalisation, in-plane resampling, foreground crop."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.data.preprocess_volume import (
    CTIntensity,
    MRIntensity,
    PreprocessSettings,
    body_mask,
    normalize_intensity,
    preprocess_volume,
)
from fedsilo.data.sources import Volume
from helpers import make_volume, radiological_affine


def _vol(image: np.ndarray, labels: np.ndarray | None = None, modality: str = "ct", spacing=(5.0, 1.0, 1.0)) -> Volume:
    return make_volume(image, labels, modality=modality, spacing=spacing, annotated={1} if labels is not None else (),
                       affine=radiological_affine(spacing))


def test_ct_window_hand_checked() -> None:
    hu = np.array([-1000, -160, 40, 140, 240, 1000], dtype=np.float32).reshape(1, 1, 6)
    out = normalize_intensity(hu, "ct", PreprocessSettings())
    np.testing.assert_allclose(out.ravel(), [0, 0, 0.5, 0.75, 1, 1], atol=1e-6)
    sym = normalize_intensity(hu, "ct", PreprocessSettings(ct=CTIntensity(output="symmetric")))
    np.testing.assert_allclose(sym.ravel(), [-1, -1, 0, 0.5, 1, 1], atol=1e-6)
    liver = normalize_intensity(hu, "ct", PreprocessSettings(ct=CTIntensity(level=90, width=100)))
    np.testing.assert_allclose(liver.ravel(), [0, 0, 0, 1, 1, 1], atol=1e-6)
    assert out.dtype == np.float32


def test_mr_percentile_minmax_and_zscore() -> None:
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    # 0.5th / 99.5th percentiles of 0..999 are 4.995 and 994.005
    out = normalize_intensity(image, "mr", PreprocessSettings())
    assert out.min() == 0.0 and out.max() == 1.0
    assert out.ravel()[500] == pytest.approx((500 - 4.995) / (994.005 - 4.995), abs=1e-6)
    sym = normalize_intensity(image, "mr", PreprocessSettings(mr=MRIntensity(output="symmetric")))
    assert sym.min() == -1.0 and sym.max() == 1.0
    z = normalize_intensity(image, "mr", PreprocessSettings(mr=MRIntensity(method="zscore")))
    clipped = np.clip(np.arange(1000.0), 4.995, 994.005)
    np.testing.assert_allclose(z.ravel(), (clipped - clipped.mean()) / clipped.std(), atol=1e-4)
    untouched = normalize_intensity(image, "mr", PreprocessSettings(normalize=False))
    np.testing.assert_array_equal(untouched, image)


def test_resize_keeps_ids_spacing_and_world_position() -> None:
    image = np.zeros((3, 40, 40), dtype=np.float32)
    labels = np.zeros((3, 40, 40), dtype=np.uint8)
    labels[1, 8:16, 20:32] = 1
    labels[1, 30:34, 4:8] = 255
    vol = _vol(image, labels, spacing=(5.0, 1.0, 1.0))
    out = preprocess_volume(vol, PreprocessSettings(size=20))
    assert out.shape == (3, 20, 20) and out.spacing == (5.0, 2.0, 2.0)
    assert set(np.unique(out.labels)) == {0, 1, 255}
    assert out.organ_voxels() == {1: 4 * 6}

    def world_centroid(v: Volume) -> np.ndarray:
        idx = np.argwhere(v.labels == 1).mean(axis=0)
        return (v.affine @ np.append(idx, 1.0))[:3]

    np.testing.assert_allclose(world_centroid(out), world_centroid(vol), atol=1e-6)


def test_keep_aspect_pads_before_resizing() -> None:
    image = np.full((1, 10, 20), 5.0, dtype=np.float32)
    image[0, :, 10:] = 100.0
    labels = np.zeros((1, 10, 20), dtype=np.uint8)
    labels[0, 2:8, 4:10] = 1  # a 6 x 6 square
    settings = PreprocessSettings(size=10, ct=CTIntensity(level=50, width=100))
    out = preprocess_volume(_vol(image, labels), settings)
    assert out.shape == (1, 10, 10) and out.spacing == (5.0, 2.0, 2.0)
    rows, cols = np.nonzero(out.labels[0])
    assert rows.max() - rows.min() == cols.max() - cols.min() == 2  # still square, 3 x 3
    # 5 HU -> 0.05 and 100 HU -> 1 in the [0, 100] window; 5 pad rows (value: the minimum 0.05)
    # above and below, then 2x2 area averaging: row 2 mixes pad and image half and half.
    np.testing.assert_allclose(out.image[0, 0], [0.05] * 10, atol=1e-6)
    np.testing.assert_allclose(out.image[0, 2], [0.05] * 5 + [0.525] * 5, atol=1e-6)
    np.testing.assert_allclose(out.image[0, 5], [0.05] * 5 + [1.0] * 5, atol=1e-6)
    stretched = preprocess_volume(_vol(image, labels), PreprocessSettings(size=10, keep_aspect=False))
    rows, cols = np.nonzero(stretched.labels[0])
    assert rows.max() - rows.min() == 5 and cols.max() - cols.min() == 2
    assert stretched.spacing == (5.0, 1.0, 2.0)


def test_crop_foreground_largest_component_keeps_labels() -> None:
    image = np.full((2, 20, 20), -1000.0, dtype=np.float32)
    image[:, 5:10, 6:14] = 40.0  # body
    image[:, 18, 18] = 40.0  # a speck (e.g. part of the table): not the largest component
    labels = np.zeros((2, 20, 20), dtype=np.uint8)
    labels[0, 10, 13] = 1  # a label touching the body box edge is kept
    out = preprocess_volume(_vol(image, labels), PreprocessSettings(size=None, crop_foreground=True, foreground_margin=1))
    # body rows 5..9 and the label's row 10, +1 margin -> rows 4..11; body cols 6..13 -> 5..14
    assert out.shape == (2, 8, 10)
    assert out.organ_voxels() == {1: 1}
    # the affine moved with the crop: the first kept voxel (0, 0, 0) is old (0, 4, 5)
    np.testing.assert_allclose(out.affine @ [0, 0, 0, 1], _vol(image).affine @ [0, 4, 5, 1])
    mask = body_mask(normalize_intensity(image, "ct", PreprocessSettings()))
    assert mask.sum() == 5 * 8 and not mask[18, 18]


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="ct width must be > 0 HU, got 0"):
        CTIntensity(width=0)
    with pytest.raises(ValueError, match="ct output must be one of"):
        CTIntensity(output="byte")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mr percentiles must satisfy"):
        MRIntensity(lower_percentile=99, upper_percentile=1)
    with pytest.raises(ValueError, match="mr method must be"):
        MRIntensity(method="histogram")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mr output must be"):
        MRIntensity(output="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be an int >= 8 or None"):
        PreprocessSettings(size=4)
    with pytest.raises(ValueError, match="foreground_threshold must be in"):
        PreprocessSettings(foreground_threshold=1.0)
    with pytest.raises(ValueError, match="foreground_margin must be >= 0"):
        PreprocessSettings(foreground_margin=-1)
    with pytest.raises(ValueError, match="modality must be 'ct' or 'mr'"):
        normalize_intensity(np.zeros((1, 2, 2), np.float32), "pet", PreprocessSettings())
    assert PreprocessSettings().to_dict()["ct"] == {"level": 40.0, "width": 400.0, "output": "unit"}


def test_real_chaos_patient_to_128(shared_data) -> None:
    from fedsilo.data.sources import chaos_source

    src = chaos_source(shared_data / "chaos_mr_t2")
    vol = src.load(src.cases()[0])
    out = preprocess_volume(vol, PreprocessSettings(size=128))
    assert out.shape == (37, 128, 128) and out.spacing == (7.7, 2.5, 2.5)
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    ratio = {k: out.organ_voxels()[k] * 4 / n for k, n in vol.organ_voxels().items()}
    assert all(0.95 < r < 1.05 for r in ratio.values()), ratio
