"""Rasterise an eye, its vessel tree and its lesions into an RGB image at any resolution.

Vessels and lesions are sums of Gaussian spots splatted straight at the target resolution
(one ``np.bincount`` per spot size). A feature narrower than :data:`SIGMA_MIN` pixels is drawn at
that width with a proportionally lower opacity, so it keeps its integrated darkness: a
microaneurysm fades into a faint smudge at 28 px, as it does when a real photograph is
downsampled, instead of aliasing into a full-contrast pixel or vanishing.
"""

from __future__ import annotations

import numpy as np

from fedsilo.data.phantoms.fundus_anatomy import GEOMETRY_STEP, Eye, Walks
from fedsilo.data.phantoms.fundus_lesions import LAYERS, Blobs, Lesions

__all__ = ["SIGMA_MIN", "lesion_footprint", "render_retina", "splat"]

#: Narrowest Gaussian (pixels) that is drawn.
SIGMA_MIN = 0.55
_L = {name: i for i, name in enumerate(LAYERS)}
_FIRST_LESION, _LAST_LESION = _L["microaneurysm"], _L["laser_scar_pale"]
#: Opacity = clip(gain * splatted density, 0, 1): gains above 1 give crisper edges.
_GAIN = np.ones(len(LAYERS))
_GAIN[[_L["hard_exudate"], _L["preretinal_haemorrhage"], _L["neovascularisation"]]] = (1.8, 1.6, 1.5)
#: Layers that darken: RGB transmittance at full opacity.
_DARK = {
    "vein": (0.66, 0.38, 0.46), "artery": (0.88, 0.68, 0.72), "microaneurysm": (0.58, 0.24, 0.32),
    "haemorrhage": (0.58, 0.24, 0.32), "irma": (0.68, 0.42, 0.52), "neovascularisation": (0.66, 0.4, 0.5),
    "preretinal_haemorrhage": (0.45, 0.14, 0.22), "laser_scar": (0.3, 0.26, 0.26), "naevus": (0.62, 0.74, 0.9),
}  # fmt: skip
#: Layers that cover the retina with their own colour (scaled by the local illumination).
_BRIGHT = {
    "hard_exudate": (1.0, 0.9, 0.45), "cotton_wool_spot": (0.95, 0.9, 0.82), "laser_scar_pale": (0.92, 0.82, 0.62),
    "drusen": (0.97, 0.82, 0.5), "sheen": (1.0, 0.9, 0.8),
}  # fmt: skip
_ORDER = (
    "naevus", "disc", "sheen", "vein", "artery", "drusen", "hard_exudate", "microaneurysm", "haemorrhage",
    "cotton_wool_spot", "irma", "neovascularisation", "preretinal_haemorrhage", "laser_scar", "laser_scar_pale",
)  # fmt: skip
_LIGHT_FUNDUS = np.array([0.9, 0.57, 0.3])  # lightly pigmented (blond) fundus
_DARK_FUNDUS = np.array([0.62, 0.32, 0.16])  # heavily pigmented fundus
_DISC_RIM = np.array([0.98, 0.72, 0.44])
_DISC_CUP = np.array([1.0, 0.9, 0.7])
_HAZE = (np.array([0.75, 0.85, 0.9]), np.array([0.95, 0.85, 0.5]))  # bluish-white or yellow stray light


def splat(
    shape: tuple[int, int, int], x: np.ndarray, y: np.ndarray, sigma: np.ndarray, peak: np.ndarray, layer: np.ndarray
) -> np.ndarray:
    """Sum isotropic Gaussian spots into a stack of layers.

    Parameters
    ----------
    shape : (L, H, W)
        Output shape.
    x, y : (P,)
        Spot centres in pixels (pixel ``j`` covers ``[j, j + 1)``).
    sigma, peak : (P,)
        Standard deviation (pixels, > 0) and peak value of each spot.
    layer : (P,) int
        Layer of each spot.

    Returns
    -------
    np.ndarray
        ``(L, H, W)`` float64 density.
    """
    n_layers, h, w = shape
    out = np.zeros(n_layers * h * w)
    # taps reach pixel centres >= 2.2 sigma away (what is cut off weighs < 9 % of the peak)
    radius = np.clip(np.ceil(2.2 * sigma - 0.5).astype(np.int64), 1, 64)
    for r in np.unique(radius):
        sel = radius == r
        off = np.arange(-r, r + 1)
        ix = np.floor(x[sel]).astype(np.int64)[:, None] + off
        iy = np.floor(y[sel]).astype(np.int64)[:, None] + off
        s2 = 2.0 * sigma[sel, None] ** 2
        gx = np.exp(-((ix + 0.5 - x[sel, None]) ** 2) / s2) * ((ix >= 0) & (ix < w))
        gy = np.exp(-((iy + 0.5 - y[sel, None]) ** 2) / s2) * ((iy >= 0) & (iy < h))
        weight = peak[sel, None, None] * gy[:, :, None] * gx[:, None, :]
        flat = (layer[sel, None, None] * h + np.clip(iy, 0, h - 1)[:, :, None]) * w + np.clip(ix, 0, w - 1)[:, None, :]
        out += np.bincount(flat.ravel(), weights=weight.ravel(), minlength=out.size)
    return out.reshape(n_layers, h, w)


