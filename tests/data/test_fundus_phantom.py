"""Tests for the fundus phantom (fedsilo.data.phantoms.fundus and its helper modules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.data.phantoms.fundus import (
    LESION_TYPES,
    fundus_phantom_dataset,
    generate_fundus,
)
from fedsilo.data.phantoms.fundus_anatomy import GEOMETRY_STEP, VEIN, random_walks, sample_eye, sample_vessel_tree
from fedsilo.data.phantoms.fundus_render import splat
from fedsilo.data.phantoms.fundus_style import CameraStyle, apply_camera_style, camera_styles

GRADES = np.array([0, 1, 2, 3, 4])


# ---------------------------------------------------------------- shapes, determinism


@pytest.mark.parametrize("size", [28, 64, 256])
def test_shape_dtype_and_dark_corners(size: int) -> None:
    n = 2 if size == 256 else 5
    images = generate_fundus(GRADES[:n], size, seed=0)
    assert images.shape == (n, size, size, 3)
    assert images.dtype == np.uint8
    k = max(2, size // 16)
    corners = np.concatenate([images[:, :k, :k], images[:, :k, -k:], images[:, -k:, :k], images[:, -k:, -k:]], axis=1)
    assert corners.max() < 40, "the corners outside the circular field of view must be dark"
    c = size // 2
    centre = images[:, c - size // 8 : c + size // 8, c - size // 8 : c + size // 8].astype(float).mean(axis=(1, 2))
    assert np.all(centre[:, 0] > 60), "the retina inside the field of view is bright red-orange"
    assert np.all(centre[:, 0] > centre[:, 1]) and np.all(centre[:, 1] > centre[:, 2]), "R > G > B on the retina"


def test_same_seed_same_images_other_seed_other_images() -> None:
    a = generate_fundus(GRADES, 32, seed=7)
    b = generate_fundus(GRADES, 32, seed=7)
    c = generate_fundus(GRADES, 32, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({im.tobytes() for im in a}) == 5, "every image differs"


def test_image_i_does_not_depend_on_n_or_on_other_images() -> None:
    full = generate_fundus(np.array([3, 1, 4, 0, 2, 2]), 32, seed=1)
    np.testing.assert_array_equal(generate_fundus(np.array([3, 1]), 32, seed=1), full[:2])
    other = generate_fundus(np.array([0, 1, 0]), 32, seed=1)  # image 0 changes grade, image 1 does not
    np.testing.assert_array_equal(other[1], full[1])
    assert not np.array_equal(other[0], full[0])


def test_empty_request() -> None:
    assert generate_fundus(np.zeros(0, dtype=np.int64), 28, seed=0).shape == (0, 28, 28, 3)
    images, grades, cams = fundus_phantom_dataset(0, 28, seed=0)
    assert images.shape == (0, 28, 28, 3) and grades.shape == (0,) and cams.shape == (0,)


def test_same_eye_at_every_resolution() -> None:
    """Anatomy and lesions do not depend on the size: 256 px block-averaged to 64 px matches 64 px."""
    big = generate_fundus(np.array([3]), 256, seed=4, style=CameraStyle(noise=0.0, blur=0.0))[0].astype(float)
    small = generate_fundus(np.array([3]), 64, seed=4, style=CameraStyle(noise=0.0, blur=0.0))[0].astype(float)
    down = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.corrcoef(down.ravel(), small.ravel())[0, 1] > 0.97
    assert np.abs(down - small).mean() < 8.0


def test_dataset_is_prefix_stable_and_follows_weights() -> None:
    images, grades, cams = fundus_phantom_dataset(12, 28, seed=3, n_cameras=3)
    small = fundus_phantom_dataset(5, 28, seed=3, n_cameras=3)
    np.testing.assert_array_equal(small[0], images[:5])
    np.testing.assert_array_equal(small[1], grades[:5])
    np.testing.assert_array_equal(small[2], cams[:5])
    assert grades.dtype == np.int64 and cams.dtype == np.int64
    assert set(cams.tolist()) <= {0, 1, 2}
    only = fundus_phantom_dataset(6, 28, seed=3, grade_weights=(0, 0, 0, 1, 0))[1]
    np.testing.assert_array_equal(only, np.full(6, 3))


def test_dataset_label_frequencies_and_dark_corners_for_every_camera() -> None:
    images, grades, cams = fundus_phantom_dataset(400, 28, seed=5, grade_weights=(1, 0, 1, 0, 2), n_cameras=4)
    corners = images[:, [0, 0, 1, -1, -1, -2], [0, -1, 0, 0, -1, -1]]
    assert corners.max() < 40
    counts = np.bincount(grades, minlength=5)
    assert counts[1] == 0 and counts[3] == 0
    assert abs(counts[4] / 400 - 0.5) < 0.08 and abs(counts[0] / 400 - 0.25) < 0.07
    assert set(np.unique(cams).tolist()) == {0, 1, 2, 3}


# ---------------------------------------------------------------- lesions and grades


def test_lesion_pixels_grow_with_grade() -> None:
    n = 12
    fractions = []
    for g in range(5):
        _, masks = generate_fundus(np.full(n, g), 64, seed=2, return_lesions=True)
        assert masks.shape == (n, 64, 64) and masks.dtype == np.uint8
        fractions.append((masks > 0).mean())
        if g == 0:
            assert masks.max() == 0, "grade 0: no apparent retinopathy"
        elif g == 1:
            assert set(np.unique(masks).tolist()) == {0, LESION_TYPES.index("microaneurysm")}, "grade 1: MAs only"
            assert np.all((masks > 0).any(axis=(1, 2))), "every grade-1 image has at least one microaneurysm"
    assert all(a < b for a, b in zip(fractions, fractions[1:])), f"lesion fraction per grade {fractions}"


def test_lesion_types_per_grade() -> None:
    _, masks = generate_fundus(np.full(10, 4), 64, seed=6, return_lesions=True)
    found = {LESION_TYPES[k] for k in np.unique(masks)}
    assert {"neovascularisation", "haemorrhage", "microaneurysm"} <= found
    _, masks = generate_fundus(np.full(10, 2), 64, seed=6, return_lesions=True)
    found = {LESION_TYPES[k] for k in np.unique(masks)}
    assert "haemorrhage" in found and "neovascularisation" not in found and "irma" not in found


def test_lesions_change_the_image_of_the_same_eye() -> None:
    """Grade 0 and grade 3 of image i are the same eye (same anatomy), grade 3 is darker where it bleeds."""
    style = CameraStyle(noise=0.0)
    healthy = generate_fundus(np.array([0]), 64, seed=9, style=style)[0].astype(float)
    sick, mask = generate_fundus(np.array([3]), 64, seed=9, style=style, return_lesions=True)
    sick = sick[0].astype(float)
    haem = mask[0] == LESION_TYPES.index("haemorrhage")
    assert haem.sum() > 5
    assert sick[haem, 1].mean() < healthy[haem, 1].mean() - 5, "haemorrhages darken the green channel"
    assert np.corrcoef(healthy[~(mask[0] > 0)].ravel(), sick[~(mask[0] > 0)].ravel())[0, 1] > 0.95


# ---------------------------------------------------------------- camera styles


def test_apply_camera_style_by_hand() -> None:
    image = np.full((2, 2, 3), 0.2)
    radius, fov = np.zeros((2, 2)), np.ones((2, 2))
    rng = np.random.default_rng(0)
    black = np.array([0.015, 0.025, 0.045])  # camera black level
    plain = CameraStyle(gains=(1.5, 1.0, 0.5), vignetting=0.0, blur=0.0, noise=0.0)
    out = apply_camera_style(image, radius, fov, plain, rng)
    np.testing.assert_allclose(out[0, 0], np.array([0.3, 0.2, 0.1]) + black)
    contrast = CameraStyle(vignetting=0.0, blur=0.0, noise=0.0, contrast=2.0)  # 0.35 + 2 * (0.2 - 0.35) = 0.05
    np.testing.assert_allclose(apply_camera_style(image, radius, fov, contrast, rng)[0, 0], 0.05 + black)
    vignette = CameraStyle(vignetting=0.5, blur=0.0, noise=0.0, brightness=2.0)  # 0.4 at r=0, 0.2 at the rim
    mask = np.array([[1.0, 1.0], [1.0, 0.0]])  # outside the field of view only the black level is left
    out = apply_camera_style(image, np.array([[0.0, 1.0], [0.0, 1.0]]), mask, vignette, rng)
    np.testing.assert_allclose(out[0, :, 0], [0.415, 0.215])
    np.testing.assert_allclose(out[1, 1], black)
    noisy = apply_camera_style(np.zeros((256, 256, 3)), np.zeros((256, 256)), np.ones((256, 256)),
                               CameraStyle(noise=0.02, blur=0.0), rng)  # fmt: skip
    assert noisy[..., 2].std() == pytest.approx(0.02, rel=0.05)


def test_camera_styles_are_distinct_reproducible_and_prefix_stable() -> None:
    styles = camera_styles(4, seed=3)
    assert len(styles) == 4 and len(set(styles)) == 4
    assert camera_styles(4, seed=3) == styles
    assert camera_styles(2, seed=3) == styles[:2]
    assert camera_styles(4, seed=4) != styles
    assert CameraStyle() == CameraStyle(gains=(1, 1, 1))  # neutral default, gains normalised to floats


def test_camera_styles_change_mean_colour() -> None:
    grades = np.array([0, 2, 3, 1, 0, 4])
    red = CameraStyle(gains=(1.3, 1.0, 0.7))
    blue = CameraStyle(gains=(0.8, 1.0, 1.3))
    both = generate_fundus(np.tile(grades, 2), 48, seed=0, styles=[red, blue], style_ids=np.repeat([0, 1], 6))
    neutral = generate_fundus(grades, 48, seed=0).astype(float).mean(axis=(0, 1, 2))
    m_red = both[:6].astype(float).mean(axis=(0, 1, 2))
    m_blue = both[6:].astype(float).mean(axis=(0, 1, 2))
    assert m_red[0] / m_red[2] > neutral[0] / neutral[2] > m_blue[0] / m_blue[2]
    assert m_red[0] > neutral[0] + 5 and m_blue[2] > neutral[2] + 3
    sites = camera_styles(3, seed=1)
    per_site = [
        generate_fundus(grades, 48, seed=0, style=s).astype(float).mean(axis=(0, 1, 2)) for s in sites
    ]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(per_site[i] - per_site[j]).max() > 2.0, "sites must differ in mean colour"


# ---------------------------------------------------------------- anatomy and rendering internals


def test_eye_geometry_right_and_left_eyes() -> None:
    eyes = [sample_eye(np.random.default_rng(s)) for s in range(40)]
    assert {e.side for e in eyes} == {-1, 1}
    for e in eyes:
        dist = np.hypot(*(e.fovea - e.disc))
        assert 2.2 < dist / e.disc_diameter < 2.8, "fovea about 2.5 disc diameters from the disc"
        assert np.sign(e.disc[0] - e.fovea[0]) == e.side, "side +1: disc right of the fovea"
        assert e.fovea[1] > e.disc[1], "the fovea lies slightly below the disc"
        assert np.hypot(*e.disc) + e.disc_radius < 1.0, "the disc is inside the field of view"


def test_vessel_tree_veins_wider_than_arteries_inside_fov() -> None:
    eye = sample_eye(np.random.default_rng(0))
    trunks, branches, twigs = sample_vessel_tree(eye, np.random.default_rng(1))
    assert trunks.n >= 8 and branches.n > trunks.n
    vein = trunks.width[trunks.kind == VEIN, 0].mean()
    artery = trunks.width[trunks.kind != VEIN, 0].mean()
    assert vein > 1.2 * artery
    for w in (trunks, branches, twigs):
        pts = w.xy[w.valid]
        assert np.hypot(pts[:, 0], pts[:, 1]).max() <= 1.0 + 1e-9
        assert np.hypot(*(pts - eye.fovea).T).min() > 0.25 * eye.disc_diameter, "vessels spare the fovea"


def test_random_walk_without_noise_is_a_straight_line_stopped_by_the_fov() -> None:
    rng = np.random.default_rng(0)
    w = random_walks(
        rng, np.array([[0.0, 0.005]]), np.array([math.pi / 2]), np.array([2.0]), np.array([0.02]),
        np.array([VEIN]), tortuosity=np.array([0.0]),
    )  # fmt: skip
    k = np.arange(w.xy.shape[1])
    np.testing.assert_allclose(w.xy[0, :, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(w.xy[0, :, 1], 0.005 + k * GEOMETRY_STEP, atol=1e-12)
    assert w.valid[0].sum() == 100 and w.valid[0, :100].all()  # y = 0.005 ... 0.995 lies inside the FOV
    np.testing.assert_allclose(w.width[0, 0], 0.02)
    np.testing.assert_allclose(w.width[0, 100], 0.02 * (1 - 0.5 * 1.0 / 2.0))


def test_splat_by_hand() -> None:
    out = splat((2, 5, 5), np.array([2.5]), np.array([2.5]), np.array([0.6]), np.array([1.0]), np.array([1]))
    assert out[0].max() == 0.0
    assert out[1, 2, 2] == pytest.approx(1.0)
    assert out[1, 2, 3] == pytest.approx(math.exp(-1.0 / (2 * 0.36)))
    assert out[1, 1, 1] == pytest.approx(math.exp(-2.0 / (2 * 0.36)))
    edge = splat((1, 3, 3), np.array([0.5]), np.array([0.5]), np.array([0.6]), np.array([2.0]), np.array([0]))
    assert edge[0, 0, 0] == pytest.approx(2.0) and edge.shape == (1, 3, 3)  # taps off the image are dropped


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grades": np.zeros((2, 2), dtype=int)}, "grades must be a 1-D array"),
        ({"grades": np.array([0.0, 1.0])}, "grades must be integers"),
        ({"grades": np.array([0, 5])}, "grades must be in 0..4"),
        ({"grades": np.array([-1, 2])}, "grades must be in 0..4"),
        ({"size": 27}, r"size must be an integer in \[28, 256\]"),
        ({"size": 257}, r"size must be an integer in \[28, 256\]"),
        ({"size": 64.0}, "size must be an integer"),
        ({"size": True}, "size must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"style": CameraStyle(), "styles": [CameraStyle()], "style_ids": np.zeros(2, int)}, "either style or styles"),
        ({"styles": [CameraStyle()]}, "styles and style_ids must be given together"),
        ({"style_ids": np.zeros(2, int)}, "styles and style_ids must be given together"),
        ({"styles": [], "style_ids": np.zeros(2, int)}, "styles must be a non-empty sequence"),
        ({"styles": ["camera"], "style_ids": np.zeros(2, int)}, "styles must be a non-empty sequence"),
        ({"styles": [CameraStyle()], "style_ids": np.zeros(3, int)}, r"style_ids must have shape \(2,\)"),
        ({"styles": [CameraStyle()], "style_ids": np.array([0, 1])}, r"style_ids must be integers in \[0, 1\)"),
        ({"styles": [CameraStyle()], "style_ids": np.array([0.0, 0.0])}, "style_ids must be integers"),
        ({"style": "neutral"}, "style must be a CameraStyle"),
        ({"return_lesions": "yes"}, "return_lesions must be a bool"),
    ],
)
def test_generate_fundus_rejects(kwargs: dict, match: str) -> None:
    args = {"grades": np.array([0, 1]), "size": 28, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        generate_fundus(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, "n must be a non-negative integer"),
        ({"n": 2.0}, "n must be a non-negative integer"),
        ({"size": 300}, "size must be an integer"),
        ({"seed": -3}, "seed must be a non-negative integer"),
        ({"grade_weights": (1, 1, 1, 1)}, "grade_weights must be 5 finite non-negative floats"),
        ({"grade_weights": (1, -1, 1, 1, 1)}, "grade_weights must be 5 finite non-negative floats"),
        ({"grade_weights": (0, 0, 0, 0, 0)}, "with a positive sum"),
        ({"grade_weights": (1, float("nan"), 1, 1, 1)}, "grade_weights must be 5 finite"),
        ({"n_cameras": 0}, "n_cameras must be an integer >= 1"),
        ({"n_cameras": 1.5}, "n_cameras must be an integer >= 1"),
    ],
)
def test_dataset_rejects(kwargs: dict, match: str) -> None:
    args = {"n": 2, "size": 28, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        fundus_phantom_dataset(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gains": (1.0, 1.0)}, "gains must be 3 finite floats in"),
        ({"gains": (1.0, 0.0, 1.0)}, r"gains must be 3 finite floats in \(0, 4\]"),
        ({"gains": (1.0, float("inf"), 1.0)}, "gains must be 3 finite floats"),
        ({"vignetting": 1.0}, r"vignetting must be in \[0, 1\), got 1.0"),
        ({"vignetting": -0.1}, r"vignetting must be in \[0, 1\)"),
        ({"blur": 0.06}, r"blur must be in \[0, 0.05\]"),
        ({"brightness": 0.0}, r"brightness must be in \(0, 4\]"),
        ({"contrast": 5.0}, r"contrast must be in \(0, 4\]"),
        ({"noise": 0.6}, r"noise must be in \[0, 0.5\]"),
        ({"noise": float("nan")}, r"noise must be in \[0, 0.5\]"),
    ],
)
def test_camera_style_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CameraStyle(**kwargs)


@pytest.mark.parametrize(("k", "seed", "match"), [(0, 0, "k must be an integer >= 1"), (2.0, 0, "k must be"),
                                                  (2, -1, "seed must be a non-negative integer")])  # fmt: skip
def test_camera_styles_rejects(k: int, seed: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        camera_styles(k, seed)
