"""Built-in fundus phantom: synthetic colour fundus photographs graded for diabetic retinopathy.

The phantom lets every fundus workflow of fedsilo (DR-grade classification, the federated DCGAN)
run without real data. Each image shows a circular field of view on a black surround, an
orange-red retina with choroidal texture, an optic disc with its cup, a darker macula and fovea
about 2.5 disc diameters temporal to the disc, and a vessel tree (thicker darker veins, thinner
lighter arteries) leaving the disc and arching around the macula; right and left eyes, framing,
pigmentation and illumination vary per image. The diabetic-retinopathy grade follows the ICDR
scale (Wilkinson et al., Ophthalmology 2003; see :mod:`.fundus_lesions`): microaneurysms at grade
1, haemorrhages and exudates at 2, many haemorrhages in all quadrants, venous beading, IRMA and
cotton-wool spots at 3, neovascularisation, pre-retinal haemorrhage and laser scars at 4. Each
site's camera adds its own colour cast, vignetting, blur, exposure and noise
(:class:`~.fundus_style.CameraStyle`).

Image ``i`` depends only on ``(seed, i, grades[i], its style, size)``, never on how many images
are drawn, and its anatomy and lesions do not depend on ``size`` either (only pixel noise does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np

from fedsilo.data.phantoms.fundus_anatomy import sample_eye, sample_vessel_tree
from fedsilo.data.phantoms.fundus_lesions import LAYERS, LESION_TYPES, sample_lesions
from fedsilo.data.phantoms.fundus_render import lesion_footprint, render_retina
from fedsilo.data.phantoms.fundus_style import CameraStyle, apply_camera_style, camera_styles, check_seed

__all__ = [
    "NUM_GRADES",
    "LESION_TYPES",
    "DEFAULT_GRADE_WEIGHTS",
    "MIN_SIZE",
    "MAX_SIZE",
    "generate_fundus",
    "fundus_phantom_dataset",
]

logger = logging.getLogger(__name__)

#: Number of ICDR grades (0 no DR ... 4 proliferative DR).
NUM_GRADES = 5
#: Grade frequencies of the DeepDRiD/RetinaMNIST training split (486, 128, 206, 194, 66 of 1080).
DEFAULT_GRADE_WEIGHTS: tuple[float, ...] = (0.45, 0.12, 0.19, 0.18, 0.06)
MIN_SIZE, MAX_SIZE = 28, 256
#: A pixel belongs to a lesion when the lesion's unit-peak footprint there exceeds this.
LESION_THRESHOLD = 0.5
_SCAR, _SCAR_PALE = LAYERS.index("laser_scar"), LAYERS.index("laser_scar_pale")
_FIRST_LESION = LAYERS.index(LESION_TYPES[1])


@overload
def generate_fundus(
    grades: np.ndarray, size: int = ..., *, seed: int, style: CameraStyle | None = ...,
    styles: Sequence[CameraStyle] | None = ..., style_ids: np.ndarray | None = ...,
    return_lesions: Literal[False] = ...,
) -> np.ndarray: ...  # fmt: skip
@overload
def generate_fundus(
    grades: np.ndarray, size: int = ..., *, seed: int, style: CameraStyle | None = ...,
    styles: Sequence[CameraStyle] | None = ..., style_ids: np.ndarray | None = ..., return_lesions: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip
def generate_fundus(
    grades: np.ndarray,
    size: int = 64,
    *,
    seed: int,
    style: CameraStyle | None = None,
    styles: Sequence[CameraStyle] | None = None,
    style_ids: np.ndarray | None = None,
    return_lesions: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Synthesise one colour fundus photograph per requested DR grade.

    Parameters
    ----------
    grades : np.ndarray
        ``(N,)`` integer ICDR grades in 0..4 (Wilkinson et al., Ophthalmology 2003).
    size : int
        Side of the square images in pixels, 28..256.
    seed : int
        Non-negative seed; image ``i`` depends only on ``seed``, ``i``, ``grades[i]``, its style
        and ``size``.
    style : CameraStyle, optional
        One camera for all images (default: the neutral ``CameraStyle()``).
    styles, style_ids : optional
        Several cameras: ``styles[style_ids[i]]`` photographs image ``i``; ``style_ids`` is
        ``(N,)`` integers in ``[0, len(styles))``. Give both or neither, and not with ``style``.
    return_lesions : bool
        Also return lesion masks.

    Returns
    -------
    images : np.ndarray
        ``(N, size, size, 3)`` uint8 RGB.
    lesions : np.ndarray
        Only with ``return_lesions``: ``(N, size, size)`` uint8 lesion class per pixel, indexing
        :data:`LESION_TYPES` (0 = none): the footprint of every DR lesion, faint or not (the pixel
        under a lesion's centre and its surround down to half the peak, see
        :func:`~.fundus_render.lesion_footprint`). Vessels, drusen, sheen and naevi are not lesions.
    """
    grades = _check_grades(grades)
    size = _check_size(size)
    seed = check_seed(seed)
    n = grades.shape[0]
    per_image = _resolve_styles(n, style, styles, style_ids)
    if not isinstance(return_lesions, (bool, np.bool_)):
        raise ValueError(f"return_lesions must be a bool, got {return_lesions!r}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8) if return_lesions else None
    for i in range(n):
        anatomy, lesion_rng, pixel_rng = (
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, i, j))) for j in range(3)
        )
        eye = sample_eye(anatomy)
        tree = sample_vessel_tree(eye, anatomy)
        lesions = sample_lesions(int(grades[i]), eye, tree, lesion_rng)
        rgb, _, radius, fov = render_retina(eye, lesions, size)
        rgb = apply_camera_style(rgb, radius, fov, per_image[i], pixel_rng, extra_blur_px=eye.defocus * size)
        images[i] = np.rint(rgb * 255.0).astype(np.uint8)
        if masks is not None:
            masks[i] = _lesion_mask(lesion_footprint(eye, lesions, size))
    logger.debug("generated %d fundus phantoms at %d px (seed %s)", n, size, seed)
    return (images, masks) if masks is not None else images


