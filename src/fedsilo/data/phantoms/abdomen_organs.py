"""Organs and bowel of the abdomen phantom, painted onto a :class:`Canvas` after the skeleton, and
:func:`generate_anatomy`, the whole patient.

Organs are painted in priority order (kidneys, gallbladder, pancreas, stomach, spleen, liver):
each takes only visceral-fat voxels that no earlier organ holds and that lie more than a thin
fat plane (1.5-3 mm) away from every earlier organ, so the single label map never overlaps and
large organs are indented by the small ones, as the liver is by the gallbladder and kidney.
Volumes over seeds 0-19 (mean, range): liver 1.76 l (1.29-2.37), spleen 221 ml (80-289),
kidneys 156-166 ml (94-274), stomach 182 ml (87-317), pancreas 55 ml (33-94), gallbladder 23 ml
(15-31); as fractions of the body in the slab, liver 15.4% and kidneys 1.4% each against 11.9%
and 1.4% in the 15 CHAOS T2 volumes over the same kidney-to-dome span.
"""

from __future__ import annotations

import logging

import numpy as np

from fedsilo.data.labels import ORGAN_IDS
from fedsilo.data.phantoms._geometry import Box, ellipsoid, frame, smooth_min, tube
from fedsilo.data.phantoms.abdomen_anatomy import (
    DEFAULT_SHAPE,
    AbdomenAnatomy,
    Canvas,
    Tissue,
    check_seed,
    check_shape,
    paint_frame,
)

logger = logging.getLogger(__name__)


class _Painter:
    """Paints organs in priority order, keeping a fat plane between neighbours."""

    def __init__(self, cv: Canvas, gap: float) -> None:
        self.cv = cv
        self.gap = np.float32(gap)
        self.free = cv.cavity & (cv.tissue == Tissue.FAT)
        self.nearest = np.full(cv.tissue.shape, np.float32(1e4), dtype=np.float32)

    def organ(self, box: Box, field: np.ndarray, organ: str, code: Tissue) -> np.ndarray:
        """Paint ``organ`` where ``field < 0`` and the voxel is free; return the painted mask."""
        mask = (field < 0) & self.free[box] & (self.nearest[box] >= self.gap)
        self.cv.labels[box][mask] = ORGAN_IDS[organ]
        self.cv.tissue[box][mask] = code
        self.free[box][mask] = False
        np.minimum(self.nearest[box], field, out=self.nearest[box])
        return mask


def _kidney(cv: Canvas, p: _Painter, rng: np.random.Generator, side: float, z: float) -> None:
    """Bean-shaped kidney: cortex, medulla, renal pelvis and a fat-filled sinus at the hilum."""
    u = rng.uniform
    medial = -side  # direction of the midline along x
    centre = (z, cv.y_vb + u(-5.0, 8.0), cv.x_mid + side * u(55.0, 68.0))
    semi = (u(55.0, 65.0), u(27.0, 33.0), u(22.0, 27.0))  # long, toward hilum, thickness
    tilt_med, tilt_post, hilum = np.tan(u(0.1, 0.3)), np.tan(u(0.05, 0.3)), u(0.3, 0.7)
    axes = frame((1.0, tilt_post, medial * tilt_med),
                 (0.0, -np.sin(hilum), medial * np.cos(hilum)))
    box, f = ellipsoid(cv.grid, centre, semi, axes)
    organ = "right_kidney" if side < 0 else "left_kidney"
    mask = p.organ(box, f, organ, Tissue.KIDNEY)
    tissue = cv.tissue[box]
    tissue[mask & (f < -0.32 * semi[2])] = Tissue.MEDULLA
    sinus_c = tuple(np.asarray(centre) + axes[:, 1] * semi[1] * u(0.5, 0.65))
    sbox, fs = ellipsoid(cv.grid, sinus_c, (semi[0] * 0.5, semi[1] * 0.5, semi[2] * 0.45), axes)
    in_kidney = cv.labels[sbox] == ORGAN_IDS[organ]
    sinus = (fs < 0) & in_kidney
    pelvis = (fs < -0.45 * semi[2] * 0.45) & in_kidney
    cv.tissue[sbox][sinus] = Tissue.FAT
    cv.labels[sbox][sinus & ~pelvis] = 0
    cv.tissue[sbox][pelvis] = Tissue.FLUID


