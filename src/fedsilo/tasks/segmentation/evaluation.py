"""Predicting slices and scoring them per organ and per modality.

Metric names (what :meth:`SegmentationTask.evaluate` returns; the server logs them as ``test_*``):

- ``dice2d_<mod>_<organ>``: 2D Dice per slice, averaged over the slices where the organ is in the
  truth or the prediction;
- ``dice3d_<mod>_<organ>``: 3D Dice per patient (slices re-stacked by patient id and slice
  index), averaged over patients;
- ``hd95_<mod>_<organ>``: 3D 95th-percentile Hausdorff distance in mm per patient (MONAI),
  averaged over patients;
- ``<family>_<mod>_mean``: the mean over the organs reported for that modality, and
  ``dice3d_mean`` / ``dice2d_mean``: the mean over modalities of those means.

``<mod>`` is the slices' modality (``ct``, ``mr``); every test set of one modality is pooled
(patients stay distinct: ids are prefixed with the test set's name). Only organs the test data
annotates and that occur in its truth or in the predictions are reported.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedsilo.data.abdomen import SliceDataset
from fedsilo.data.labels import NUM_CLASSES, ORGANS
from fedsilo.tasks.base import evaluating
from fedsilo.tasks.segmentation.metrics import dice_per_class, nanmean_per_class, per_patient_dice, per_patient_hd95

__all__ = ["FAMILIES", "forward_by_domain", "merge_test_sets", "modality_metrics", "predict", "probabilities",
           "slice_dice"]

#: Metric families, with whether higher is better.
FAMILIES: dict[str, bool] = {"dice3d": True, "dice2d": True, "hd95": False}


def forward_by_domain(model: nn.Module, x: torch.Tensor, modalities: np.ndarray, dsbn: bool) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` of images ``(B, C, H, W)``; with DSBN each modality's slices go through
    the batch norms of their domain (one forward per modality present), otherwise one forward."""
    if not dsbn:
        return model(x)
    mods = np.asarray(modalities)
    kinds = list(dict.fromkeys(mods.tolist()))
    if len(kinds) == 1:
        return model(x, domain=kinds[0])
    out: torch.Tensor | None = None
    for mod in kinds:
        idx = torch.as_tensor(np.flatnonzero(mods == mod), device=x.device)
        logits = model(x[idx], domain=mod)
        if out is None:
            out = logits.new_empty((x.shape[0], *logits.shape[1:]))
        out[idx] = logits
    assert out is not None
    return out


def _batched_logits(model: nn.Module, data: SliceDataset, device: torch.device, batch_size: int, dsbn: bool,
                    indices: np.ndarray | None):
    """Yield logits ``(b, K, H, W)`` of consecutive batches of the slices ``indices`` (default all)."""
    idx_all = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    model.to(device)
    with evaluating(model):
        for start in range(0, len(idx_all), batch_size):
            idx = torch.as_tensor(idx_all[start:start + batch_size])
            x, _, _ = data.batch(idx, device)
            yield forward_by_domain(model, x, data.modalities[idx.numpy()], dsbn)


def predict(model: nn.Module, data: SliceDataset, device: torch.device, batch_size: int, dsbn: bool,
            indices: np.ndarray | None = None) -> torch.Tensor:
    """Arg-max label maps ``(N, H, W)`` uint8 on the CPU for the slices ``indices`` (default all)."""
    preds = [logits.argmax(1).to(torch.uint8).cpu()
             for logits in _batched_logits(model, data, device, batch_size, dsbn, indices)]
    if not preds:
        h, w = data.images.shape[-2:]
        return torch.zeros(0, h, w, dtype=torch.uint8)
    return torch.cat(preds)


def probabilities(model: nn.Module, data: SliceDataset, device: torch.device, batch_size: int,
                  dsbn: bool) -> torch.Tensor:
    """Softmax class probabilities ``(N, K, H, W)`` float32 on the CPU for every slice."""
    probs = [logits.float().softmax(1).cpu() for logits in _batched_logits(model, data, device, batch_size, dsbn, None)]
    if not probs:
        h, w = data.images.shape[-2:]
        return torch.zeros(0, NUM_CLASSES, h, w)
    return torch.cat(probs)


