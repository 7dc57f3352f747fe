"""Centered clipping: a Byzantine-robust aggregation rule that bounds each update's pull as a vector.

Karimireddy, He & Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021.
Each site's update ``d_i = w_i - g`` (its returned weights minus the global weights ``g`` it
started from) is clipped *around the current estimate* ``v`` and averaged::

    v <- v + (1/n) sum_i clip(d_i - v, tau),   clip(x, tau) = x * min(1, tau / ||x||)

repeated ``iterations`` times from ``v = 0``; the new global weights are ``g + v``. A single
malicious update can move ``v`` by at most ``tau / n`` per iteration, whatever its size or
direction.

How it differs from the coordinate-wise rules: with few sites the median and trimmed mean pick,
in every coordinate, the honest values on the attacker's side (with 3 honest updates and one
sign-flipped one, the median of 4 is the mean of the two honest values nearest the attacker), a
bias of about 0.4 honest standard deviations per coordinate. Centered clipping instead bounds the
attacker's pull as a whole vector, to ``tau / n`` per iteration; it still gives the attacker that
much weight, whereas Krum-style selection gives it none. ``benchmarks/poisoning.py`` measures all
of them side by side.

Arrays that are not floating point (e.g. batch-norm ``num_batches_tracked``) take the
coordinate-wise median of the sites' values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

logger = logging.getLogger(__name__)


def centered_clip(updates: np.ndarray, tau: float, iterations: int) -> np.ndarray:
    """Centered-clipping estimate of the mean of ``updates``.

    Parameters
    ----------
    updates
        ``(n, p)`` site updates (flattened ``w_i - g``), float64.
    tau
        Clipping radius (> 0), in the units of the update norm.
    iterations
        Fixed-point iterations from ``v = 0`` (>= 1).

    Returns
    -------
    numpy.ndarray
        ``(p,)`` the robust aggregate ``v``.
    """
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty (n, p) array, got shape {updates.shape}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    v = np.zeros(updates.shape[1], dtype=np.float64)
    for _ in range(iterations):
        diff = updates - v
        norms = np.linalg.norm(diff, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-30))
        v = v + (diff * scale[:, None]).mean(axis=0)
    return v


class CenteredClipping(FedAvg):
    """Flower strategy: centered clipping of site updates around the global weights.

    Parameters
    ----------
    radius
        Clipping radius ``tau``; ``0`` chooses it each round as the median norm of the
        sites' updates (an attacker in a minority cannot inflate it).
    iterations
        Centered-clipping iterations per round (the paper uses 1-3).
    **kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (selection, minimum nodes, keys).
        Sites are *not* weighted by their example counts: a weight a site reports about itself
        is something a malicious site could inflate.
    """

    def __init__(self, *, radius: float = 0.0, iterations: int = 3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if radius < 0:
            raise ValueError(f"centered clipping radius must be >= 0 (0 = median update norm), got {radius}")
        if iterations < 1:
            raise ValueError(f"centered clipping iterations must be >= 1, got {iterations}")
        self.radius = float(radius)
        self.iterations = int(iterations)
        self._start: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        logger.info("CenteredClipping: radius %s, %d iterations",
                    self.radius or "median update norm", self.iterations)
        super().summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._start = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._start is None:
            raise RuntimeError("CenteredClipping.aggregate_train called before configure_train")
        start = self._start
        records = [m.content[self.arrayrecord_key] for m in valid]
        keys = list(records[0].keys())
        floats = [k for k in keys if np.issubdtype(start[k].dtype, np.floating)]
        flat = np.stack([
            np.concatenate([(r[k].numpy().astype(np.float64) - start[k]).ravel() for k in floats])
            for r in records
        ])
        tau = self.radius or float(np.median(np.linalg.norm(flat, axis=1)))
        v = centered_clip(flat, tau, self.iterations) if tau > 0 else np.zeros(flat.shape[1])
        arrays = ArrayRecord()
        offset = 0
        for k in keys:
            if k in floats:
                size, shape = start[k].size, start[k].shape
                arrays[k] = Array(np.asarray(start[k] + v[offset:offset + size].reshape(shape), dtype=start[k].dtype))
                offset += size
            else:
                stack = np.stack([r[k].numpy() for r in records])
                arrays[k] = Array(np.asarray(np.median(stack, axis=0), dtype=stack.dtype))  # 0-d stays an array
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return arrays, metrics