def paint_organs(cv: Canvas, rng: np.random.Generator) -> None:
    """Paint kidneys, gallbladder, pancreas, stomach, spleen and liver (with its vessels)."""
    u, g, zt = rng.uniform, cv.grid, cv.height
    p = _Painter(cv, u(1.5, 3.0))
    xm, yv, yf = cv.x_mid, cv.y_vb, cv.y_front
    z_right = zt * u(0.24, 0.34)
    _kidney(cv, p, rng, -1.0, z_right)
    _kidney(cv, p, rng, 1.0, z_right + u(5.0, 22.0))

    # Liver lobes first drawn (not painted) so the gallbladder can sit in its fossa.
    k = cv.x_cavity / 122.0  # organ scale follows the size of the cavity
    # Right lobe tilted so its inferior tip is lateral (upper part medial), as in real livers.
    r_c = (zt * u(0.66, 0.76), cv.y_body + u(-15.0, 5.0), xm - cv.x_cavity * u(0.35, 0.5))
    r_s = (u(90.0, 105.0), k * u(75.0, 95.0), k * u(65.0, 80.0))
    r_ax = frame((1.0, u(-0.1, 0.2), np.tan(u(0.3, 0.6))), (0.0, 1.0, 0.0))
    l_c = (zt * u(0.78, 0.9), yf + u(30.0, 45.0), xm + u(-10.0, 15.0))
    l_s = (u(35.0, 50.0), u(22.0, 32.0), k * u(45.0, 65.0))
    l_ax = frame((0.0, np.sin(u(-0.4, 0.1)), 1.0), (1.0, 0.0, 0.0))
    c_c = (zt * u(0.66, 0.74), yv - cv.b_vb - u(25.0, 35.0), xm - u(12.0, 20.0))

    d = np.array([-1.0, -u(0.3, 0.7), u(0.1, 0.5)])
    d /= np.linalg.norm(d)
    t = 1.0 / np.sqrt(np.sum((r_ax.T @ d / np.asarray(r_s)) ** 2))
    gb_c = tuple(np.asarray(r_c) + d * (t - u(0.0, 10.0)))
    gb_ax = frame((1.0, u(0.4, 1.0), -u(0.0, 0.3)), (0.0, 1.0, 0.0))
    box, f = ellipsoid(g, gb_c, (u(26.0, 38.0), u(11.0, 15.0), u(11.0, 15.0)), gb_ax)
    mask = p.organ(box, f, "gallbladder", Tissue.BILE)
    cv.tissue[box][mask & (f > -2.0)] = Tissue.WALL

    z_head = zt * u(0.36, 0.44)
    z_neck = z_head + u(10.0, 18.0)
    z_body = z_neck + u(5.0, 12.0)
    pan = [(z_head, cv.y_smv + u(-5.0, 5.0), cv.x_smv - u(18.0, 28.0)),
           (z_neck, cv.y_smv - u(12.0, 16.0), cv.x_smv + 2.0),
           (z_body, cv.y_ao - cv.r_ao - u(20.0, 30.0), cv.x_ao + u(15.0, 25.0)),
           (z_body + u(5.0, 15.0), yv - u(5.0, 20.0), xm + u(65.0, 80.0))]
    splenic = [(z, y + 10.0, x) for z, y, x in pan[1:]]
    box, f = tube(g, splenic, (4.0, 4.0, 3.5))
    sv = (f < 0) & p.free[box]
    cv.tissue[box][sv] = Tissue.VEIN
    p.free[box][sv] = False
    box, f = tube(g, pan, (u(12.0, 16.0), u(8.0, 11.0), u(7.0, 10.0), u(6.0, 9.0)), z_scale=0.6)
    p.organ(box, f, "pancreas", Tissue.PANCREAS)

    st = [(zt * u(0.82, 0.92), yv - u(0.0, 20.0), xm + u(45.0, 65.0)),
          (zt * u(0.68, 0.76), yf + u(45.0, 60.0), xm + u(55.0, 75.0)),
          (zt * u(0.56, 0.64), yf + u(35.0, 50.0), xm + u(35.0, 55.0)),
          (zt * u(0.48, 0.56), yf + u(30.0, 40.0), xm + u(5.0, 20.0))]
    st.append((st[-1][0] - u(0.0, 10.0), yf + u(40.0, 55.0), xm - u(15.0, 30.0)))
    box, f = tube(g, st, (u(19.0, 26.0), u(17.0, 23.0), u(13.0, 19.0), u(10.0, 14.0), u(6.0, 9.0)))
    mask = p.organ(box, f, "stomach", Tissue.WALL)
    lumen = mask & (f < -u(3.0, 5.0))
    gas, food = u(0.05, 0.45), cv.noise(rng, 16.0, box) > u(-0.5, 1.5)  # drawn even if unused
    if lumen.any():
        y = cv.y_plain[box]
        cv.tissue[box][lumen] = np.where(food[lumen], Tissue.CONTENT, Tissue.FLUID)
        cv.tissue[box][lumen & (y < np.quantile(y[lumen], gas))] = Tissue.AIR

    phi = u(0.35, 0.8)
    sp_ax = frame((0.0, -np.cos(phi), np.sin(phi)), (1.0, u(-0.3, 0.3), 0.0))
    sp_c = (zt * u(0.62, 0.74), yv + u(-5.0, 15.0), xm + cv.x_cavity - u(18.0, 32.0))
    box, f = ellipsoid(g, sp_c, (u(48.0, 62.0), u(48.0, 62.0), u(25.0, 33.0)), sp_ax)
    p.organ(box, f, "spleen", Tissue.SPLEEN)

    lobes = ((r_c, r_s, r_ax), (l_c, l_s, l_ax), (c_c, (28.0, 16.0, 16.0), None))
    lo = np.min([np.asarray(c) - max(s) for c, s, _ in lobes], axis=0)
    hi = np.max([np.asarray(c) + max(s) for c, s, _ in lobes], axis=0)
    box = g.box(lo, hi)
    f = ellipsoid(g, r_c, r_s, r_ax, box=box)[1]
    for centre, semi, axes in lobes[1:]:
        f = smooth_min(f, ellipsoid(g, centre, semi, axes, box=box)[1], 15.0)
    liver = p.organ(box, f, "liver", Tissue.LIVER)
    _liver_vessels(cv, rng, box, liver)


