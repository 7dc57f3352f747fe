"""Anatomy of the built-in abdomen phantom: a random upper-abdomen patient as label + tissue maps.

A patient is built in millimetre coordinates from a few dozen random parameters (body size, fat
thickness, organ positions, sizes and tilts) and one smooth random displacement field that bends
every structure, so no two patients share a shape. Structures are painted in priority order on a
single tissue map: body -> subcutaneous fat -> abdominal wall muscle -> visceral fat, then the
skeleton, muscles and great vessels, then the organs (kidneys, gallbladder, pancreas, stomach,
spleen, liver; each only where nothing earlier lies, with a thin fat plane between organs), then
bowel loops in the remaining visceral fat. Organ labels therefore never overlap.

Conventions: volumes are ``(D, H, W)`` = (slices, rows, cols), slice 0 inferior (feet) and the
last slice superior (head), as in a RAS+ NIfTI; rows run anterior -> posterior and columns run
from the patient's right to the patient's left (radiological display: the liver is on the left of
the image). The volume always spans from below the kidneys to the liver dome, so the slice
thickness is that span (180-220 mm, drawn per patient) divided by D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from fedsilo.data.phantoms._geometry import Grid, axis_centres, ellipsoid, smooth_field, tube

logger = logging.getLogger(__name__)

#: Default volume shape (D, H, W).
DEFAULT_SHAPE: tuple[int, int, int] = (32, 128, 128)
#: Allowed range (inclusive) of D, and of H and W.
DEPTH_RANGE: tuple[int, int] = (8, 128)
SIDE_RANGE: tuple[int, int] = (32, 512)


class Tissue(IntEnum):
    """Tissue classes of the phantom's internal tissue map (what the renderers colour)."""

    AIR = 0  #: outside the body and gas in the stomach or bowel
    LUNG = 1
    FAT = 2  #: subcutaneous, visceral, perirenal and renal-sinus fat
    MUSCLE = 3  #: abdominal wall, paraspinal, psoas, diaphragm
    BONE = 4  #: cortical bone: vertebral cortex, arch, processes, ribs
    MARROW = 5  #: trabecular bone of the vertebral bodies
    DISC = 6
    CSF = 7
    ARTERY = 8  #: aorta, superior mesenteric artery
    VEIN = 9  #: IVC, portal, mesenteric, splenic and hepatic veins
    WALL = 10  #: bowel, stomach and gallbladder wall
    CONTENT = 11  #: semi-solid bowel and stomach content
    FLUID = 12  #: bowel, stomach and renal-pelvis fluid
    LIVER = 13
    KIDNEY = 14  #: renal cortex
    MEDULLA = 15  #: renal medulla
    SPLEEN = 16
    PANCREAS = 17
    BILE = 18


@dataclass(frozen=True)
class AbdomenAnatomy:
    """One phantom patient's anatomy, independent of imaging modality.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 ``(D, H, W)`` organ ids of :mod:`fedsilo.data.labels` (0 background .. 7 stomach).
    tissue : numpy.ndarray
        uint8 ``(D, H, W)`` :class:`Tissue` codes, what :func:`render_ct` / :func:`render_mr` use.
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in mm.
    seed : int
        The seed the anatomy was generated from.
    """

    labels: np.ndarray
    tissue: np.ndarray
    spacing: tuple[float, float, float]
    seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(D, H, W)``."""
        d, h, w = self.labels.shape
        return d, h, w


def check_seed(seed: object, name: str = "seed") -> int:
    """Return ``seed`` if it is a non-negative int (not bool), else raise ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


def check_shape(shape: object) -> tuple[int, int, int]:
    """Validate a ``(D, H, W)`` volume shape against :data:`DEPTH_RANGE` and :data:`SIDE_RANGE`."""
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape)):
        raise ValueError(f"shape must be a tuple of 3 ints (D, H, W), got {shape!r}")
    d, h, w = (int(s) for s in shape)
    if not DEPTH_RANGE[0] <= d <= DEPTH_RANGE[1]:
        raise ValueError(f"shape[0] (D) must be in [{DEPTH_RANGE[0]}, {DEPTH_RANGE[1]}], got {d}")
    for name, s in (("shape[1] (H)", h), ("shape[2] (W)", w)):
        if not SIDE_RANGE[0] <= s <= SIDE_RANGE[1]:
            raise ValueError(f"{name} must be in [{SIDE_RANGE[0]}, {SIDE_RANGE[1]}], got {s}")
    return d, h, w


