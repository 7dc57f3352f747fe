"""In-memory 2D image sets: raw arrays from sources and model-ready datasets.

Sources return :class:`ImageArrays` (uint8, channels last, as files store them); preprocessing
turns them into :class:`ImageDataset` (uint8 tensors, channels first) that hand out float
batches in [-1, 1] — small enough to keep whole fundus data sets in memory at 28-256 px.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fedsilo.data.errors import DataError


@dataclass
class ImageArrays:
    """Images with integer labels as read from a source.

    Attributes
    ----------
    images
        uint8 array, shape (N, H, W, C) with C in {1, 3}.
    labels
        int64 array, shape (N,).
    groups
        Optional natural site / camera id per image, shape (N,).
    origin
        Where the images came from (file or folder), for error messages.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(f"{self.origin}: images must have shape (N, H, W[, 1|3]), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise DataError(f"{self.origin}: images must be uint8, got {self.images.dtype}")
        self.labels = np.asarray(self.labels).reshape(-1).astype(np.int64)
        if len(self.labels) != len(self.images):
            raise DataError(
                f"{self.origin}: {len(self.images)} images but {len(self.labels)} labels; they must match"
            )
        if self.groups is not None and len(self.groups) != len(self.images):
            raise DataError(f"{self.origin}: {len(self.images)} images but {len(self.groups)} site ids")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageArrays:
        groups = None if self.groups is None else self.groups[idx]
        return ImageArrays(self.images[idx], self.labels[idx], groups, self.origin)

    def check_labels(self, num_classes: int) -> None:
        """Raise :class:`DataError` when a label is outside ``0 .. num_classes - 1``."""
        bad = (self.labels < 0) | (self.labels >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{self.origin}: label {int(self.labels[i])} of sample {i} is outside 0..{num_classes - 1} "
                f"({int(bad.sum())} bad labels in all)"
            )


class ImageDataset:
    """Model-ready images: uint8 tensor (N, C, H, W) + labels; batches come out as floats in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, idx: np.ndarray | torch.Tensor) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx])

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [-1, 1], shape (B, C, H, W), and labels (B,) on ``device``."""
        x = self.images[idx].to(device=device, dtype=torch.float32).div_(127.5).sub_(1.0)
        return x, self.labels[idx].to(device)

    @staticmethod
    def concat(parts: list[ImageDataset]) -> ImageDataset:
        return ImageDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; shuffled with ``generator`` when ``shuffle``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches :func:`iterate_batches` yields for ``n`` samples."""
    if drop_last and n >= batch_size:
        return n // batch_size
    return -(-n // batch_size)