def _liver_vessels(cv: Canvas, rng: np.random.Generator, box: Box, liver: np.ndarray) -> None:
    """Hepatic veins from the IVC and portal branches from the hilum, inside the liver only."""
    u, zt, xm, yf = rng.uniform, cv.height, cv.x_mid, cv.y_front
    ends_hv = [(zt * u(0.75, 0.9), cv.y_body + u(-60.0, -20.0), xm - u(60.0, 100.0)),
               (zt * u(0.8, 0.9), yf + u(20.0, 40.0), xm - u(10.0, 30.0)),
               (zt * u(0.8, 0.92), yf + u(20.0, 40.0), xm + u(20.0, 50.0))]
    ends_pv = [(zt * u(0.55, 0.7), cv.y_vb - u(0.0, 30.0), xm - u(80.0, 110.0)),
               (zt * u(0.6, 0.7), yf + u(30.0, 50.0), xm - u(70.0, 95.0)),
               (zt * u(0.65, 0.78), yf + u(30.0, 45.0), xm + u(5.0, 30.0))]
    in_liver = np.zeros(cv.labels.shape, dtype=bool)
    in_liver[box] = liver
    for start, ends, r0 in ((cv.ivc_top, ends_hv, u(4.0, 6.0)), (cv.hilum, ends_pv, u(4.5, 6.5))):
        for end in ends:
            mid = tuple(0.5 * (a + b) + u(-10.0, 10.0) for a, b in zip(start, end))
            vbox, f = tube(cv.grid, [start, mid, end], (r0, 0.7 * r0, 2.0))
            sel = (f < 0) & in_liver[vbox]
            cv.tissue[vbox][sel] = Tissue.VEIN


