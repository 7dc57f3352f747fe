"""Fundus preprocessing as in the FedGAN pipeline: resize, grey or RGB, CLAHE, gamma, quantise.

Defaults (``[data.preprocess]``): RGB, no CLAHE, gamma 1 (off), no quantisation; images are
resized to ``data.image_size`` with anti-aliasing. CLAHE (Zuiderveld, Graphics Gems IV, 1994) is
scikit-image's ``equalize_adapthist`` applied per channel with ``clahe_tiles`` tiles per side.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.exposure import equalize_adapthist
from skimage.transform import resize

from fedsilo.config.data_schema import FundusPreprocessSection
from fedsilo.data.images import ImageArrays, ImageDataset

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def preprocess_fundus(arrays: ImageArrays, size: int, cfg: FundusPreprocessSection) -> ImageDataset:
    """Turn raw uint8 images into a model-ready :class:`ImageDataset`.

    Parameters
    ----------
    arrays
        Images (N, H, W, C) uint8.
    size
        Output side length in pixels.
    cfg
        Preprocessing settings.

    Returns
    -------
    ImageDataset
        uint8 images (N, C', size, size) with C' = 1 when ``grayscale`` else the input's C.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    imgs = arrays.images
    n, h, w, c = imgs.shape
    needs_float = (h, w) != (size, size) or cfg.grayscale or cfg.clahe or cfg.gamma != 1.0 or cfg.quantise_levels
    if not needs_float:
        out = imgs
    else:
        out_c = 1 if cfg.grayscale else c
        out = np.empty((n, size, size, out_c), dtype=np.uint8)
        for i in range(n):
            out[i] = _one(imgs[i], size, cfg)
    tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))
    return ImageDataset(tensor, torch.from_numpy(arrays.labels))


def _one(img: np.ndarray, size: int, cfg: FundusPreprocessSection) -> np.ndarray:
    x = img.astype(np.float64) / 255.0
    if x.shape[:2] != (size, size):
        x = resize(x, (size, size, x.shape[2]), order=1, anti_aliasing=True, preserve_range=True)
    if cfg.grayscale and x.shape[2] == 3:
        x = (x @ _LUMA)[..., None]
    x = np.clip(x, 0.0, 1.0)
    if cfg.clahe:
        kernel = max(2, size // cfg.clahe_tiles)
        x = np.stack(
            [equalize_adapthist(x[..., ch], kernel_size=kernel, clip_limit=cfg.clahe_clip) for ch in range(x.shape[2])],
            axis=-1,
        )
    if cfg.gamma != 1.0:
        x = np.power(x, cfg.gamma)
    if cfg.quantise_levels:
        q = cfg.quantise_levels - 1
        x = np.round(x * q) / q
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
