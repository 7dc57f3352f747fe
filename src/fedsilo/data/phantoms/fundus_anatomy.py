"""Normal retinal anatomy for the fundus phantom: eye geometry and the vessel tree.

Everything here lives in *field-of-view coordinates*: the circular field of view (FOV) of the
camera has radius 1 and centre (0, 0), ``x`` points right and ``y`` points down (image rows).
Nothing depends on the output resolution, so one seed gives the same eye at 28 and at 256 px.

Proportions follow a 45-degree fundus photograph: optic disc diameter (DD) about 1/7 of the FOV
diameter, fovea about 2.5 DD temporal to the disc and slightly below it, the temporal vascular
arcades arching around the macula roughly along a parabola whose vertex is the disc (Foracchia
et al., "Detection of optic disc in retinal images by means of a geometrical model of vessel
structure", IEEE TMI 2004), major veins about 1/12 DD wide and arteries about 3/4 of that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = ["GEOMETRY_STEP", "VEIN", "ARTERY", "Eye", "Walks", "random_walks", "sample_eye", "sample_vessel_tree"]

#: Arclength step (FOV radii) of every vessel polyline; rendering interpolates finer if needed.
GEOMETRY_STEP = 0.01
#: Vessel kinds (the rendering layer of a walk).
VEIN, ARTERY = 0, 1


@dataclass(frozen=True)
class Eye:
    """Geometry, pigmentation and illumination of one photographed eye (lengths in FOV radii).

    Attributes
    ----------
    side : +1 when the optic disc lies right of the fovea (a right eye, OD, as usually displayed),
        -1 for a left eye.
    centre, fov_radius : where the FOV sits in the image, as fractions of the image side.
    disc, fovea : ``(2,)`` centres; ``disc_radius`` is the horizontal semi-axis of the disc,
        ``disc_aspect`` its height/width and ``cup_ratio`` the cup-to-disc ratio.
    pigment : 0 (blond fundus) .. 1 (heavily pigmented).
    brightness, white_balance : exposure and ``(3,)`` RGB gain of this photograph.
    illum_falloff, illum_gradient : radial fall-off and ``(2,)`` linear tilt of the illumination.
    macula_depth, macula_size : darkening of the macula and its Gaussian width in disc diameters.
    textures : coarse random grids ``(g, g)`` of choroidal texture, interpolated at any resolution.
    haze, haze_angle, haze_tint : strength, position and colour of a stray-light crescent.
    defocus : extra blur of this photograph, as a fraction of the image side.
    """

    side: int
    centre: tuple[float, float]
    fov_radius: float
    disc: np.ndarray
    disc_radius: float
    disc_aspect: float
    cup_ratio: float
    fovea: np.ndarray
    pigment: float
    brightness: float
    white_balance: np.ndarray
    illum_falloff: float
    illum_gradient: np.ndarray
    macula_depth: float
    macula_size: float
    textures: tuple[np.ndarray, ...]
    haze: float
    haze_angle: float
    haze_tint: int
    defocus: float

    @property
    def disc_diameter(self) -> float:
        """Horizontal optic disc diameter (DD) in FOV radii."""
        return 2.0 * self.disc_radius


@dataclass(frozen=True)
class Walks:
    """A batch of ``n`` vessel polylines padded to ``K`` points.

    Attributes
    ----------
    xy : np.ndarray
        ``(n, K, 2)`` points in FOV coordinates, spaced :data:`GEOMETRY_STEP` apart.
    heading : np.ndarray
        ``(n, K)`` direction of travel in radians.
    width : np.ndarray
        ``(n, K)`` vessel width (full width at half maximum) in FOV radii.
    valid : np.ndarray
        ``(n, K)`` bool, False after the vessel ends (length reached, FOV left, fovea reached).
    kind : np.ndarray
        ``(n,)`` int rendering layer (:data:`VEIN`, :data:`ARTERY`, or a lesion layer).
    """

    xy: np.ndarray
    heading: np.ndarray
    width: np.ndarray
    valid: np.ndarray
    kind: np.ndarray

    @property
    def n(self) -> int:
        """Number of vessels."""
        return int(self.kind.shape[0])


def random_walks(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: np.ndarray,
    length: np.ndarray,
    width: np.ndarray,
    kind: np.ndarray,
    *,
    tortuosity: np.ndarray,
    turn: np.ndarray | None = None,
    turn_scale: np.ndarray | None = None,
    corr_length: float = 0.05,
    taper: float = 0.5,
    avoid: np.ndarray | None = None,
    avoid_radius: float = 0.0,
) -> Walks:
    """Grow ``n`` smooth random vessels at once (vectorised over vessels and steps).

    The heading follows ``heading + turn * (1 - exp(-s / turn_scale))`` (a steered bend, used for
    the arcades) plus the running integral of a curvature that is Gaussian AR(1) noise with
    standard deviation ``tortuosity`` (rad per FOV radius) and correlation length ``corr_length``.
    A vessel stops at ``length``, at the FOV edge, or on entering the disc of radius
    ``avoid_radius`` around ``avoid`` (the foveal avascular zone).

    Parameters
    ----------
    start : (n, 2); heading, length, width, tortuosity, turn, turn_scale : (n,); kind : (n,) int.
    """
    n = start.shape[0]
    h = GEOMETRY_STEP
    k = int(np.ceil(float(length.max(initial=0.0)) / h)) + 1
    s = np.arange(k) * h
    a = float(np.exp(-h / corr_length))
    curvature = lfilter([np.sqrt(1.0 - a * a)], [1.0, -a], rng.standard_normal((n, k)), axis=1)
    theta = heading[:, None] + np.cumsum(curvature * (tortuosity[:, None] * h), axis=1)
    if turn is not None and turn_scale is not None:
        theta = theta + turn[:, None] * (1.0 - np.exp(-s[None, :] / turn_scale[:, None]))
    steps = h * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    xy = np.empty((n, k, 2))
    xy[:, 0] = start
    xy[:, 1:] = start[:, None, :] + np.cumsum(steps[:, :-1], axis=1)
    valid = s[None, :] <= length[:, None]
    valid &= np.logical_and.accumulate(np.hypot(xy[..., 0], xy[..., 1]) <= 1.0, axis=1)
    if avoid is not None and avoid_radius > 0:
        far = np.hypot(xy[..., 0] - avoid[0], xy[..., 1] - avoid[1]) > avoid_radius
        valid &= np.logical_and.accumulate(far, axis=1)
    frac = s[None, :] / np.maximum(length[:, None], h)
    w = width[:, None] * np.clip(1.0 - taper * frac, 1.0 - taper, 1.0)
    return Walks(xy=xy, heading=theta, width=w, valid=valid, kind=np.asarray(kind, dtype=np.int64))


def sample_eye(rng: np.random.Generator) -> Eye:
    """Draw the geometry, pigmentation and illumination of one eye."""
    side = 1 if rng.random() < 0.5 else -1
    disc_radius = rng.uniform(0.115, 0.145)
    dfd = 2.5 * 2.0 * disc_radius * rng.uniform(0.92, 1.08)  # disc-fovea distance
    tilt = np.deg2rad(rng.uniform(2.0, 12.0))  # the fovea lies slightly below the disc
    fovea = np.array([-side * rng.uniform(-0.05, 0.28), rng.uniform(-0.08, 0.1)])
    disc = fovea + np.array([side * dfd * np.cos(tilt), -dfd * np.sin(tilt)])
    haze = rng.uniform(0.15, 0.6) if rng.random() < 0.3 else 0.0
    return Eye(
        side=side,
        centre=(0.5 + rng.uniform(-0.015, 0.015), 0.5 + rng.uniform(-0.015, 0.015)),
        fov_radius=rng.uniform(0.45, 0.51),
        disc=disc,
        disc_radius=disc_radius,
        disc_aspect=rng.uniform(1.0, 1.15),
        cup_ratio=rng.uniform(0.2, 0.55),
        fovea=fovea,
        pigment=rng.beta(2.0, 2.0),
        brightness=float(np.exp(rng.normal(0.12, 0.22))),
        white_balance=np.exp(rng.normal(0.0, 1.0, size=3) * np.array([0.06, 0.1, 0.16])),
        illum_falloff=rng.uniform(0.4, 0.85),
        illum_gradient=rng.normal(0.0, 0.1, size=2),
        macula_depth=rng.uniform(0.25, 0.5),
        macula_size=rng.uniform(0.5, 0.85),
        textures=(rng.standard_normal((6, 6)), rng.standard_normal((16, 16)), rng.standard_normal((48, 48))),
        haze=haze,
        haze_angle=rng.uniform(-np.pi, np.pi),
        haze_tint=int(rng.integers(0, 2)),
        defocus=rng.uniform(0.005, 0.012) if rng.random() < 0.1 else abs(rng.normal(0.0, 0.002)),
    )


def sample_vessel_tree(eye: Eye, rng: np.random.Generator) -> list[Walks]:
    """Grow the retinal vessel tree: trunks from the disc, then two generations of branches.

    Returns
    -------
    list of Walks
        ``[trunks, branches, twigs]``.
    """
    axis = eye.fovea - eye.disc
    phi = float(np.arctan2(axis[1], axis[0]))  # disc -> fovea direction
    dfd = float(np.hypot(*axis))
    up = -np.pi / 2 if np.sin(phi + np.pi / 2) > 0 else np.pi / 2  # perpendicular pointing up
    vein_w = rng.uniform(0.023, 0.03)
    origin = eye.disc + np.array([-eye.side * 0.15 * eye.disc_radius, 0.0])  # cup centre
    starts, headings, lengths, widths, kinds, turns, scales, torts = [], [], [], [], [], [], [], []

    def trunk(heading: float, length: float, width: float, kind: int, turn: float, scale: float, tort: float) -> None:
        starts.append(origin + rng.normal(0.0, 0.2 * eye.disc_radius, size=2))
        headings.append(heading)
        lengths.append(length)
        widths.append(width)
        kinds.append(kind)
        turns.append(turn)
        scales.append(scale)
        torts.append(tort)

    for sign in (1.0, -1.0):  # superior and inferior temporal arcades, one vein and one artery
        d = sign * up
        mult, back, scale = rng.uniform(1.0, 1.25), rng.uniform(0.95, 1.1), dfd * rng.uniform(0.5, 0.75)
        for kind, w in ((VEIN, vein_w), (ARTERY, vein_w * rng.uniform(0.68, 0.8))):
            trunk(phi + d * mult, 2.5, w, kind, -d * mult * back, scale * rng.uniform(0.9, 1.1), rng.uniform(0.6, 1.5))
        # superior and inferior nasal vessels
        nasal = phi + np.pi - d * rng.uniform(0.45, 1.0)
        for kind, w in ((VEIN, vein_w * 0.85), (ARTERY, vein_w * 0.62)):
            trunk(nasal + rng.normal(0.0, 0.15), 2.0, w, kind, rng.uniform(-0.4, 0.4), 0.4, rng.uniform(1.0, 2.2))
    for kind in (ARTERY, VEIN):  # small papillomacular vessels and a nasal horizontal one
        trunk(phi + rng.normal(0.0, 0.25), dfd * rng.uniform(0.5, 0.8), vein_w * 0.4, kind, 0.0, 1.0, 2.5)
    trunk(phi + np.pi + rng.normal(0.0, 0.25), rng.uniform(0.3, 0.6), vein_w * 0.5, VEIN, 0.0, 1.0, 2.5)

    faz = 0.3 * eye.disc_diameter  # vessels visible on photographs stop short of the fovea
    trunks = random_walks(
        rng, np.array(starts), np.array(headings), np.array(lengths), np.array(widths), np.array(kinds),
        tortuosity=np.array(torts), turn=np.array(turns), turn_scale=np.array(scales), taper=0.45,
        avoid=eye.fovea, avoid_radius=faz,
    )  # fmt: skip
    branches = _branch(rng, trunks, slots=9, first=0.1, spacing=(0.08, 0.24), ratio=(0.45, 0.75),
                       length=(0.15, 0.6), tort=(1.5, 3.5), avoid=eye.fovea, avoid_radius=faz)  # fmt: skip
    twigs = _branch(rng, branches, slots=3, first=0.04, spacing=(0.06, 0.2), ratio=(0.5, 0.75),
                    length=(0.06, 0.3), tort=(2.0, 4.5), avoid=eye.fovea, avoid_radius=faz)  # fmt: skip
    return [trunks, branches, twigs]


def _branch(
    rng: np.random.Generator,
    parent: Walks,
    *,
    slots: int,
    first: float,
    spacing: tuple[float, float],
    ratio: tuple[float, float],
    length: tuple[float, float],
    tort: tuple[float, float],
    avoid: np.ndarray,
    avoid_radius: float,
) -> Walks:
    """Sprout up to ``slots`` daughter vessels along each parent, alternating sides."""
    n, k = parent.valid.shape
    pos = first + np.cumsum(rng.uniform(*spacing, size=(n, slots)), axis=1)
    idx = np.minimum(np.rint(pos / GEOMETRY_STEP).astype(np.int64), k - 1)
    rows = np.repeat(np.arange(n), slots).reshape(n, slots)
    ok = (pos / GEOMETRY_STEP < k) & parent.valid[rows, idx]
    sides = np.where(rng.random((n, 1)) < 0.5, 1.0, -1.0) * (-1.0) ** np.arange(slots)[None, :]
    angle = sides * rng.uniform(0.5, 1.2, size=(n, slots))
    w_ratio = rng.uniform(*ratio, size=(n, slots))
    lens = rng.uniform(*length, size=(n, slots))
    torts = rng.uniform(*tort, size=(n, slots))
    turns = rng.uniform(-0.5, 0.5, size=(n, slots))
    r, c = rows[ok], idx[ok]
    return random_walks(
        rng, parent.xy[r, c], parent.heading[r, c] + angle[ok], lens[ok], parent.width[r, c] * w_ratio[ok],
        parent.kind[r], tortuosity=torts[ok], turn=turns[ok], turn_scale=np.full(r.shape, 0.2), taper=0.55,
        avoid=avoid, avoid_radius=avoid_radius,
    )  # fmt: skip
