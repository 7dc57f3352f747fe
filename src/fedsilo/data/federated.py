"""Federated views of a pooled data set: which samples each site trains and validates on."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

D = TypeVar("D")


@dataclass
class SiteData(Generic[D]):
    """One site's data: a training and a validation split of the same kind of dataset."""

    name: str
    train: D
    val: D
    info: dict[str, object] = field(default_factory=dict)


@dataclass
class FederatedData(Generic[D]):
    """Sites' splits of a pooled training set plus an optional global held-out test set.

    Attributes
    ----------
    sites
        One :class:`SiteData` per site, in site order.
    test
        The global test set evaluated by the server, or None.
    class_table
        Training samples per class at each site, shape (num_sites, num_classes).
    class_names
        Names of the classes (columns of ``class_table``).
    """

    sites: list[SiteData[D]]
    test: D | None
    class_table: np.ndarray
    class_names: Sequence[str]

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]


def default_site_names(num_sites: int, names: Sequence[str] = ()) -> list[str]:
    """Configured site names, or ``site-1`` ... ``site-N``."""
    if names:
        if len(names) != num_sites:
            raise ValueError(f"site names must name all {num_sites} sites, got {len(names)}")
        return list(names)
    return [f"site-{i + 1}" for i in range(num_sites)]


_PROCESS_CACHE: dict[Hashable, object] = {}
_PROCESS_CACHE_SIZE = 4


def process_cached(key: Hashable, build: Callable[[], D]) -> D:
    """Build a value once per process and key (the oldest of a few entries is dropped).

    Sites of the in-process engine share one copy of the data; each Ray worker builds it once.
    """
    if key in _PROCESS_CACHE:
        return _PROCESS_CACHE[key]  # type: ignore[return-value]
    value = build()
    if len(_PROCESS_CACHE) >= _PROCESS_CACHE_SIZE:
        _PROCESS_CACHE.pop(next(iter(_PROCESS_CACHE)))
    _PROCESS_CACHE[key] = value
    return value
