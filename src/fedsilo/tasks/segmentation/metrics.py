"""Segmentation metrics: per-class Dice (2D slices and 3D per patient) and HD95 in millimetres.

Conventions (shared with :mod:`fedsilo.data.labels`):

- label maps are integer arrays/tensors; class ids ``0..C-1`` (0 = background) and
  :data:`~fedsilo.data.labels.IGNORE_INDEX` (255) for voxels of unknown class, which are excluded;
- ``annotated`` is a boolean mask ``(C,)`` (one site) or ``(B, C)`` (per sample) of the classes the
  site labels. An unannotated class is reported as NaN, and predictions of it are counted as
  background (the site's "background" contains that organ: the marginal view of Shi et al.,
  MedIA 2021, see :mod:`fedsilo.tasks.segmentation.losses`);
- a class absent from both truth and prediction gives NaN (no evidence either way), skipped by
  :func:`nanmean_per_class`.

Dice uses MONAI's :func:`monai.metrics.compute_dice`, HD95 MONAI's
:func:`monai.metrics.compute_hausdorff_distance` (edge voxels, Euclidean distances with the voxel
spacing, the larger of the two directed 95th percentiles).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from fedsilo.data.labels import IGNORE_INDEX, NUM_CLASSES

__all__ = [
    "as_annotated",
    "check_target",
    "dice_per_class",
    "hd95_per_class",
    "stack_slices",
    "per_patient_dice",
    "per_patient_hd95",
    "nanmean_per_class",
]

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor


def _to_long_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer label map, got dtype {t.dtype}")
    return t.long()


def as_annotated(annotated: ArrayLike | Sequence[bool] | None, batch: int, num_classes: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Expand an annotation mask to ``(B, C)`` bool; ``None`` means every class is annotated.

    ``annotated`` is ``(C,)`` (the same for every sample) or ``(B, C)``. Background (class 0) is
    always labelled, so ``annotated[..., 0]`` must be True.
    """
    if annotated is None:
        return torch.ones(batch, num_classes, dtype=torch.bool, device=device)
    a = torch.as_tensor(annotated, device=device)
    if a.dtype != torch.bool:
        raise ValueError(f"annotated must be a bool mask, got dtype {a.dtype}")
    if a.shape == (num_classes,):
        a = a.unsqueeze(0).expand(batch, num_classes)
    if a.shape != (batch, num_classes):
        raise ValueError(f"annotated must be shaped ({num_classes},) or ({batch}, {num_classes}), got {tuple(a.shape)}")
    if not bool(a[:, 0].all()):
        raise ValueError("annotated[..., 0] (background) must be True: every site labels background")
    return a


