"""What a GAN trains on: fundus images (graded) or abdominal slices (ungraded, for pre-training)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from fedsilo.data.abdomen import SliceDataset
from fedsilo.data.images import ImageDataset


class SliceImages:
    """Abdominal slices as GAN training images: the centre channel, scaled from [0, 1] to [-1, 1],
    with grade 0 for every slice (pre-training corpora are ungraded)."""

    def __init__(self, slices: SliceDataset) -> None:
        self.slices = slices

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.slices.images.shape
        return 1, h, w

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 1, H, W)`` in [-1, 1] and zeros ``(B,)`` on ``device``."""
        x, _, _ = self.slices.batch(idx, device)
        centre = x.shape[1] // 2
        return x[:, centre : centre + 1] * 2 - 1, torch.zeros(len(idx), dtype=torch.long, device=device)

    def subset(self, idx: np.ndarray | torch.Tensor) -> SliceImages:
        return SliceImages(self.slices.subset(np.asarray(idx)))

    @staticmethod
    def concat(parts: list[SliceImages]) -> SliceImages:
        return SliceImages(SliceDataset.concat([p.slices for p in parts]))


GanImages = ImageDataset | SliceImages


def all_images(data: GanImages, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Every image ``(N, C, H, W)`` in [-1, 1] and grade ``(N,)`` of a data set."""
    return data.batch(torch.arange(len(data)), device)


def content_hash(data: GanImages) -> str:
    """SHA-256 of a data set's pixels and grades (keys the reference networks' cache)."""
    x, y = all_images(data)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x.numpy()).tobytes())
    h.update(np.ascontiguousarray(y.numpy()).tobytes())
    return h.hexdigest()
