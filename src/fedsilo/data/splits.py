"""Patient-level train/val/test splits: every slice and scan of a patient lands in one split.

Splitting by slice would put neighbouring, nearly identical slices of one patient on both sides
and inflate test scores; splitting by patient is the only honest choice for 3D scans.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np

__all__ = ["split_items", "split_patients"]

T = TypeVar("T")


def _counts_from_fractions(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding; every positive fraction gets at least one patient if n allows."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    for i in np.flatnonzero((np.asarray(fractions) > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def split_patients(
    patient_ids: Iterable[str],
    fractions: Sequence[float] | None = (0.8, 0.1, 0.1),
    counts: Sequence[int] | None = None,
    names: Sequence[str] = ("train", "val", "test"),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split unique patient ids into named groups.

    Parameters
    ----------
    patient_ids : iterable of str
        Duplicates are collapsed (a patient with several scans or slices counts once).
    fractions : sequence of float or None
        One per name, each >= 0, summing to 1 (largest-remainder rounding; each positive fraction
        gets at least one patient when there are enough). Ignored when ``counts`` is given.
    counts : sequence of int or None
        Exact number of patients per name; must sum to the number of unique patients.
    names : sequence of str
        Split names.
    seed : int
        Seed of the shuffle (``np.random.default_rng(seed)``); ids are sorted first, so the
        result does not depend on input order.

    Returns
    -------
    dict
        ``name -> sorted patient ids``; the groups are disjoint and cover every patient.
    """
    unique = sorted(set(str(p) for p in patient_ids))
    n = len(unique)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"names must be non-empty and unique, got {list(names)}")
    if counts is not None:
        if len(counts) != len(names) or any(int(c) < 0 for c in counts):
            raise ValueError(f"counts must be {len(names)} non-negative ints (one per name), got {list(counts)}")
        if sum(int(c) for c in counts) != n:
            raise ValueError(f"counts must sum to the number of patients ({n}), got {list(counts)} (sum {sum(counts)})")
        sizes = [int(c) for c in counts]
    elif fractions is not None:
        if len(fractions) != len(names) or any(f < 0 for f in fractions):
            raise ValueError(f"fractions must be {len(names)} non-negative numbers (one per name), got {list(fractions)}")
        if not np.isclose(sum(fractions), 1.0, atol=1e-6):
            raise ValueError(f"fractions must sum to 1, got {list(fractions)} (sum {sum(fractions)})")
        sizes = _counts_from_fractions(n, fractions)
    else:
        raise ValueError("one of fractions or counts must be given, got neither")
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[str]] = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        out[name] = sorted(unique[i] for i in order[start : start + size])
        start += size
    return out


def split_items(
    items: Sequence[T],
    key: Callable[[T], Hashable] = lambda item: item.patient_id,  # type: ignore[attr-defined]
    **kwargs: object,
) -> dict[str, list[T]]:
    """Split volumes, slices or cases by patient (``key``), keeping input order within a split.

    Parameters
    ----------
    items : sequence
        Objects with a ``patient_id`` attribute, or anything ``key`` maps to a patient.
    key : callable
    **kwargs
        Passed to :func:`split_patients` (``fractions``, ``counts``, ``names``, ``seed``).
    """
    groups = split_patients([str(key(item)) for item in items], **kwargs)  # type: ignore[arg-type]
    where = {pid: name for name, pids in groups.items() for pid in pids}
    out: dict[str, list[T]] = {name: [] for name in groups}
    for item in items:
        out[where[str(key(item))]].append(item)
    return out
