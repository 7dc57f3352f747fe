"""Sample grids of images (a numpy stand-in for torchvision's ``make_grid`` / ``save_image``)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from torch import Tensor

from fedsilo.tasks.synthesis.stats import check_images

__all__ = ["sample_grid", "save_grid_png", "to_uint8"]


def to_uint8(images: Tensor) -> np.ndarray:
    """Images ``(B, C, H, W)`` in [-1, 1] -> ``uint8`` array ``(B, H, W, C)`` (-1 -> 0, 1 -> 255, rounded)."""
    check_images(images)
    x = images.detach().float().cpu().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images into one ``uint8`` array ``(H', W', C)``, ``nrow`` images per row.

    Parameters
    ----------
    images
        ``(B, C, H, W)`` in [-1, 1]; C is 1 or 3.
    nrow
        Images per row (as torchvision's ``make_grid``); rows = ceil(B / nrow); empty cells are padding.
    padding
        Pixels between images and around the grid.
    pad_value
        Grey level 0-255 of the padding.

    Returns
    -------
    np.ndarray
        ``uint8`` ``(rows * (H + padding) + padding, cols * (W + padding) + padding, C)``.
    """
    check_images(images)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in [0, 255], got {pad_value}")
    tiles = to_uint8(images)
    b, h, w, c = tiles.shape
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    for idx in range(b):
        r, q = divmod(idx, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y : y + h, x : x + w] = tiles[idx]
    return grid


def save_grid_png(images: Tensor, path: str | Path, nrow: int = 8, padding: int = 2, scale: int = 1) -> Path:
    """Write :func:`sample_grid` of ``images`` to an RGB PNG file and return its path.

    Grey images are written with the grey level in all three channels (exact; matplotlib's grey
    colormap would requantise the levels). ``scale`` enlarges every pixel to a ``scale x scale``
    block (nearest neighbour: small images stay sharp in reports).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    grid = sample_grid(images, nrow=nrow, padding=padding)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    matplotlib.image.imsave(path, np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid)
    return path
