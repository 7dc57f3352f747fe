"""Overlay figures: image, ground truth and prediction side by side, one PNG per test modality."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedsilo.data.abdomen import SliceDataset
from fedsilo.data.labels import NUM_CLASSES, ORGANS

__all__ = ["ORGAN_COLOURS", "overlay_rgb", "pick_slices", "save_overlay"]

logger = logging.getLogger(__name__)

#: RGB in [0, 1] per class id (background unused).
ORGAN_COLOURS = np.array([
    [0.0, 0.0, 0.0],      # background
    [0.90, 0.25, 0.20],   # liver
    [0.20, 0.55, 0.95],   # right kidney
    [0.10, 0.85, 0.85],   # left kidney
    [0.55, 0.30, 0.85],   # spleen
    [0.95, 0.80, 0.15],   # pancreas
    [0.20, 0.80, 0.25],   # gallbladder
    [0.95, 0.50, 0.10],   # stomach
])


def overlay_rgb(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB ``(H, W, 3)`` picture of a grey image ``(H, W)`` with label colours blended in.

    The image is min-max scaled for display; label 255 (ignore) and 0 are not coloured.
    """
    if image.shape != labels.shape:
        raise ValueError(f"image and labels must have the same shape, got {image.shape} and {labels.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    lo, hi = float(image.min()), float(image.max())
    grey = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image, dtype=np.float64)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float64)
    organ = (labels > 0) & (labels < NUM_CLASSES)
    colours = ORGAN_COLOURS[np.where(organ, labels, 0)]
    rgb[organ] = (1 - alpha) * rgb[organ] + alpha * colours[organ]
    return rgb


def pick_slices(data: SliceDataset, modality: str, n: int = 3) -> np.ndarray:
    """Up to ``n`` slice indices of ``modality``: the slice with the most labelled organ pixels of
    each of the first ``n`` patients (different patients, so the rows are not near-duplicates)."""
    if data.labels is None:
        return np.zeros(0, dtype=np.int64)
    sel = np.flatnonzero(data.modalities == modality)
    if not len(sel):
        return np.zeros(0, dtype=np.int64)
    lab = data.labels[sel]
    fg = ((lab > 0) & (lab < NUM_CLASSES)).flatten(1).sum(1).numpy()
    chosen = []
    for pid in list(dict.fromkeys(data.patient_ids[sel].tolist()))[:n]:
        mine = np.flatnonzero(data.patient_ids[sel] == pid)
        chosen.append(int(sel[mine[np.argmax(fg[mine])]]))
    return np.array(chosen, dtype=np.int64)


def save_overlay(path: Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                 titles: list[str]) -> Path:
    """Write a grid: one row per slice, columns image | truth overlay | prediction overlay.

    Parameters
    ----------
    path
        PNG file to write (its folder is created).
    images
        ``(R, H, W)`` centre-channel images.
    truth, pred
        ``(R, H, W)`` label maps.
    titles
        One label per row (e.g. patient id and slice index).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = len(images)
    if not rows or not len(truth) == len(pred) == len(titles) == rows:
        raise ValueError(f"images, truth, pred and titles must have the same non-zero length, got "
                         f"{len(images)}, {len(truth)}, {len(pred)}, {len(titles)}")
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows), squeeze=False)
    for r in range(rows):
        shown = (images[r], overlay_rgb(images[r], truth[r]), overlay_rgb(images[r], pred[r]))
        for c, (img, name) in enumerate(zip(shown, ("image", "truth", "prediction"), strict=True)):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}" if c else f"{titles[r]}", fontsize=8)
    present = sorted({int(v) for v in np.unique(np.concatenate([truth.ravel(), pred.ravel()]))
                      if 0 < v < NUM_CLASSES})
    handles = [Patch(color=ORGAN_COLOURS[c], label=ORGANS[c]) for c in present]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    logger.debug("Overlay written: %s", path)
    return path
