"""Axial slice extraction from preprocessed volumes, keeping patient id and slice index (so
per-slice predictions can be stacked back into volumes for 3D Dice), with an optional 2.5D
context (neighbouring slices as channels, edge-replicated)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedsilo.data.labels import annotated_class_mask
from fedsilo.data.sources.volume import Volume

__all__ = ["Slice", "assemble_volumes", "extract_slices", "group_slices", "stack_slices"]


@dataclass(frozen=True, eq=False)
class Slice:
    """One axial slice with its provenance.

    Attributes
    ----------
    image : np.ndarray
        ``float32`` ``(C, H, W)``; ``C = 2 * context + 1``, the centre channel is this slice.
    label : np.ndarray or None
        ``uint8`` ``(H, W)`` organ ids, or None (unlabelled).
    patient_id, case_id : str
    slice_index : int
        Index along ``D`` in the source volume (inferior -> superior).
    num_slices : int
        ``D`` of the source volume.
    modality : {"ct", "mr"}
    site : str or None
    annotated : frozenset of int
        Organ ids the label annotates (the loss must ignore the others).
    spacing : tuple of float
        ``(dz, dy, dx)`` of the source (preprocessed) volume.
    """

    image: np.ndarray
    label: np.ndarray | None
    patient_id: str
    case_id: str
    slice_index: int
    num_slices: int
    modality: str
    site: str | None
    annotated: frozenset[int]
    spacing: tuple[float, float, float]

    @property
    def class_mask(self) -> np.ndarray:
        """``bool`` ``(NUM_CLASSES,)``: classes this slice's label can be trusted for."""
        return annotated_class_mask(self.annotated)


def extract_slices(
    volume: Volume, context: int = 0, skip_empty: bool = False, empty_fraction: float = 0.01
) -> list[Slice]:
    """Cut a volume into axial slices.

    Parameters
    ----------
    volume : Volume
        Usually preprocessed, ``(D, H, W)``.
    context : int
        2.5D half-width: channels are slices ``i - context .. i + context`` (indices clamped to
        ``[0, D - 1]``, i.e. edge-replicated). 0 gives one channel.
    skip_empty : bool
        Drop slices without foreground: without any organ voxel when labelled, or with less than
        ``empty_fraction`` of pixels above the volume's minimum when unlabelled. Evaluate 3D Dice
        on all slices (``skip_empty=False``); :func:`assemble_volumes` fills skipped ones with 0.
    empty_fraction : float
        Body-pixel fraction below which an unlabelled slice counts as empty.

    Returns
    -------
    list of Slice
        In slice order.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    if not 0.0 <= empty_fraction < 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1), got {empty_fraction}")
    depth = volume.shape[0]
    if skip_empty:
        if volume.labels is not None:
            keep = ((volume.labels > 0) & (volume.labels != 255)).reshape(depth, -1).any(axis=1)
        else:
            floor = float(volume.image.min())
            keep = (volume.image > floor + 1e-6).reshape(depth, -1).mean(axis=1) >= empty_fraction
    else:
        keep = np.ones(depth, dtype=bool)
    out = []
    offsets = np.arange(-context, context + 1)
    for i in np.flatnonzero(keep):
        idx = np.clip(i + offsets, 0, depth - 1)
        out.append(
            Slice(
                image=np.ascontiguousarray(volume.image[idx]),
                label=None if volume.labels is None else volume.labels[i].copy(),
                patient_id=volume.patient_id,
                case_id=volume.case_id,
                slice_index=int(i),
                num_slices=depth,
                modality=volume.modality,
                site=volume.site,
                annotated=volume.annotated,
                spacing=volume.spacing,
            )
        )
    return out


def stack_slices(slices: Sequence[Slice]) -> tuple[np.ndarray, np.ndarray | None]:
    """Batch slices: images ``(N, C, H, W)`` float32 and labels ``(N, H, W)`` uint8 (None if any
    slice is unlabelled)."""
    if not slices:
        raise ValueError("slices must be non-empty, got 0")
    images = np.stack([s.image for s in slices])
    labels = None if any(s.label is None for s in slices) else np.stack([s.label for s in slices])  # type: ignore[misc]
    return images, labels


def group_slices(slices: Iterable[Slice]) -> dict[str, list[Slice]]:
    """Slices per ``case_id``, each list sorted by slice index."""
    groups: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        groups[s.case_id].append(s)
    return {k: sorted(v, key=lambda s: s.slice_index) for k, v in groups.items()}


def assemble_volumes(predictions: Sequence[np.ndarray] | np.ndarray, slices: Sequence[Slice]) -> dict[str, np.ndarray]:
    """Stack per-slice predictions back into volumes for 3D metrics.

    Parameters
    ----------
    predictions : array ``(N, H, W)`` or sequence of ``(H, W)``
        One prediction per slice, in the order of ``slices``.
    slices : sequence of Slice

    Returns
    -------
    dict
        ``case_id -> (D, H, W)`` array (prediction dtype); slices not given (skipped) are 0.
    """
    if len(predictions) != len(slices):
        raise ValueError(f"predictions and slices must have the same length, got {len(predictions)} and {len(slices)}")
    volumes: dict[str, np.ndarray] = {}
    for pred, s in zip(predictions, slices, strict=True):
        pred = np.asarray(pred)
        if s.case_id not in volumes:
            volumes[s.case_id] = np.zeros((s.num_slices, *pred.shape), dtype=pred.dtype)
        volumes[s.case_id][s.slice_index] = pred
    return volumes