def _bowel_tube(cv: Canvas, rng: np.random.Generator, points: list[tuple[float, float, float]],
                radius: float, gas: float, fluid: bool, bubbles: float) -> None:
    """One bowel segment: wall, then fluid or content (with gas bubbles and a gas cap).

    ``gas`` is the fraction of the lumen, from the anterior (non-dependent) side, that holds gas;
    ``bubbles`` the fraction of the content that is mottled gas (as in stool).
    """
    box, f = tube(cv.grid, points, [radius] * len(points))
    free = (cv.tissue[box] == Tissue.FAT) & cv.cavity[box] & (cv.labels[box] == 0)
    wall = (f < 0) & free
    lumen = wall & (f < -rng.uniform(2.0, 3.5))
    tissue = cv.tissue[box]
    tissue[wall] = Tissue.WALL
    tissue[lumen] = Tissue.FLUID if fluid else Tissue.CONTENT
    mottle = cv.noise(rng, 6.0, box) if bubbles > 0 else None  # drawn even if the lumen is empty
    if not lumen.any():
        return
    if mottle is not None:
        tissue[lumen & (mottle > np.quantile(mottle[lumen], 1.0 - bubbles))] = Tissue.AIR
    y = cv.y_plain[box]
    tissue[lumen & (y < np.quantile(y[lumen], gas))] = Tissue.AIR


def paint_bowel(cv: Canvas, rng: np.random.Generator) -> None:
    """Colon and small-bowel loops in the visceral fat left free by the organs.

    The colon is a wide tube framing the abdomen (ascending on the right flank, hepatic flexure,
    transverse colon below liver and stomach, splenic flexure, descending on the left); the small
    bowel is a handful of random walks of narrower tube in the lower anterior abdomen.
    """
    u, zt, xm, yv, yf, xc = rng.uniform, cv.height, cv.x_mid, cv.y_vb, cv.y_front, cv.x_cavity
    z_tr = zt * u(0.38, 0.5)
    colon = [(-20.0, yv - u(5.0, 30.0), xm - xc + u(25.0, 40.0)),
             (z_tr + u(0.0, 15.0), yv - u(20.0, 45.0), xm - xc + u(30.0, 45.0)),
             (z_tr + u(5.0, 20.0), yf + u(35.0, 55.0), xm - xc + u(50.0, 70.0)),
             (z_tr, yf + u(20.0, 35.0), xm + u(-20.0, 20.0)),
             (z_tr + u(10.0, 25.0), yf + u(35.0, 55.0), xm + xc - u(50.0, 70.0)),
             (z_tr + u(15.0, 35.0), yv - u(10.0, 35.0), xm + xc - u(20.0, 35.0)),
             (-20.0, yv - u(0.0, 25.0), xm + xc - u(20.0, 35.0))]
    _bowel_tube(cv, rng, colon, u(13.0, 20.0), u(0.05, 0.6), False, u(0.1, 0.4))
    for _ in range(int(rng.integers(14, 24))):
        point = np.array([u(-0.05, 0.5) * zt, u(yf + 15.0, yv - 20.0), xm + u(-0.75, 0.75) * xc])
        walk = [tuple(point)]
        for _ in range(int(rng.integers(4, 8))):
            step = rng.normal(size=3) * np.array([0.5, 1.0, 1.0])
            point = point + 25.0 * step / np.linalg.norm(step)
            point[1] = min(point[1], yv - 20.0)
            walk.append(tuple(point))
        _bowel_tube(cv, rng, walk, u(8.0, 13.0), u(0.0, 0.25), bool(u() < 0.6), 0.0)


def generate_anatomy(seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> AbdomenAnatomy:
    """Generate one random upper-abdomen patient.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed gives the same patient (and, for square slices, the same
        anatomy at any in-plane resolution).
    shape : tuple of 3 int
        Volume shape ``(D, H, W)``; D in [8, 128], H and W in [32, 512]. Small organs
        (gallbladder, pancreas) may vanish below about 64 x 64.

    Returns
    -------
    AbdomenAnatomy
        Organ label map, tissue map and spacing (see the module docstring for orientation).
    """
    seed = check_seed(seed)
    shape = check_shape(shape)
    rng = np.random.default_rng(seed)
    cv = Canvas(rng, shape)
    paint_frame(cv, rng)
    paint_organs(cv, rng)
    paint_bowel(cv, rng)
    logger.debug("abdomen phantom seed %s shape %s spacing %s", seed, shape, cv.spacing)
    spacing = (float(cv.spacing[0]), float(cv.spacing[1]), float(cv.spacing[2]))
    return AbdomenAnatomy(labels=cv.labels, tissue=cv.tissue, spacing=spacing, seed=seed)