def render_retina(eye: Eye, lesions: Lesions, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one retina (before the camera) at ``size`` x ``size`` pixels.

    Returns
    -------
    rgb : np.ndarray
        ``(H, W, 3)`` float RGB of the retina in about [0, 1], not yet masked by the field of view.
    opacity : np.ndarray
        ``(len(LAYERS), H, W)`` opacity in [0, 1] of every vessel/lesion layer.
    radius : np.ndarray
        ``(H, W)`` distance from the field-of-view centre in FOV radii.
    fov : np.ndarray
        ``(H, W)`` field-of-view mask in [0, 1], anti-aliased over one pixel at the rim.
    """
    r_px = eye.fov_radius * size
    cx, cy = eye.centre[0] * size, eye.centre[1] * size
    xs = (np.arange(size) + 0.5 - cx) / r_px
    ys = (np.arange(size) + 0.5 - cy) / r_px
    xx, yy = np.meshgrid(xs, ys)
    radius = np.hypot(xx, yy)

    # background: pigmentation, illumination falling off to the periphery, choroidal texture
    illum = 1.0 - eye.illum_falloff * np.minimum(radius, 1.0) ** 1.3
    illum += eye.illum_gradient[0] * xx + eye.illum_gradient[1] * yy
    illum = np.clip(illum, 0.25, 1.4) * eye.brightness
    tex = sum(a * _smooth_field(g, xs, ys) for a, g in zip((0.07, 0.035, 0.03), eye.textures, strict=True))
    base = (1.0 - eye.pigment) * _LIGHT_FUNDUS + eye.pigment * _DARK_FUNDUS
    rgb = base * eye.white_balance * illum[..., None] * (1.0 + tex[..., None] * np.array([0.8, 1.2, 1.2]))
    dd = eye.disc_diameter
    d2 = (xx - eye.fovea[0]) ** 2 + (yy - eye.fovea[1]) ** 2
    macula = eye.macula_depth * np.exp(-d2 / (2 * (eye.macula_size * dd) ** 2))
    macula += 0.12 * np.exp(-d2 / (2 * (0.12 * dd) ** 2))  # the fovea
    rgb *= 1.0 - macula[..., None] * np.array([0.6, 1.0, 0.9])

    # vessels and lesions
    density = _splat_features(eye, lesions, size)
    opacity = np.clip(density * _GAIN[:, None, None], 0.0, 1.0)
    light = (0.55 + 0.45 * illum)[..., None]
    active = opacity.reshape(len(LAYERS), -1).max(axis=1) > 0
    for name in _ORDER:
        if name == "disc":
            rgb, cup = _draw_disc(rgb, eye, xx, yy, illum)
            # vessels plunge into the cup, seen end-on: they fade there instead of piling up
            opacity[[_L["vein"], _L["artery"]]] *= 1.0 - 0.7 * cup
        elif not active[_L[name]]:
            continue
        elif name in _DARK:
            rgb *= 1.0 - opacity[_L[name], ..., None] * (1.0 - np.asarray(_DARK[name]))
        else:
            op = opacity[_L[name], ..., None]
            rgb = rgb * (1.0 - op) + op * np.asarray(_BRIGHT[name]) * light

    if eye.haze > 0:  # stray light: a bright crescent at the rim of the field of view
        ang = np.arctan2(yy, xx) - eye.haze_angle
        wgt = eye.haze * np.exp(-np.abs(1.0 - radius) / 0.12) * (0.5 + 0.5 * np.cos(ang)) ** 3
        colour = _HAZE[eye.haze_tint]
        rgb = rgb * (1.0 - wgt[..., None]) + wgt[..., None] * colour * eye.brightness
    fov = np.clip((1.0 - radius) * r_px + 0.5, 0.0, 1.0)
    return rgb, opacity, radius, fov


def _draw_disc(
    rgb: np.ndarray, eye: Eye, xx: np.ndarray, yy: np.ndarray, illum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optic disc: a yellow-pink vertical ellipse, paler temporally, with a brighter cup; returns rgb, cup."""
    a = eye.disc_radius
    dx, dy = xx - eye.disc[0], yy - eye.disc[1]
    de = np.hypot(dx / a, dy / (a * eye.disc_aspect))
    disc = 1.0 / (1.0 + np.exp((de - 1.0) / 0.1))
    cx = dx + eye.side * 0.15 * a  # the cup sits slightly temporal
    dc = np.hypot(cx, dy / eye.disc_aspect) / (eye.cup_ratio * a)
    cup = 1.0 / (1.0 + np.exp((dc - 1.0) / 0.2))
    temporal = np.clip(-eye.side * dx / a, -1.0, 1.0)[..., None]
    colour = _DISC_RIM * (1.0 + 0.08 * temporal * np.array([0.0, 1.0, 1.0]))
    colour = colour * (1.0 - cup[..., None]) + _DISC_CUP * cup[..., None]
    colour = colour * (0.8 + 0.2 * illum[..., None] / eye.brightness) * eye.brightness
    return rgb * (1.0 - disc[..., None]) + colour * disc[..., None], cup


def lesion_footprint(eye: Eye, lesions: Lesions, size: int) -> np.ndarray:
    """Where each lesion lies, whatever its contrast: ``(len(LAYERS), H, W)`` in [0, 1].

    Every DR-lesion spot and abnormal vessel is splatted with unit peak (at least the pixel under
    its centre reaches 1), so faint sub-pixel lesions still appear; vessel and confounder layers
    are left empty. Thresholding at 0.5 gives lesion masks.
    """
    return np.clip(_splat_features(eye, lesions, size, footprint=True), 0.0, 1.0)


def _splat_features(eye: Eye, lesions: Lesions, size: int, footprint: bool = False) -> np.ndarray:
    """Density ``(L, H, W)`` of all vessel polylines and lesion spots (``footprint``: lesions at unit peak)."""
    r_px = eye.fov_radius * size
    cx, cy = eye.centre[0] * size, eye.centre[1] * size
    xs, ys, sig, peak, lay = [], [], [], [], []
    for walks in lesions.walks if footprint else [*lesions.tree, *lesions.walks]:
        x, y, width, layer, step = _walk_points(walks, r_px)
        s_px = width * r_px / 2.355
        s_eff = np.maximum(s_px, SIGMA_MIN)
        xs.append(x)
        ys.append(y)
        sig.append(s_eff)
        peak.append(step / (np.sqrt(2 * np.pi) * s_eff) * (1.0 if footprint else s_px / s_eff))
        lay.append(layer)
    b: Blobs = lesions.blobs
    keep = (b.layer >= _FIRST_LESION) & (b.layer <= _LAST_LESION) if footprint else np.ones(b.layer.shape, bool)
    s_px = b.sigma[keep] * r_px
    s_eff = np.maximum(s_px, SIGMA_MIN)
    xs.append(b.x[keep])
    ys.append(b.y[keep])
    sig.append(s_eff)
    peak.append(np.ones(s_px.shape) if footprint else b.amp[keep] * (s_px / s_eff) ** 2)
    lay.append(b.layer[keep])
    x, y = np.concatenate(xs) * r_px + cx, np.concatenate(ys) * r_px + cy
    return splat((len(LAYERS), size, size), x, y, np.concatenate(sig), np.concatenate(peak), np.concatenate(lay))


def _walk_points(walks: Walks, r_px: float) -> tuple[np.ndarray, ...]:
    """Valid polyline points resampled to about 0.2-0.45 px apart; returns x, y, width, layer, step_px."""
    up = max(1, int(np.ceil(GEOMETRY_STEP * r_px / 0.45)))
    stride = max(1, int(0.45 / (GEOMETRY_STEP * r_px)))  # small images: keep every stride-th point
    xy, width, valid = walks.xy[:, ::stride], walks.width[:, ::stride], walks.valid[:, ::stride]
    if up > 1 and xy.shape[1] > 1:
        t = (np.arange(up) / up)[None, None, :]
        xy = (xy[:, :-1, None, :] * (1 - t[..., None]) + xy[:, 1:, None, :] * t[..., None]).reshape(xy.shape[0], -1, 2)
        width = (width[:, :-1, None] * (1 - t) + width[:, 1:, None] * t).reshape(width.shape[0], -1)
        valid = np.repeat(valid[:, :-1] & valid[:, 1:], up, axis=1)
    layer = np.broadcast_to(walks.kind[:, None], valid.shape)[valid]
    step = np.full(layer.shape, GEOMETRY_STEP * r_px * stride / up)
    return xy[valid][:, 0], xy[valid][:, 1], width[valid], layer, step


def _smooth_field(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Resolution-free smooth noise: Gaussian-RBF interpolation of a ``(g, g)`` grid over [-1.1, 1.1]^2.

    The field has unit variance where the pixels resolve it; where they do not, it is low-passed
    to the pixel spacing (anti-aliasing), which lowers its variance as a real downsampling would.
    """
    g = grid.shape[0]
    nodes = np.linspace(-1.1, 1.1, g)
    s0 = 0.7 * (nodes[1] - nodes[0])
    sk = np.hypot(s0, 0.5 * abs(float(xs[1] - xs[0])))
    ax = np.exp(-((xs[:, None] - nodes[None, :]) ** 2) / (2 * sk * sk)) * (s0 / sk)
    ay = np.exp(-((ys[:, None] - nodes[None, :]) ** 2) / (2 * sk * sk)) * (s0 / sk)
    return ay @ grid @ ax.T / (0.7 * np.sqrt(np.pi))