def fundus_phantom_dataset(
    n: int,
    size: int,
    *,
    seed: int,
    grade_weights: Sequence[float] = DEFAULT_GRADE_WEIGHTS,
    n_cameras: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a labelled phantom data set: grades from ``grade_weights``, cameras uniformly.

    With ``n_cameras == 1`` the neutral camera is used; otherwise ``camera_styles(n_cameras, seed)``.
    Prefixes are stable: the first ``m`` samples are the same for every ``n >= m``.

    Parameters
    ----------
    n : int
        Number of images, >= 0.
    size : int
        Image side, 28..256.
    seed : int
        Non-negative seed.
    grade_weights : sequence of 5 floats
        Non-negative relative frequencies of grades 0..4 with a positive sum (default: the
        RetinaMNIST training split).
    n_cameras : int
        Number of distinct cameras (sites), >= 1.

    Returns
    -------
    images : (N, size, size, 3) uint8
    grades : (N,) int64
    camera_ids : (N,) int64 in ``[0, n_cameras)``
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    size, seed = _check_size(size), check_seed(seed)
    w = np.asarray(grade_weights, dtype=float)
    if w.shape != (NUM_GRADES,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"grade_weights must be {NUM_GRADES} finite non-negative floats with a positive sum, got {grade_weights!r}"
        )
    if isinstance(n_cameras, bool) or not isinstance(n_cameras, (int, np.integer)) or n_cameras < 1:
        raise ValueError(f"n_cameras must be an integer >= 1, got {n_cameras!r}")
    label_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    camera_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    cdf = np.cumsum(w / w.sum())
    grades = np.minimum(np.searchsorted(cdf, label_rng.random(int(n)), side="right"), NUM_GRADES - 1).astype(np.int64)
    cams = np.floor(camera_rng.random(int(n)) * n_cameras).astype(np.int64)
    styles = [CameraStyle()] if n_cameras == 1 else camera_styles(int(n_cameras), seed)
    images = generate_fundus(grades, size, seed=seed, styles=styles, style_ids=cams)
    return images, grades, cams


def _lesion_mask(footprint: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 lesion class from the ``(L, H, W)`` lesion footprints."""
    les = footprint[_FIRST_LESION : _SCAR + 1].copy()
    les[-1] = np.maximum(les[-1], footprint[_SCAR_PALE])
    label = np.argmax(les, axis=0) + 1
    return np.where(les.max(axis=0) > LESION_THRESHOLD, label, 0).astype(np.uint8)


def _check_grades(grades: np.ndarray) -> np.ndarray:
    g = np.asarray(grades)
    if g.ndim != 1:
        raise ValueError(f"grades must be a 1-D array (N,), got shape {g.shape}")
    if g.size and not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"grades must be integers in 0..{NUM_GRADES - 1}, got dtype {g.dtype}")
    if g.size and (g.min() < 0 or g.max() >= NUM_GRADES):
        raise ValueError(f"grades must be in 0..{NUM_GRADES - 1}, got values {g.min()}..{g.max()}")
    return g.astype(np.int64)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return int(size)


def _resolve_styles(
    n: int, style: CameraStyle | None, styles: Sequence[CameraStyle] | None, style_ids: np.ndarray | None
) -> list[CameraStyle]:
    """One camera per image from the ``style`` / ``styles`` + ``style_ids`` arguments."""
    if style is not None and (styles is not None or style_ids is not None):
        raise ValueError("give either style or styles with style_ids, not both")
    if (styles is None) != (style_ids is None):
        raise ValueError(
            f"styles and style_ids must be given together, got styles={'set' if styles is not None else None}, "
            f"style_ids={'set' if style_ids is not None else None}"
        )
    if styles is None:
        if style is not None and not isinstance(style, CameraStyle):
            raise ValueError(f"style must be a CameraStyle, got {type(style).__name__}")
        return [style or CameraStyle()] * n
    styles = list(styles)
    if not styles or not all(isinstance(s, CameraStyle) for s in styles):
        raise ValueError(f"styles must be a non-empty sequence of CameraStyle, got {styles!r}")
    ids = np.asarray(style_ids)
    if ids.shape != (n,):
        raise ValueError(f"style_ids must have shape ({n},) like grades, got {ids.shape}")
    if n and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= len(styles)):
        raise ValueError(f"style_ids must be integers in [0, {len(styles)}), got {ids!r}")
    return [styles[int(k)] for k in ids]
