"""Bring per-slice predictions on the preprocessed grid back onto a scan's native voxel grid.

Preprocessing (:func:`fedsilo.data.preprocess_volume.preprocess_volume`) crops, pads and
resizes in-plane and keeps the slices; it also updates the volume's affine (internal index ->
RAS+ mm) at every step. The map from a native voxel to its position on the preprocessed grid is
therefore ``inv(A_pre) @ A_native`` whatever the steps were, so the inverse needs no knowledge
of them: probabilities are sampled there with (bi)linear interpolation, and the arg-max gives
the native label map. Native voxels outside the preprocessed field of view are background.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def native_index_map(pre_affine: np.ndarray, native_affine: np.ndarray) -> np.ndarray:
    """``(4, 4)`` map from native internal indices ``(d, h, w, 1)`` to preprocessed ones.

    Raises
    ------
    ValueError
        When the map changes the slice axis (the preprocessing only works in-plane).
    """
    m = np.linalg.inv(np.asarray(pre_affine, dtype=np.float64)) @ np.asarray(native_affine, dtype=np.float64)
    if not np.allclose(m[0], [1, 0, 0, 0], atol=1e-4) or abs(m[1, 0]) > 1e-4 or abs(m[2, 0]) > 1e-4:
        raise ValueError(f"the preprocessed grid must keep the native slices (index map {np.round(m, 4).tolist()})")
    return m


def probabilities_to_native(probs: torch.Tensor, pre_affine: np.ndarray, native_affine: np.ndarray,
                            native_shape: tuple[int, int, int]) -> np.ndarray:
    """Native label map ``(D, H, W)`` uint8 from preprocessed-grid probabilities.

    Parameters
    ----------
    probs
        ``(D, K, h, w)`` class probabilities per slice on the preprocessed grid (channel 0 =
        background).
    pre_affine, native_affine
        ``(4, 4)`` internal index -> RAS+ mm of the preprocessed and the native grid.
    native_shape
        ``(D, H, W)`` of the native grid.
    """
    depth, k, h, w = probs.shape
    if depth != native_shape[0]:
        raise ValueError(f"probs must hold one slice per native slice ({native_shape[0]}), got {depth}")
    m = native_index_map(pre_affine, native_affine)
    rows, cols = native_shape[1:]
    hh, ww = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ph = m[1, 1] * hh + m[1, 2] * ww + m[1, 3]
    pw = m[2, 1] * hh + m[2, 2] * ww + m[2, 3]
    # grid_sample's normalised coordinates with align_corners=True: -1 = index 0, +1 = last index
    gy = 2 * ph / max(h - 1, 1) - 1
    gx = 2 * pw / max(w - 1, 1) - 1
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)).float()[None]
    out = np.empty(native_shape, dtype=np.uint8)
    for d in range(depth):
        # outside the field of view: zeros everywhere, then background wins the arg-max below
        sampled = F.grid_sample(probs[d : d + 1].float(), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)[0]
        inside = sampled.sum(0) > 1e-6
        sampled[0] = torch.where(inside, sampled[0], torch.ones_like(sampled[0]))
        out[d] = sampled.argmax(0).numpy().astype(np.uint8)
    return out
