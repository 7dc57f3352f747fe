"""Tests of the built-in abdomen phantom (anatomy, CT and MR rendering, cohort API)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from fedsilo.data.labels import ORGAN_IDS, ORGANS
from fedsilo.data.phantoms import _geometry as geo
from fedsilo.data.phantoms.abdomen import (
    AbdomenAnatomy,
    PhantomVolume,
    Tissue,
    generate_anatomy,
    phantom_patient,
    render_ct,
    render_mr,
)
from fedsilo.data.phantoms.abdomen_render import _bias_field

SMALL = (16, 64, 64)


@pytest.fixture(scope="module")
def anatomy() -> AbdomenAnatomy:
    return generate_anatomy(11)


@pytest.fixture(scope="module")
def small() -> AbdomenAnatomy:
    return generate_anatomy(5, SMALL)


# --- geometry helpers, hand-checked ---------------------------------------------------------

def _line_grid(values: list[float], axis: int) -> geo.Grid:
    """A 1-voxel-thick grid whose coordinate along ``axis`` takes ``values``, others 0."""
    n = len(values)
    shape = [1, 1, 1]
    shape[axis] = n
    coords = [np.zeros(shape, np.float32) for _ in range(3)]
    coords[axis] = np.asarray(values, np.float32).reshape(shape)
    return geo.Grid((1.0, 1.0, 1.0), *coords, max_shift=1e3)


def test_ellipsoid_field_values() -> None:
    grid = _line_grid([0.0, 3.0, 6.0, 9.0], axis=2)  # points along x
    _, f = geo.ellipsoid(grid, (0.0, 0.0, 0.0), (10.0, 5.0, 3.0))
    # |q| = x / 3 along x; field = (|q| - 1) * min(semi) = x - 3
    np.testing.assert_allclose(f.ravel(), [-3.0, 0.0, 3.0, 6.0], atol=1e-5)


def test_tube_field_values() -> None:
    grid = _line_grid([0.0, 5.0, 12.0], axis=1)  # points along y, at z = x = 0
    _, f = geo.tube(grid, [(0.0, 0.0, -10.0), (0.0, 0.0, 10.0)], [2.0, 2.0])
    np.testing.assert_allclose(f.ravel(), [-2.0, 3.0, 10.0], atol=1e-5)
    grid_z = _line_grid([10.0], axis=0)  # 10 mm above a segment along x, z distances halved
    _, fz = geo.tube(grid_z, [(0.0, 0.0, -5.0), (0.0, 0.0, 5.0)], [2.0, 2.0], z_scale=0.5)
    np.testing.assert_allclose(fz.ravel(), [3.0], atol=1e-5)


def test_smooth_min_values() -> None:
    a = np.array([0.0, 0.0, 5.0])
    b = np.array([0.0, 10.0, 1.0])
    # equal -> a - k/4; far apart (|a - b| >= k) -> exact minimum
    np.testing.assert_allclose(geo.smooth_min(a, b, 4.0), [-1.0, 0.0, 1.0])


def test_smooth_field_is_unit_variance_and_resolution_free() -> None:
    fine = [geo.axis_centres(16, 12.5), geo.axis_centres(64, 5.0), geo.axis_centres(64, 5.0)]
    coarse = [c[::2] for c in fine]  # every other point of the same positions
    extent = (200.0, 320.0, 320.0)
    fa = geo.smooth_field(np.random.default_rng(0), coarse, extent, 40.0)
    fb = geo.smooth_field(np.random.default_rng(0), fine, extent, 40.0)
    assert fa.shape == (8, 32, 32) and fa.dtype == np.float32
    assert 0.6 < fb.std() < 1.4
    # the same draw is the same continuous field, whatever points it is sampled at
    np.testing.assert_allclose(fa, fb[::2, ::2, ::2], atol=1e-5)


# --- anatomy ---------------------------------------------------------------------------------

def test_anatomy_shapes_dtypes_spacing(small: AbdomenAnatomy) -> None:
    assert small.shape == SMALL
    assert small.labels.dtype == np.uint8 and small.tissue.dtype == np.uint8
    assert small.labels.shape == small.tissue.shape == SMALL
    dz, dy, dx = small.spacing
    assert dy == dx and 180.0 <= dz * SMALL[0] <= 220.0  # always spans kidneys to liver dome
    assert 300.0 < dx * SMALL[2] < 450.0
    assert small.labels.max() < len(ORGANS) and small.tissue.max() < len(Tissue)


def test_anatomy_is_deterministic() -> None:
    a, b, c = generate_anatomy(3, SMALL), generate_anatomy(3, SMALL), generate_anatomy(4, SMALL)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.tissue, b.tissue)
    assert a.spacing == b.spacing
    assert not np.array_equal(a.labels, c.labels)


def test_anatomy_is_resolution_independent() -> None:
    lo, hi = generate_anatomy(8, (16, 64, 64)), generate_anatomy(8, (16, 128, 128))
    for organ in range(1, len(ORGANS)):
        v_lo = (lo.labels == organ).sum() * np.prod(lo.spacing)
        v_hi = (hi.labels == organ).sum() * np.prod(hi.spacing)
        assert v_lo == pytest.approx(v_hi, rel=0.25), ORGANS[organ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_organ_present_with_realistic_size_order(seed: int) -> None:
    an = generate_anatomy(seed)
    ml = np.bincount(an.labels.ravel(), minlength=len(ORGANS)) * np.prod(an.spacing) / 1000.0
    assert (ml[1:] > 5.0).all(), dict(zip(ORGANS, ml))
    liver = ml[ORGAN_IDS["liver"]]
    small_ones = ml[[ORGAN_IDS["pancreas"], ORGAN_IDS["gallbladder"]]]
    mid = ml[[ORGAN_IDS[o] for o in ("right_kidney", "left_kidney", "spleen", "stomach")]]
    assert 1000.0 < liver < 3000.0
    assert liver > 4.0 * mid.max()
    assert small_ones.max() < mid.min()


def test_organs_lie_inside_body_and_match_tissue(anatomy: AbdomenAnatomy) -> None:
    body = np.stack([binary_fill_holes(s) for s in anatomy.tissue != Tissue.AIR])
    organs = anatomy.labels > 0
    assert not (organs & ~body).any()
    # organs keep off the in-plane border of the field of view
    assert not organs[:, [0, -1], :].any() and not organs[:, :, [0, -1]].any()
    lab, tis = anatomy.labels, anatomy.tissue
    for tissue, organ in ((Tissue.LIVER, "liver"), (Tissue.SPLEEN, "spleen"),
                          (Tissue.PANCREAS, "pancreas"), (Tissue.BILE, "gallbladder")):
        assert (lab[tis == tissue] == ORGAN_IDS[organ]).all()
    kidney = np.isin(tis, [Tissue.KIDNEY, Tissue.MEDULLA])
    assert np.isin(lab[kidney], [ORGAN_IDS["right_kidney"], ORGAN_IDS["left_kidney"]]).all()


def test_anatomy_orientation(anatomy: AbdomenAnatomy) -> None:
    """Liver on the image left (patient right), spine posterior (bottom rows), kidneys low."""
    def centroid(organ: str) -> np.ndarray:
        return np.argwhere(anatomy.labels == ORGAN_IDS[organ]).mean(axis=0)

    d, h, w = anatomy.shape
    assert centroid("liver")[2] < w / 2 < centroid("spleen")[2]
    assert centroid("right_kidney")[2] < w / 2 < centroid("left_kidney")[2]
    assert centroid("liver")[0] > centroid("right_kidney")[0]  # liver above the kidney
    bone = np.argwhere(anatomy.tissue == Tissue.MARROW).mean(axis=0)
    assert bone[1] > centroid("stomach")[1]  # spine behind the stomach


# --- rendering ---------------------------------------------------------------------------------

def _median(img: np.ndarray, an: AbdomenAnatomy, tissue: Tissue) -> float:
    return float(np.median(img[an.tissue == tissue]))


def test_render_ct_values(anatomy: AbdomenAnatomy) -> None:
    ct = render_ct(anatomy, 0)
    assert ct.dtype == np.float32 and ct.shape == anatomy.shape
    assert -1024.0 <= ct.min() and ct.max() <= 3071.0
    liver = ct[anatomy.labels == ORGAN_IDS["liver"]].mean()
    assert 45.0 < liver < 75.0  # unenhanced liver 55-65 HU, +- patient offset and vessels
    assert -125.0 < _median(ct, anatomy, Tissue.FAT) < -75.0
    assert ct[0, :3, :3].mean() < -950.0  # air in the corner
    assert _median(ct, anatomy, Tissue.MARROW) > 150.0
    venous = render_ct(anatomy, 0, phase="venous")
    assert venous[anatomy.labels == ORGAN_IDS["liver"]].mean() > liver + 25.0
    assert _median(venous, anatomy, Tissue.ARTERY) > 120.0
    np.testing.assert_array_equal(ct, render_ct(anatomy, 0))


def test_mr_organ_order_differs_from_ct(anatomy: AbdomenAnatomy) -> None:
    ct, t2, t1 = render_ct(anatomy, 1), render_mr(anatomy, 1), render_mr(anatomy, 1, "t1")
    for img in (t2, t1):
        assert img.dtype == np.float32 and img.shape == anatomy.shape and img.min() >= 0.0
    med = {name: {t: _median(img, anatomy, t) for t in Tissue if (anatomy.tissue == t).any()}
           for name, img in (("ct", ct), ("t2", t2), ("t1", t1))}
    assert med["ct"][Tissue.LIVER] > med["ct"][Tissue.SPLEEN]
    assert med["t2"][Tissue.LIVER] < med["t2"][Tissue.SPLEEN]  # ordering flips
    assert med["ct"][Tissue.BILE] < med["ct"][Tissue.KIDNEY] < med["ct"][Tissue.LIVER]
    assert med["t2"][Tissue.BILE] > med["t2"][Tissue.KIDNEY] > med["t2"][Tissue.LIVER]
    assert med["t1"][Tissue.FAT] > med["t1"][Tissue.LIVER] > med["t1"][Tissue.SPLEEN]
    assert med["t1"][Tissue.BILE] < med["t1"][Tissue.MUSCLE]
    assert med["ct"][Tissue.FAT] < med["ct"][Tissue.MUSCLE]
    assert med["t1"][Tissue.FAT] > med["t1"][Tissue.MUSCLE]


def test_mr_background_is_rician(anatomy: AbdomenAnatomy) -> None:
    t2 = render_mr(anatomy, 2)
    corner = t2[:, :4, :4]
    assert (corner > 0).all()  # magnitude of complex noise: positive, not zero-mean
    liver = t2[anatomy.labels == ORGAN_IDS["liver"]].mean()
    assert corner.mean() < 0.2 * liver


def test_bias_field_is_smooth_and_nontrivial(small: AbdomenAnatomy) -> None:
    bias = _bias_field(np.random.default_rng(0), small)
    assert bias.shape == SMALL and (bias > 0).all()
    log_b = np.log(bias)
    assert log_b.max() - log_b.min() > 0.1  # at least ~10% intensity variation
    dz, dy, dx = small.spacing
    steps = (np.abs(np.diff(log_b, axis=0)).max() / dz, np.abs(np.diff(log_b, axis=1)).max() / dy,
             np.abs(np.diff(log_b, axis=2)).max() / dx)
    assert max(steps) < 0.01  # under 1% per mm: no edges


# --- cohort API ----------------------------------------------------------------------------------

def test_phantom_patient_fields_and_determinism() -> None:
    ct = phantom_patient(7, modality="ct", seed=3, shape=SMALL)
    assert isinstance(ct, PhantomVolume)
    assert ct.patient_id == "phantom-ct-0007" and ct.modality == "ct" and ct.contrast == "native"
    assert ct.image.shape == ct.labels.shape == SMALL and ct.image.dtype == np.float32
    again = phantom_patient(7, modality="ct", seed=3, shape=SMALL)
    np.testing.assert_array_equal(ct.image, again.image)
    mr = phantom_patient(7, modality="mr", seed=3, shape=SMALL)
    assert mr.patient_id == "phantom-mr-0007" and mr.contrast == "t2"
    assert not np.array_equal(ct.labels, mr.labels)  # unpaired: another patient
    assert not np.array_equal(ct.labels, phantom_patient(8, modality="ct", seed=3,
                                                         shape=SMALL).labels)
    t1 = phantom_patient(7, modality="mr", seed=3, shape=SMALL, contrast="t1")
    np.testing.assert_array_equal(t1.labels, mr.labels)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate_anatomy(-1), "seed must be a non-negative int, got -1"),
        (lambda: generate_anatomy(True), "seed must be a non-negative int, got True"),
        (lambda: generate_anatomy(1.5), "seed must be a non-negative int, got 1.5"),
        (lambda: generate_anatomy(0, (32, 128)), "shape must be a tuple of 3 ints"),
        (lambda: generate_anatomy(0, (32.0, 128, 128)), "shape must be a tuple of 3 ints"),
        (lambda: generate_anatomy(0, (4, 128, 128)),
         r"shape\[0\] \(D\) must be in \[8, 128\], got 4"),
        (lambda: generate_anatomy(0, (32, 16, 128)),
         r"shape\[1\] \(H\) must be in \[32, 512\], got 16"),
        (lambda: generate_anatomy(0, (32, 128, 600)),
         r"shape\[2\] \(W\) must be in \[32, 512\], got 600"),
        (lambda: render_ct(np.zeros((2, 2, 2)), 0),
         "anatomy must be an AbdomenAnatomy, got ndarray"),
        (lambda: render_mr("x", 0), "anatomy must be an AbdomenAnatomy, got str"),
    ],
)
def test_value_errors_anatomy(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_value_errors_render(small: AbdomenAnatomy) -> None:
    with pytest.raises(ValueError,
                       match=r"phase must be one of \('native', 'venous'\), got 'arterial'"):
        render_ct(small, 0, phase="arterial")
    with pytest.raises(ValueError, match=r"contrast must be one of \('t2', 't1'\), got 'flair'"):
        render_mr(small, 0, contrast="flair")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -3"):
        render_ct(small, -3)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got None"):
        render_mr(small, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index": -1}, "index must be a non-negative int, got -1"),
        ({"index": False}, "index must be a non-negative int, got False"),
        ({"modality": "pet"}, r"modality must be one of \('ct', 'mr'\), got 'pet'"),
        ({"seed": -2}, "seed must be a non-negative int, got -2"),
        ({"shape": (8, 8, 8)}, r"shape\[1\] \(H\) must be in \[32, 512\], got 8"),
        ({"contrast": "t2"},
         r"contrast for modality 'ct' must be one of \('native', 'venous'\), got 't2'"),
        ({"modality": "mr", "contrast": "venous"},
         r"contrast for modality 'mr' must be one of \('t2', 't1'\), got 'venous'"),
    ],
)
def test_value_errors_phantom_patient(kwargs: dict, message: str) -> None:
    args = {"index": 0, "modality": "ct", "seed": 0, "shape": SMALL} | kwargs
    index = args.pop("index")
    with pytest.raises(ValueError, match=message):
        phantom_patient(index, **args)
