"""Distance to closest record (DCR): are synthetic images closer to the training images than to
equally many never-used images?

For every synthetic image the distance to its nearest training image (``d_train``) and to its
nearest hold-out image (``d_holdout``) are computed, with the larger reference set subsampled
to the size of the smaller (a bigger set has closer neighbours by chance alone). A generator
that does not copy its training data is as close to hold-out images as to training images:
the share of synthetic images closer to train than to hold-out is ~0.5; copies push it towards
1 and shift the ``d_train`` distribution to 0 (e.g. Platzer & Reutterer, "Holdout-based
empirical assessment of mixed-type synthetic data", Front. Big Data 2021; Yale et al.,
"Generation and evaluation of privacy preserving synthetic health data", Neurocomputing 2020).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fedsilo.audit.attacks.metrics import AttackResult, attack_result


@dataclass
class DCRResult:
    """Distances of each synthetic image to its closest training and hold-out record.

    Attributes
    ----------
    d_train, d_holdout
        ``(S,)`` distances.
    nearest_train, nearest_holdout
        ``(S,)`` indices of the nearest records (into the *subsampled* reference sets
        ``train_index`` / ``holdout_index``).
    train_index, holdout_index
        Indices of the records kept from the original train and hold-out sets.
    share_closer_to_train
        Fraction of synthetic images with ``d_train < d_holdout`` (ties count one half).
    """

    d_train: Tensor
    d_holdout: Tensor
    nearest_train: Tensor
    nearest_holdout: Tensor
    train_index: Tensor
    holdout_index: Tensor
    share_closer_to_train: float

    def summary(self) -> dict[str, float]:
        """Share closer to train and the 5th percentile / median of both distance distributions."""
        q = lambda d, p: float(torch.quantile(d.double(), p))  # noqa: E731
        return {"share_closer_to_train": self.share_closer_to_train,
                "d_train_p5": q(self.d_train, 0.05), "d_holdout_p5": q(self.d_holdout, 0.05),
                "d_train_median": q(self.d_train, 0.5), "d_holdout_median": q(self.d_holdout, 0.5),
                "n_synthetic": int(len(self.d_train)), "n_reference": int(len(self.train_index))}

    def to_dict(self) -> dict[str, Any]:
        """Summary plus the two distance lists (JSON-ready)."""
        return {**self.summary(), "d_train": self.d_train.tolist(), "d_holdout": self.d_holdout.tolist()}


def distance_to_closest_record(synthetic: Tensor, train: Tensor, holdout: Tensor, *, seed: int = 0,
                               feature_fn: Callable[[Tensor], Tensor] | None = None) -> DCRResult:
    """DCR of ``synthetic`` against ``train`` and ``holdout`` (images in [-1, 1] or features ``(N, d)``).

    Parameters
    ----------
    synthetic
        ``(S, C, H, W)`` generated images.
    train, holdout
        Real images used / never used in training; the larger set is subsampled (seeded) to
        the size of the smaller.
    seed
        Seed of the subsampling.
    feature_fn
        Compare in this feature space instead of pixel space.
    """
    from fedsilo.tasks.synthesis.manifold import nearest_neighbours

    if len(train) == 0 or len(holdout) == 0:
        raise ValueError(f"train and holdout must hold at least one record, got {len(train)} and {len(holdout)}")
    n = min(len(train), len(holdout))
    gen = torch.Generator().manual_seed(seed)
    ti = torch.randperm(len(train), generator=gen)[:n].sort().values
    hi = torch.randperm(len(holdout), generator=gen)[:n].sort().values
    it, dt = nearest_neighbours(synthetic, train[ti.to(train.device)], feature_fn, k=1)
    ih, dh = nearest_neighbours(synthetic, holdout[hi.to(holdout.device)], feature_fn, k=1)
    d_train, d_holdout = dt[:, 0].cpu(), dh[:, 0].cpu()
    share = float(((d_train < d_holdout).double() + 0.5 * (d_train == d_holdout).double()).mean())
    return DCRResult(d_train, d_holdout, it[:, 0].cpu(), ih[:, 0].cpu(), ti, hi, share)


def dcr_grid(synthetic: Tensor, train: Tensor, holdout: Tensor, result: DCRResult, path: str | Path,
             n: int = 8) -> Path:
    """PNG: the ``n`` synthetic images closest to a training image (top row), their nearest
    training images (middle) and nearest hold-out images (bottom)."""
    import matplotlib.image

    from fedsilo.tasks.synthesis.grids import sample_grid

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    order = torch.argsort(result.d_train)[:n]
    rows = [synthetic[order].cpu(),
            train[result.train_index[result.nearest_train[order]].to(train.device)].cpu(),
            holdout[result.holdout_index[result.nearest_holdout[order]].to(holdout.device)].cpu()]
    grid = sample_grid(torch.cat(rows), nrow=len(order))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
                            cmap="gray" if grid.shape[-1] == 1 else None)
    return path


def dcr_result(result: DCRResult) -> AttackResult:
    """The two distance distributions as an ROC: AUC = P(d_train < d_holdout) over pairs of
    synthetic images (0.5 = the generator is as close to unseen as to training records)."""
    return attack_result("dcr", -result.d_train, -result.d_holdout, kind="distance", details=result.summary())


__all__ = ["DCRResult", "dcr_grid", "dcr_result", "distance_to_closest_record"]