def check_target(target: torch.Tensor, num_classes: int, ignore_index: int, annotated: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``target`` ``(B, ...)`` holds ids in ``[0, C)`` or ``ignore_index``
    and no sample carries a class that ``annotated`` ``(B, C)`` marks as not labelled."""
    valid = target != ignore_index
    t = target[valid]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target values must be in [0, {num_classes}) or {ignore_index}, "
                         f"got [{int(t.min())}, {int(t.max())}]")
    b = target.shape[0]
    present = torch.zeros(b, num_classes, dtype=torch.bool, device=target.device)
    safe = torch.where(valid, target, 0).reshape(b, -1)
    present.scatter_(1, safe, valid.reshape(b, -1))
    bad = present & ~annotated
    if bool(bad.any()):
        s, c = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"target of sample {s} contains class {c}, which annotated marks as not labelled")


def _check_labels(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int,
                  annotated: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"pred values must be in [0, {num_classes}), got [{int(pred.min())}, {int(pred.max())}]")
    check_target(target, num_classes, ignore_index, annotated)


def _merge_unannotated(pred: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Set predictions of classes a sample does not annotate to background (0)."""
    b = pred.shape[0]
    flat = pred.reshape(b, -1)
    keep = torch.gather(annotated, 1, flat)
    return torch.where(keep, flat, 0).reshape(pred.shape)


def dice_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int = NUM_CLASSES,
                   annotated: ArrayLike | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Dice per sample and class for label maps (2D slices ``(B, H, W)`` or volumes ``(B, D, H, W)``).

    Parameters
    ----------
    pred, target
        Integer label maps of the same shape ``(B, ...)``; ``target`` may hold ``ignore_index``.
    num_classes
        ``C``, background included.
    annotated
        ``(C,)`` or ``(B, C)`` bool, or ``None`` (all classes labelled).
    ignore_index
        Target value of voxels excluded from the computation.

    Returns
    -------
    torch.Tensor
        ``(B, C)`` float64 Dice; column ``c`` is class id ``c``. NaN where the class is unannotated
        for that sample or absent from both truth and prediction (over non-ignored voxels).
    """
    p, t = _to_long_tensor(pred, "pred"), _to_long_tensor(target, "target")
    if p.ndim < 2:
        raise ValueError(f"pred must be shaped (B, ...) with at least one spatial dim, got {tuple(p.shape)}")
    ann = as_annotated(annotated, p.shape[0], num_classes, p.device)
    _check_labels(p, t, num_classes, ignore_index, ann)
    p = _merge_unannotated(p, ann)
    dice = compute_dice(p.unsqueeze(1), t.unsqueeze(1), include_background=True, ignore_empty=False,
                        num_classes=num_classes, ignore_index=ignore_index).double()
    valid = (t != ignore_index).reshape(t.shape[0], -1)
    classes = torch.arange(num_classes, device=p.device)
    in_pred = ((p.reshape(p.shape[0], -1, 1) == classes) & valid.unsqueeze(-1)).any(dim=1)
    in_true = ((t.reshape(t.shape[0], -1, 1) == classes) & valid.unsqueeze(-1)).any(dim=1)
    undefined = ~(in_pred | in_true) | ~ann
    return dice.masked_fill(undefined, float("nan"))


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or any(not s > 0 or not math.isfinite(s) for s in sp):
        raise ValueError(f"spacing must be {ndim} positive finite numbers (one per axis, in mm), got {spacing!r}")
    return sp


def hd95_per_class(pred: ArrayLike, target: ArrayLike, spacing: Sequence[float], num_classes: int = NUM_CLASSES,
                   annotated: ArrayLike | None = None, ignore_index: int = IGNORE_INDEX, percentile: float = 95.0,
                   empty_penalty: float | None = None) -> np.ndarray:
    """95th-percentile Hausdorff distance in mm per class for one image or volume.

    Parameters
    ----------
    pred, target
        Integer label maps ``(H, W)`` or ``(D, H, W)``.
    spacing
        Voxel size in mm per axis, ``(dy, dx)`` or ``(dz, dy, dx)``.
    num_classes, annotated, ignore_index
        As for :func:`dice_per_class` (``annotated`` is ``(C,)``).
    percentile
        In ``(0, 100]``; 95 gives HD95, 100 the Hausdorff distance.
    empty_penalty
        Value when exactly one of truth and prediction is empty; ``None`` uses the diagonal of the
        image extent in mm (the largest distance the image allows).

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64; background (index 0), unannotated classes and classes absent from both
        truth and prediction are NaN. Ignored voxels count as neither truth nor prediction.
    """
    p, t = _to_long_tensor(pred, "pred"), _to_long_tensor(target, "target")
    if p.ndim not in (2, 3):
        raise ValueError(f"pred must be shaped (H, W) or (D, H, W), got {tuple(p.shape)}")
    sp = _check_spacing(spacing, p.ndim)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if empty_penalty is not None and not empty_penalty >= 0:
        raise ValueError(f"empty_penalty must be >= 0 or None, got {empty_penalty!r}")
    ann = as_annotated(annotated, 1, num_classes, p.device)
    _check_labels(p.unsqueeze(0), t.unsqueeze(0), num_classes, ignore_index, ann)
    p = _merge_unannotated(p.unsqueeze(0), ann)[0]
    valid = t != ignore_index
    if empty_penalty is None:
        empty_penalty = math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, sp)))
    out = np.full(num_classes, np.nan)
    for c in range(1, num_classes):
        if not bool(ann[0, c]):
            continue
        yp, yt = (p == c) & valid, (t == c) & valid
        has_p, has_t = bool(yp.any()), bool(yt.any())
        if not (has_p or has_t):
            continue
        if has_p != has_t:
            out[c] = empty_penalty
            continue
        with warnings.catch_warnings():  # MONAI 1.6 warns about an argument it passes itself
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd = compute_hausdorff_distance(yp[None, None], yt[None, None], include_background=True,
                                            percentile=percentile, spacing=list(sp))
        out[c] = float(hd[0, 0])
    return out


def stack_slices(slices: ArrayLike, patient_ids: Sequence[Hashable],
                 slice_indices: Sequence[int]) -> dict[Hashable, np.ndarray]:
    """Re-stack 2D slices ``(N, H, W)`` into one volume ``(D, H, W)`` per patient, ordered by slice index.

    Raises ``ValueError`` on mismatched lengths or a repeated (patient, slice index) pair; logs a
    warning when a patient's slice indices are not contiguous (distances along z would be wrong).
    """
    arr = slices.detach().cpu().numpy() if isinstance(slices, torch.Tensor) else np.asarray(slices)
    if arr.ndim != 3:
        raise ValueError(f"slices must be shaped (N, H, W), got {arr.shape}")
    if not len(patient_ids) == len(slice_indices) == arr.shape[0]:
        raise ValueError(f"patient_ids and slice_indices must both have length N={arr.shape[0]}, "
                         f"got {len(patient_ids)} and {len(slice_indices)}")
    groups: dict[Hashable, list[tuple[int, int]]] = {}
    for i, (pid, z) in enumerate(zip(patient_ids, slice_indices)):
        groups.setdefault(pid, []).append((int(z), i))
    out: dict[Hashable, np.ndarray] = {}
    for pid, items in groups.items():
        items.sort()
        zs = [z for z, _ in items]
        if len(set(zs)) != len(zs):
            raise ValueError(f"slice_indices must be unique per patient, patient {pid!r} repeats {sorted(zs)}")
        if zs[-1] - zs[0] + 1 != len(zs):
            logger.warning("patient %s: slice indices %s are not contiguous", pid, zs)
        out[pid] = arr[[i for _, i in items]]
    return out


def _annotated_for(annotated: ArrayLike | Mapping[Hashable, ArrayLike] | None, pid: Hashable) -> ArrayLike | None:
    if isinstance(annotated, Mapping):
        if pid not in annotated:
            raise ValueError(f"annotated has no entry for patient {pid!r}")
        return annotated[pid]
    return annotated


def per_patient_dice(pred_slices: ArrayLike, true_slices: ArrayLike, patient_ids: Sequence[Hashable],
                     slice_indices: Sequence[int], num_classes: int = NUM_CLASSES,
                     annotated: ArrayLike | Mapping[Hashable, ArrayLike] | None = None,
                     ignore_index: int = IGNORE_INDEX) -> dict[Hashable, np.ndarray]:
    """3D Dice per patient and class from 2D slice predictions ``(N, H, W)``.

    ``annotated`` is ``(C,)`` for all patients or a mapping patient id -> ``(C,)``. Returns
    patient id -> ``(C,)`` float64 (NaN as in :func:`dice_per_class`).
    """
    preds = stack_slices(pred_slices, patient_ids, slice_indices)
    trues = stack_slices(true_slices, patient_ids, slice_indices)
    return {pid: dice_per_class(preds[pid][None], trues[pid][None], num_classes,
                                _annotated_for(annotated, pid), ignore_index)[0].numpy()
            for pid in preds}


def per_patient_hd95(pred_slices: ArrayLike, true_slices: ArrayLike, patient_ids: Sequence[Hashable],
                     slice_indices: Sequence[int], spacing: Sequence[float] | Mapping[Hashable, Sequence[float]],
                     num_classes: int = NUM_CLASSES, annotated: ArrayLike | Mapping[Hashable, ArrayLike] | None = None,
                     ignore_index: int = IGNORE_INDEX, percentile: float = 95.0,
                     empty_penalty: float | None = None) -> dict[Hashable, np.ndarray]:
    """3D HD95 (mm) per patient and class; ``spacing`` is ``(dz, dy, dx)`` or patient id -> that."""
    preds = stack_slices(pred_slices, patient_ids, slice_indices)
    trues = stack_slices(true_slices, patient_ids, slice_indices)
    out = {}
    for pid in preds:
        sp = spacing[pid] if isinstance(spacing, Mapping) else spacing
        out[pid] = hd95_per_class(preds[pid], trues[pid], sp, num_classes, _annotated_for(annotated, pid),
                                  ignore_index, percentile, empty_penalty)
    return out


def nanmean_per_class(values: Mapping[Hashable, np.ndarray] | ArrayLike) -> np.ndarray:
    """Mean over cases per class, skipping NaN; NaN for a class with no defined value.

    ``values`` is ``(N, C)`` or a mapping case -> ``(C,)``. Returns ``(C,)`` float64.
    """
    if isinstance(values, Mapping):
        if not values:
            raise ValueError("values must hold at least one case, got an empty mapping")
        values = np.stack([np.asarray(v, dtype=np.float64) for v in values.values()])
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
    if arr.ndim != 2:
        raise ValueError(f"values must be shaped (N, C), got {arr.shape}")
    count = np.sum(~np.isnan(arr), axis=0)
    total = np.nansum(arr, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
