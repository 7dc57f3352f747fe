"""Geometry helpers for the voxel phantoms: smooth random fields and signed-distance shapes.

Every shape is an approximate signed distance in millimetres (negative inside, zero on the
surface), evaluated on the voxels of a bounding box only, so that a phantom with a dozen organs
stays fast. Coordinates are ``(z, y, x)`` in mm, matching volumes shaped ``(D, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Value of a field far outside every shape (never compared against small thresholds).
FAR = np.float32(1.0e4)

Box = tuple[slice, slice, slice]


def axis_centres(n: int, step: float) -> np.ndarray:
    """Centres of ``n`` voxels of size ``step`` mm on an axis centred at 0, shape ``(n,)``."""
    return ((np.arange(n, dtype=np.float64) + 0.5) - n / 2.0) * step


def smooth_field(
    rng: np.random.Generator,
    coords: Sequence[np.ndarray],
    extent: Sequence[float],
    corr_mm: float,
) -> np.ndarray:
    """Gaussian random field with unit variance and Gaussian correlation of scale ``corr_mm``.

    Independent normal values on a control lattice covering ``extent`` mm are blended with
    separable Gaussian weights. The lattice depends on ``extent`` only, so the same draw gives the
    same continuous field whatever the voxel grid (``coords``) it is sampled on.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the control values.
    coords : sequence of 3 arrays
        Voxel-centre coordinates (mm, centred on 0) along z, y, x; lengths D, H, W.
    extent : sequence of 3 float
        Physical extent (mm) of the lattice along z, y, x.
    corr_mm : float
        Correlation scale: the field's correlation at distance r is about exp(-(r / corr_mm)^2).

    Returns
    -------
    numpy.ndarray
        float32 array shaped ``(D, H, W)``, zero mean and unit variance at every voxel.
    """
    sigma = corr_mm / 2.0
    step = 0.9 * sigma
    mats = []
    sizes = []
    for c, ext in zip(coords, extent):
        m = int(np.ceil(ext / step)) + 5
        ctrl = (np.arange(m) - (m - 1) / 2.0) * step
        w = np.exp(-0.5 * ((c[:, None] - ctrl[None, :]) / sigma) ** 2)
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        mats.append(w.astype(np.float32))
        sizes.append(m)
    values = rng.standard_normal(tuple(sizes), dtype=np.float32)
    d, h, w = (m.shape[0] for m in mats)
    out = np.tensordot(mats[0], values, axes=(1, 0))  # (D, my, mx)
    out = (out.reshape(-1, sizes[2]) @ mats[2].T).reshape(d, sizes[1], w)  # (D, my, W)
    return np.ascontiguousarray(mats[1] @ out)  # (D, H, W)


def frame(long_axis: Sequence[float], hint: Sequence[float]) -> np.ndarray:
    """Orthonormal frame whose first column is ``long_axis`` and second lies toward ``hint``.

    Returns a ``(3, 3)`` matrix whose columns are the world directions (z, y, x components) of
    the shape's local axes 0, 1, 2.
    """
    a = np.asarray(long_axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    b = np.asarray(hint, dtype=np.float64)
    b = b - a * (a @ b)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    return np.stack([a, b, c], axis=1)


class Grid:
    """Warped voxel coordinates of one volume.

    Parameters
    ----------
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in mm.
    z, y, x : numpy.ndarray
        float32 arrays ``(D, H, W)``: the (warped) anatomical coordinate of each voxel in mm.
        z runs from 0 at the bottom (inferior) face upward; y and x are centred on the volume.
    max_shift : float
        Largest displacement (mm) between a voxel's warped and unwarped coordinates.
    """

    def __init__(self, spacing: tuple[float, float, float], z: np.ndarray, y: np.ndarray,
                 x: np.ndarray, max_shift: float) -> None:
        self.spacing = spacing
        self.z, self.y, self.x = z, y, x
        self.shape = z.shape
        self.max_shift = float(max_shift)
        d, h, w = self.shape
        self._origin = (0.5 * spacing[0], -(h - 1) / 2.0 * spacing[1], -(w - 1) / 2.0 * spacing[2])

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> Box:
        """Voxel slices whose warped coordinates can fall in the mm box ``[lo, hi]`` (z, y, x)."""
        out = []
        for ax in range(3):
            step, o, n = self.spacing[ax], self._origin[ax], self.shape[ax]
            a = int(np.floor((lo[ax] - self.max_shift - o) / step))
            b = int(np.ceil((hi[ax] + self.max_shift - o) / step)) + 1
            out.append(slice(min(max(a, 0), n), min(max(b, 0), n)))
        return out[0], out[1], out[2]

    def local(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Warped (z, y, x) coordinates inside ``box``."""
        return self.z[box], self.y[box], self.x[box]


def ellipsoid(grid: Grid, centre: Sequence[float], semi: Sequence[float],
              axes: np.ndarray | None = None, box: Box | None = None) -> tuple[Box, np.ndarray]:
    """Approximate signed distance (mm) to an ellipsoid, on its bounding box.

    Parameters
    ----------
    centre : (z, y, x) in mm.
    semi : semi-axes in mm along the local axes (the columns of ``axes``; world z, y, x if None).
    axes : optional ``(3, 3)`` frame from :func:`frame`.
    box : optional voxel box to evaluate on instead of the ellipsoid's own bounding box.

    Returns
    -------
    box, field
        The voxel box and the float32 field on it: ``(|q| - 1) * min(semi)`` with ``q`` the point
        in units of the semi-axes (exact on the shortest axis, a fair distance near the surface).
    """
    if box is None:
        r = float(max(semi))
        box = grid.box([c - r for c in centre], [c + r for c in centre])
    z, y, x = grid.local(box)
    dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
    if axes is None:
        q = (dz / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2
    else:
        q = np.zeros_like(dz)
        for k in range(3):
            u = dz * axes[0, k] + dy * axes[1, k] + dx * axes[2, k]
            q += (u / semi[k]) ** 2
    return box, (np.sqrt(q) - 1.0) * np.float32(min(semi))


def tube(grid: Grid, points: Sequence[Sequence[float]], radii: Sequence[float],
         z_scale: float = 1.0) -> tuple[Box, np.ndarray]:
    """Signed distance (mm) to a tube of varying radius along a polyline, on its bounding box.

    Parameters
    ----------
    points : ``(N, 3)`` polyline vertices (z, y, x) in mm, N >= 2.
    radii : ``(N,)`` radius at each vertex (mm), interpolated linearly along each segment.
    z_scale : float
        Distances along z are multiplied by this before measuring (< 1 stretches the tube in z).
    """
    pts = np.asarray(points, dtype=np.float64)
    rad = np.asarray(radii, dtype=np.float64)
    rmax = float(rad.max())
    lo = pts.min(axis=0) - rmax / np.array([z_scale, 1.0, 1.0])
    hi = pts.max(axis=0) + rmax / np.array([z_scale, 1.0, 1.0])
    box = grid.box(lo, hi)
    z, y, x = grid.local(box)
    z = z * np.float32(z_scale)
    pts = pts * np.array([z_scale, 1.0, 1.0])
    field = np.full(z.shape, FAR, dtype=np.float32)
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        ab = b - a
        length2 = float(ab @ ab)
        pz, py, px = z - a[0], y - a[1], x - a[2]
        t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / length2, 0.0, 1.0)
        dist = np.sqrt((pz - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (px - t * ab[2]) ** 2)
        np.minimum(field, dist - (rad[i] + t * (rad[i + 1] - rad[i])), out=field)
    return box, field


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two distance fields with blend radius ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)
