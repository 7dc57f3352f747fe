"""Site-specific camera styles for the fundus phantom.

Each hospital photographs the retina with its own fundus camera, so images from one site share
a colour cast, a brightness/contrast setting, a vignetting profile, an optical blur and a sensor
noise level. A :class:`CameraStyle` holds these five knobs; :func:`camera_styles` draws ``k``
distinct, reproducible styles for ``k`` sites, which gives the federated experiments a realistic
feature-distribution shift between silos (Li et al., "FedBN", ICLR 2021, call this *feature
shift*). ``CameraStyle()`` is the neutral camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CameraStyle", "camera_styles", "apply_camera_style"]

#: Intensity around which ``contrast`` stretches (a typical fundus intensity in [0, 1]).
_CONTRAST_PIVOT = 0.35
#: Camera black level outside the field of view, RGB in [0, 1] (real fundus JPEGs are not pure 0).
_BLACK_LEVEL = np.array([0.015, 0.025, 0.045])
#: Salt that separates the style random stream from the image streams of the same seed.
_STYLE_STREAM = 0x5717E


@dataclass(frozen=True)
class CameraStyle:
    """Photometric signature of one fundus camera.

    Parameters
    ----------
    gains : tuple of 3 floats
        Per-channel (R, G, B) multiplicative gains: the colour cast. Each must be in (0, 4].
    vignetting : float
        Fraction of light lost at the edge of the field of view, in [0, 1): the image is
        multiplied by ``1 - vignetting * r**2`` with ``r`` the radius normalised to the field of view.
    blur : float
        Gaussian blur sigma as a fraction of the image side, in [0, 0.05] (``0.01`` is 0.64 px at
        64 px and 2.56 px at 256 px), so a camera looks the same at every resolution.
    brightness : float
        Global multiplicative exposure, > 0 and <= 4.
    contrast : float
        Linear contrast stretch around intensity 0.35, > 0 and <= 4.
    noise : float
        Standard deviation of additive Gaussian sensor noise in [0, 1] intensity units at 256 px,
        in [0, 0.5]; smaller images get ``noise * size / 256``, as if downsampled from 256 px.
    """

    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignetting: float = 0.15
    blur: float = 0.005
    brightness: float = 1.0
    contrast: float = 1.0
    noise: float = 0.01

    def __post_init__(self) -> None:
        gains = tuple(float(g) for g in self.gains)
        if len(gains) != 3 or not all(math.isfinite(g) and 0.0 < g <= 4.0 for g in gains):
            raise ValueError(f"gains must be 3 finite floats in (0, 4], got {self.gains!r}")
        object.__setattr__(self, "gains", gains)
        checks = (  # name, value, low, low included, high, high included
            ("vignetting", self.vignetting, 0.0, True, 1.0, False),
            ("blur", self.blur, 0.0, True, 0.05, True),
            ("brightness", self.brightness, 0.0, False, 4.0, True),
            ("contrast", self.contrast, 0.0, False, 4.0, True),
            ("noise", self.noise, 0.0, True, 0.5, True),
        )
        for name, value, lo, lo_in, hi, hi_in in checks:
            v = float(value)
            ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
            if not ok:
                text = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
                raise ValueError(f"{name} must be in {text}, got {value!r}")
            object.__setattr__(self, name, v)


def camera_styles(k: int, seed: int) -> list[CameraStyle]:
    """Draw ``k`` distinct, reproducible camera styles, one per site.

    Style ``j`` depends only on ``(seed, j)``, so the first styles are the same whatever ``k``.

    Parameters
    ----------
    k : int
        Number of sites, >= 1.
    seed : int
        Non-negative seed.

    Returns
    -------
    list of CameraStyle
        ``k`` styles with colour casts of up to about +-20 % per channel, vignetting 0.05-0.45,
        blur 0.2-1.4 % of the image side, brightness 0.8-1.2, contrast 0.8-1.25 and noise 0.005-0.03.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    seed = check_seed(seed)
    styles = []
    for j in range(int(k)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STYLE_STREAM], spawn_key=(j,)))
        gains = np.exp(rng.uniform(-0.2, 0.2, size=3)) * np.array([1.0, 1.0, 1.05])
        styles.append(
            CameraStyle(
                gains=(float(gains[0]), float(gains[1]), float(gains[2])),
                vignetting=float(rng.uniform(0.05, 0.45)),
                blur=float(rng.uniform(0.002, 0.014)),
                brightness=float(np.exp(rng.uniform(-0.2, 0.18))),
                contrast=float(np.exp(rng.uniform(-0.22, 0.22))),
                noise=float(rng.uniform(0.005, 0.03)),
            )
        )
    return styles


def apply_camera_style(
    image: np.ndarray,
    radius: np.ndarray,
    fov: np.ndarray,
    style: CameraStyle,
    rng: np.random.Generator,
    extra_blur_px: float = 0.0,
) -> np.ndarray:
    """Photograph a rendered retina with a camera.

    Colour cast, exposure, contrast and vignetting act on the retina; then the field-of-view stop
    masks it, the optics blur it, and the sensor adds its black level and noise.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` float RGB of the retina in about [0, 1] (not yet masked).
    radius : np.ndarray
        ``(H, W)`` distance of each pixel from the field-of-view centre, in field-of-view radii.
    fov : np.ndarray
        ``(H, W)`` field-of-view mask in [0, 1] (soft at the rim).
    style : CameraStyle
        The camera.
    rng : np.random.Generator
        Source of the sensor noise.
    extra_blur_px : float
        Per-image defocus (pixels) added in quadrature to the camera blur.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` float RGB clipped to [0, 1].
    """
    h, w = image.shape[:2]
    out = image * (np.asarray(style.gains) * style.brightness)
    out = np.maximum(_CONTRAST_PIVOT + style.contrast * (out - _CONTRAST_PIVOT), 0.0)
    out *= ((1.0 - style.vignetting * np.clip(radius, 0.0, 1.0) ** 2) * fov)[..., None]
    sigma = math.hypot(style.blur * max(h, w), extra_blur_px)
    if sigma > 0.05:
        out = ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0.0), mode="nearest")
    out += _BLACK_LEVEL
    if style.noise > 0:
        out += rng.standard_normal(out.shape) * (style.noise * min(h, w) / 256.0)
    return np.clip(out, 0.0, 1.0)


def check_seed(seed: int) -> int:
    """Return ``seed`` as an int; raise ValueError unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