def slice_dice(pred: torch.Tensor, labels: torch.Tensor, class_mask: torch.Tensor, chunk: int = 64) -> np.ndarray:
    """2D Dice ``(N, K)`` per slice and class (NaN where undefined or unannotated)."""
    out = [dice_per_class(pred[i:i + chunk], labels[i:i + chunk], NUM_CLASSES, class_mask[i:i + chunk]).numpy()
           for i in range(0, len(pred), chunk)]
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES))


def merge_test_sets(tests: SliceDataset | Mapping[str, SliceDataset] | None) -> SliceDataset | None:
    """One dataset from the named test sets, patient ids prefixed ``<name>/`` so they stay distinct."""
    if tests is None or isinstance(tests, SliceDataset):
        return tests
    parts = []
    for name, ds in tests.items():
        if not len(ds):
            continue
        pids = np.array([f"{name}/{p}" for p in ds.patient_ids.tolist()])
        parts.append(SliceDataset(ds.images, ds.labels, ds.class_mask, pids, ds.modalities, ds.slice_index,
                                  ds.num_slices, {f"{name}/{p}": sp for p, sp in ds.spacing.items()}))
    return SliceDataset.concat(parts) if parts else None


def _report(out: dict[str, float], prefix: str, values: np.ndarray) -> float:
    """Add ``<prefix>_<organ>`` for every defined organ value; return their mean (NaN if none)."""
    defined = []
    for c in range(1, NUM_CLASSES):
        v = float(values[c])
        if np.isfinite(v):
            out[f"{prefix}_{ORGANS[c]}"] = v
            defined.append(v)
    mean = float(np.mean(defined)) if defined else float("nan")
    if defined:
        out[f"{prefix}_mean"] = mean
    return mean


def modality_metrics(pred: torch.Tensor, data: SliceDataset, hd95: bool = True) -> dict[str, float]:
    """Per-organ, per-modality 2D/3D Dice and HD95 (see the module docstring) of predictions
    ``(N, H, W)`` for the slices of ``data`` (which must be labelled)."""
    if data.labels is None:
        raise ValueError("data must be labelled to be scored, got an unlabelled SliceDataset")
    if pred.shape != data.labels.shape:
        raise ValueError(f"pred must be shaped like the labels {tuple(data.labels.shape)}, got {tuple(pred.shape)}")
    out: dict[str, float] = {}
    means: dict[str, list[float]] = {"dice3d": [], "dice2d": []}
    for mod in sorted(set(data.modalities.tolist())):
        sel = np.flatnonzero(data.modalities == mod)
        idx = torch.as_tensor(sel)
        p, t, m = pred[idx], data.labels[idx].long(), data.class_mask[idx]
        pids, z = data.patient_ids[sel], data.slice_index[sel]
        annotated = {pid: m[i].numpy() for i, pid in reversed(list(enumerate(pids.tolist())))}
        d2 = _report(out, f"dice2d_{mod}", nanmean_per_class(slice_dice(p, t, m)))
        d3 = per_patient_dice(p.long(), t, pids.tolist(), z.tolist(), NUM_CLASSES, annotated)
        d3m = _report(out, f"dice3d_{mod}", nanmean_per_class(d3))
        if hd95:
            spacing = {pid: data.spacing[pid] for pid in annotated}
            h = per_patient_hd95(p.long(), t, pids.tolist(), z.tolist(), spacing, NUM_CLASSES, annotated)
            _report(out, f"hd95_{mod}", nanmean_per_class(h))
        out[f"patients_{mod}"] = float(len(annotated))
        for fam, v in (("dice2d", d2), ("dice3d", d3m)):
            if np.isfinite(v):
                means[fam].append(v)
    for fam, vals in means.items():
        if vals:
            out[f"{fam}_mean"] = float(np.mean(vals))
    return out