class Canvas:
    """The volume being painted: warped grid, tissue and label maps, and shared landmarks (mm).

    Landmarks are plain attributes set by the painting steps (``x_mid`` spine midline, ``y_vb``
    vertebral-body centre, ``y_front`` front of the abdominal cavity, vessel positions...).
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int]) -> None:
        u = rng.uniform
        d, h, w = shape
        self.height = u(180.0, 220.0)  # cranio-caudal span of the volume (mm)
        # Body build: visceral cavity first (organs need room), then muscle and fat around it.
        self.x_cavity = u(110.0, 135.0)  # half-width of the cavity inside the wall muscles
        front, back = u(100.0, 145.0), u(58.0, 70.0)  # vertebral body -> cavity front, back muscle
        fat = u(4.0, 30.0)
        self.fat = (fat * u(1.0, 1.5), fat * u(0.7, 1.1), fat * u(0.5, 0.9))  # ant, lat, post
        self.muscle = (u(5.0, 10.0), u(7.0, 12.0), u(14.0, 22.0))
        self.body_a = self.x_cavity + self.muscle[1] + self.fat[1]
        body_depth = front + self.muscle[0] + self.fat[0] + back + self.fat[2]
        self.body_b_ant = body_depth * u(0.5, 0.56)
        self.body_b_post = body_depth - self.body_b_ant
        self.y_body, self.x_body = u(-10.0, 10.0), u(-6.0, 6.0)
        self.y_front = self.y_body - self.body_b_ant + self.fat[0] + self.muscle[0]
        self.y_vb = self.y_front + front
        fov = max(2.0 * self.body_a, body_depth) / u(0.8, 0.92)
        dx = fov / min(h, w)
        self.spacing = (self.height / d, dx, dx)
        coords = ((np.arange(d) + 0.5) * self.spacing[0] - self.height / 2.0,
                  axis_centres(h, dx), axis_centres(w, dx))
        extent = (self.height, h * dx, w * dx)
        amp, corr = u(4.0, 9.0), u(50.0, 80.0)
        disp = [amp * smooth_field(rng, coords, extent, corr) for _ in range(3)]
        z = (coords[0] + self.height / 2.0).astype(np.float32)[:, None, None] + disp[0]
        y = coords[1].astype(np.float32)[None, :, None] + disp[1]
        x = coords[2].astype(np.float32)[None, None, :] + disp[2]
        shift = max(float(np.abs(c).max()) for c in disp)
        self.grid = Grid(self.spacing, z, y, x, shift)
        self.y_plain = np.broadcast_to(coords[1].astype(np.float32)[None, :, None], shape)
        self.w = z / np.float32(self.height)  # 0 at the bottom face, 1 at the top face
        self.tissue = np.zeros(shape, dtype=np.uint8)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.extent = extent
        self.coords = coords

    def noise(self, rng: np.random.Generator, corr_mm: float,
              box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """A unit-variance smooth random field on this volume, or on ``box`` of it."""
        coords = self.coords if box is None else tuple(c[b] for c, b in zip(self.coords, box))
        return smooth_field(rng, coords, self.extent, corr_mm)


def _superellipse(cv: Canvas, a: np.ndarray, b_ant: np.ndarray, b_post: np.ndarray,
                  p_ant: float, p_post: float) -> np.ndarray:
    """Radial signed distance (mm) to the body-like cross-section with the given semi-axes."""
    g = cv.grid
    yb, xb = g.y - cv.y_body, g.x - cv.x_body
    post = yb > 0
    p = np.where(post, np.float32(p_post), np.float32(p_ant))
    b = np.where(post, b_post, b_ant)
    s = (np.abs(xb / a) ** p + np.abs(yb / b) ** p) ** (1.0 / p)
    radius = np.sqrt(xb * xb + yb * yb)
    return np.where(s > 1e-6, radius / np.maximum(s, 1e-6), a) * (s - 1.0)


def _paint_body(cv: Canvas, rng: np.random.Generator) -> None:
    """Skin outline, subcutaneous fat, abdominal wall muscle and the visceral cavity."""
    u = rng.uniform
    ka, kb = u(-0.1, 0.08), u(-0.05, 0.2)
    p_ant, p_post = u(2.0, 2.5), u(2.5, 3.2)
    (t_ant, t_lat, t_post), (m_ant, m_lat, m_post) = cv.fat, cv.muscle
    w = cv.w - np.float32(0.5)
    a = cv.body_a * (1.0 + ka * w)
    b_ant = cv.body_b_ant * (1.0 - kb * w)
    b_post = np.full_like(w, cv.body_b_post)
    layers = ((0.0, 0.0, 0.0), (t_lat, t_ant, t_post),
              (t_lat + m_lat, t_ant + m_ant, t_post + m_post))
    fields = [_superellipse(cv, a - dl, b_ant - da, b_post - dp, p_ant, p_post)
              for dl, da, dp in layers]
    cv.f_fat_inner = fields[1]
    cv.wall_mid = -0.5 * m_lat
    cv.tissue[fields[0] < 0] = Tissue.FAT
    cv.tissue[fields[1] < 0] = Tissue.MUSCLE
    cv.cavity = fields[2] < 0
    cv.tissue[cv.cavity] = Tissue.FAT
    for side in (-1.0, 1.0):  # rectus abdominis: thick paramedian bands in the anterior wall
        centre = (0.0, cv.y_front - 0.5 * m_ant, cv.x_body + side * u(35.0, 50.0))
        box, f = ellipsoid(cv.grid, centre, (10.0 * cv.height, u(6.0, 9.0), u(25.0, 35.0)))
        _paint(cv, box, f < 0, Tissue.MUSCLE)
        cv.cavity[box] &= f >= 0


def _paint(cv: Canvas, box: tuple[slice, slice, slice], mask: np.ndarray, code: Tissue) -> None:
    view = cv.tissue[box]
    view[mask] = code


def _paint_skeleton(cv: Canvas, rng: np.random.Generator) -> None:
    """Paraspinal and psoas muscles, a lumbar/thoracic spine with discs, and lower ribs."""
    u = rng.uniform
    g, top = cv.grid, 10.0 * cv.height
    cv.x_mid = cv.x_body + u(-5.0, 5.0)
    a_vb, b_vb = u(19.0, 23.0), u(14.0, 16.5)
    cv.b_vb = b_vb
    period, disc = u(30.0, 36.0), u(6.0, 9.0)
    phase = u(0.0, period)
    xm, yv = cv.x_mid, cv.y_vb
    for side in (-1.0, 1.0):  # paraspinal muscles, only inside the fat
        box, f = ellipsoid(g, (0.0, yv + u(40.0, 48.0), xm + side * u(27.0, 34.0)),
                           (top, u(20.0, 26.0), u(22.0, 28.0)))
        _paint(cv, box, (f < 0) & (cv.f_fat_inner[box] < 0), Tissue.MUSCLE)
    psoas_top, psoas_r = u(0.5, 0.65), u(16.0, 24.0)
    for side in (-1.0, 1.0):
        pts = [(psoas_top * cv.height, yv - 4.0, xm + side * (a_vb + 2.0)),
               (-20.0, yv + u(-6.0, 2.0), xm + side * (a_vb + psoas_r * 0.8))]
        box, f = tube(g, pts, (4.0, psoas_r))
        _paint(cv, box, f < 0, Tissue.MUSCLE)
    level = np.mod(g.z - np.float32(phase), np.float32(period)) / np.float32(period)
    lumbar = cv.w < u(0.45, 0.6)
    for side in (-1.0, 1.0):  # transverse processes
        box, f = ellipsoid(g, (0.0, yv + b_vb + 4.0, xm + side * 30.0), (top, 5.0, 16.0))
        _paint(cv, box, (f < 0) & (level[box] > 0.45) & (level[box] < 0.75) & lumbar[box],
               Tissue.BONE)
    box, f = ellipsoid(g, (0.0, yv + b_vb + 9.0, xm), (top, 13.0, 16.0))  # neural arch
    _paint(cv, box, f < 0, Tissue.BONE)
    box, f = ellipsoid(g, (0.0, yv + b_vb + u(30.0, 36.0), xm), (top, 18.0, 4.5))  # spinous
    _paint(cv, box, (f < 0) & (level[box] > 0.3) & (cv.f_fat_inner[box] < -3.0), Tissue.BONE)
    box, f = ellipsoid(g, (0.0, yv + b_vb + 9.0, xm), (top, 7.5, 9.5))  # spinal canal
    _paint(cv, box, f < 0, Tissue.CSF)
    box, f = ellipsoid(g, (0.0, yv, xm), (top, b_vb, a_vb))  # vertebral body
    is_disc = level[box] < disc / period
    _paint(cv, box, (f < 0) & ~is_disc, Tissue.BONE)
    _paint(cv, box, (f < -2.5) & ~is_disc, Tissue.MARROW)
    _paint(cv, box, (f < 0) & is_disc, Tissue.DISC)
    # Lower ribs: spots in the middle of the lateral and posterior abdominal wall, upper slices.
    theta = np.arctan2(g.x - cv.x_body, g.y - cv.y_body)  # 0 posterior, +-pi anterior
    n_ribs, pitch, rib_phase = rng.integers(9, 13), u(35.0, 50.0), u(0.0, 2.0 * np.pi)
    w_rib = u(0.35, 0.5)
    pattern = np.cos(n_ribs * theta - 2.0 * np.pi * g.z / pitch + rib_phase) > 0.55
    in_band = np.abs(cv.f_fat_inner - np.float32(cv.wall_mid)) < 3.5
    arc = (np.abs(theta) > 0.35) & (np.abs(theta) < 2.3 + 0.6 * (cv.w - w_rib))
    ribs = pattern & in_band & arc & (cv.w > w_rib) & (cv.tissue == Tissue.MUSCLE)
    cv.tissue[ribs] = Tissue.BONE


def _paint_vessels(cv: Canvas, rng: np.random.Generator) -> None:
    """Aorta and IVC, superior mesenteric artery and vein, portal vein."""
    u, g, zt = rng.uniform, cv.grid, cv.height
    xm, yv, bv = cv.x_mid, cv.y_vb, cv.b_vb
    r_ao = u(9.0, 12.5)
    cv.x_ao, cv.y_ao, cv.r_ao = xm + u(8.0, 16.0), yv - bv - r_ao - u(1.0, 5.0), r_ao
    ao = [(-20.0, cv.y_ao + u(-4, 4), cv.x_ao + u(-5, 5)), (0.5 * zt, cv.y_ao, cv.x_ao),
          (zt + 20.0, cv.y_ao + u(0, 8), cv.x_ao - u(0, 8))]
    box, f = tube(g, ao, (r_ao, r_ao, r_ao))
    _paint(cv, box, f < 0, Tissue.ARTERY)
    cv.x_ivc, cv.y_ivc = xm - u(18.0, 26.0), yv - bv - u(6.0, 12.0)
    cv.ivc_top = (zt * 0.97, cv.y_ivc - u(5.0, 20.0), cv.x_ivc + u(-5.0, 5.0))
    r_ivc = u(9.0, 12.0)
    box, f = tube(g, [(-20.0, cv.y_ivc, cv.x_ivc), (0.6 * zt, cv.y_ivc, cv.x_ivc),
                      cv.ivc_top, (zt + 20.0,) + cv.ivc_top[1:]], (r_ivc,) * 4)
    _paint(cv, box, f < 0, Tissue.VEIN)
    z_sma = u(0.5, 0.58) * zt
    y_sma = cv.y_ao - r_ao - u(8.0, 14.0)
    box, f = tube(g, [(z_sma + 15.0, cv.y_ao - r_ao, cv.x_ao), (z_sma, y_sma, cv.x_ao - 1.0),
                      (-20.0, y_sma - u(0.0, 8.0), cv.x_ao - u(0.0, 6.0))], (4.0, 3.5, 3.5))
    _paint(cv, box, f < 0, Tissue.ARTERY)
    cv.x_smv, cv.y_smv, cv.z_conf = cv.x_ao - u(12.0, 17.0), y_sma + u(-3.0, 3.0), z_sma - 5.0
    cv.hilum = (zt * u(0.58, 0.66), yv - u(55.0, 70.0), xm - u(35.0, 50.0))
    box, f = tube(g, [(-20.0, cv.y_smv, cv.x_smv), (cv.z_conf, cv.y_smv, cv.x_smv), cv.hilum],
                  (5.0, 6.5, 7.0))
    _paint(cv, box, f < 0, Tissue.VEIN)


def _paint_lungs(cv: Canvas, rng: np.random.Generator) -> None:
    """Lung bases behind the liver and spleen in the top slices, under a muscular diaphragm."""
    u, g = rng.uniform, cv.grid
    dome = cv.height + u(5.0, 45.0)
    for side in (-1.0, 1.0):
        box, f = ellipsoid(g, (dome, cv.y_vb + u(10.0, 30.0), cv.x_mid + side * u(55.0, 75.0)),
                           (u(40.0, 60.0), u(35.0, 50.0), u(35.0, 50.0)))
        free = cv.cavity[box] & (cv.tissue[box] == Tissue.FAT)
        _paint(cv, box, (f < 4.0) & free, Tissue.MUSCLE)
        _paint(cv, box, (f < 0) & free, Tissue.LUNG)


def paint_frame(cv: Canvas, rng: np.random.Generator) -> None:
    """Everything but the organs: body and fat, skeleton and muscles, vessels, lung bases."""
    _paint_body(cv, rng)
    _paint_skeleton(cv, rng)
    _paint_vessels(cv, rng)
    _paint_lungs(cv, rng)
