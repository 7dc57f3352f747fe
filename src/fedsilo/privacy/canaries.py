"""Gradient canaries: what the one-run privacy audit inserts into DP-SGD (Steinke, Nasr and
Jagielski, NeurIPS 2023, Section 6, white-box "Dirac" canaries).

A canary is a training slot whose per-sample gradient, whenever Poisson sampling picks it, is
``C`` times one coordinate's unit vector (``C`` = ``privacy.max_grad_norm``, so clipping leaves
it whole): the strongest signal one sample may send under the mechanism's sensitivity. Each
canary is *included* (its gradient is real) with probability 1/2 by a coin; an excluded canary
keeps its slot but contributes nothing, exactly as an absent sample would, so the sites' data set
sizes, sampling rates and the accountant do not depend on the coins. After training, a canary's
coordinate has moved against its gradient if it was included: the audit
(:func:`~fedsilo.privacy.auditing.audit_canaries`) scores that displacement.

Canaries are nudges to single weights of the released model, never images: no canary reaches a
data set, a quality metric's inputs or a sample set. Their draw (coordinates, coins, sites)
comes from the experiment seed, so the audit redraws it; that makes the coins known to whoever
holds the seed, which is why canaries are a simulation tool (``fedsilo deploy`` refuses them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedsilo.seeding import np_rng


@dataclass(frozen=True)
class GradientCanaries:
    """``K`` canaries over the parameters of the private module.

    Attributes
    ----------
    names
        ``(K,)`` the parameter (full-model name) holding each canary's coordinate.
    index
        ``(K,)`` the coordinate's flat index within that parameter.
    included
        ``(K,)`` bool: the secret coins.
    site
        ``(K,)`` the site whose data set holds the canary's slot.
    """

    names: tuple[str, ...]
    index: np.ndarray
    included: np.ndarray
    site: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def at_site(self, site: int) -> GradientCanaries:
        """The canaries whose slots are at ``site``, in order."""
        keep = np.flatnonzero(self.site == site)
        return GradientCanaries(tuple(self.names[i] for i in keep), self.index[keep], self.included[keep],
                                self.site[keep])

    def displacement(self, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> np.ndarray:
        """``(K,)`` how far each canary's coordinate moved against its gradient (``before - after``)."""
        return np.array([float(before[n].flatten()[i] - after[n].flatten()[i])
                         for n, i in zip(self.names, self.index, strict=True)])


def draw_canaries(params: Sequence[tuple[str, torch.Size]], count: int, num_sites: int, seed: int) -> GradientCanaries:
    """Draw ``count`` canaries on distinct coordinates of ``params`` (name, shape), spread over sites.

    Raises
    ------
    ValueError
        When ``count`` exceeds the number of coordinates, or a count is < 1.
    """
    if count < 1 or num_sites < 1:
        raise ValueError(f"count and num_sites must be >= 1, got {count} and {num_sites}")
    sizes = np.array([math.prod(shape) for _, shape in params], dtype=np.int64)
    total = int(sizes.sum())
    if count > total:
        raise ValueError(f"privacy.canaries = {count} exceeds the {total} weights of the private model")
    rng = np_rng(seed, "dp-canaries")
    flat = np.sort(rng.choice(total, count, replace=False))
    which = np.searchsorted(np.cumsum(sizes), flat, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    included = rng.random(count) < 0.5
    site = rng.permutation(np.arange(count) % num_sites)
    return GradientCanaries(tuple(params[w][0] for w in which), flat - starts[which], included, site)


def canary_rows(params: Sequence[tuple[str, torch.nn.Parameter]], canaries: GradientCanaries,
                picked: np.ndarray, clip: float) -> list[torch.Tensor]:
    """Per-sample gradient rows of the picked canaries that are included, one tensor per parameter.

    Parameters
    ----------
    params
        The private module's (full-model name, parameter) pairs, in the optimiser's order.
    canaries
        This site's canaries.
    picked
        Positions (into ``canaries``) that Poisson sampling put into this batch.
    clip
        ``C``: each included canary's row is ``C`` at its coordinate, 0 elsewhere.

    Returns
    -------
    list of Tensor
        ``(k, *p.shape)`` for each parameter, ``k`` = included canaries among ``picked``.
    """
    live = [int(i) for i in picked if canaries.included[int(i)]]
    rows = [torch.zeros((len(live), *p.shape), dtype=p.dtype, device=p.device) for _, p in params]
    position = {name: j for j, (name, _) in enumerate(params)}
    for r, i in enumerate(live):
        rows[position[canaries.names[i]]][r].view(-1)[int(canaries.index[i])] = clip
    return rows


__all__ = ["GradientCanaries", "canary_rows", "draw_canaries"]
