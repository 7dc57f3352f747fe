"""Distributed DP: client-level DP under secure aggregation, where nobody sees an un-noised sum.

With ``privacy.mode = "client"`` and ``federation.secure_aggregation = true`` the coordinator
never holds an individual update, so it can neither clip one nor add the noise after summing
without having seen the clean sum. Instead each of the ``m`` sampled sites

1. clips its update to L2 norm ``C`` (``privacy.clipping_norm``; :func:`client_clipping_mod`),
2. adds its share of the noise, ``N(0, sigma^2 C^2 / m)`` per weight, drawn from ``os.urandom``
   at the site (:func:`client_noise_mod`), and reports weight 1 (equal weights),

before SecAgg+ masks it. The sum of ``m`` shares carries ``N(0, sigma^2 C^2)``, as central
DP-FedAvg's server noise would (McMahan et al., ICLR 2018; the distributed form of Kairouz et al.,
ICML 2021, here with continuous Gaussian shares before SecAgg+'s stochastic rounding). When only
``m' < m`` sites survive a round, the sum holds only ``m'`` shares: its noise multiplier is
``sigma * sqrt(m' / m)``, and that is what the accountant composes
(:class:`~fedsilo.federation.client_dp.AccountedClientDP`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fedsilo.federation.messages import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, KeptArray

#: Config key: the standard deviation of a site's noise share (absent = no distributed DP).
KEY_NOISE_STD = "dp-noise-share-std"


class DistributedDP(Strategy):
    """``base`` (FedAvg/FedProx) with client-level DP whose noise the sites add (see the module docstring).

    Parameters
    ----------
    base
        The strategy that averages the (already noised) updates.
    noise_multiplier
        ``sigma`` of the whole sum.
    clipping_norm
        ``C``.
    sites_per_round
        ``m``: the sites a round samples (each adds ``1/m`` of the noise variance).
    """

    def __init__(self, base: Strategy, noise_multiplier: float, clipping_norm: float, sites_per_round: int) -> None:
        if noise_multiplier < 0 or clipping_norm <= 0 or sites_per_round < 1:
            raise ValueError(f"need noise_multiplier >= 0, clipping_norm > 0, sites_per_round >= 1, got "
                             f"{noise_multiplier}, {clipping_norm}, {sites_per_round}")
        self.base = base
        self.noise_multiplier = float(noise_multiplier)
        self.clipping_norm = float(clipping_norm)
        self.sites_per_round = sites_per_round

    @property
    def share_std(self) -> float:
        """Standard deviation of one site's noise share, ``sigma C / sqrt(m)``."""
        return self.noise_multiplier * self.clipping_norm / math.sqrt(self.sites_per_round)

    def summary(self) -> None:
        self.base.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config = ConfigRecord({**dict(config.items()), KEY_CLIPPING_NORM: self.clipping_norm,
                               KEY_NOISE_STD: self.share_std})
        return self.base.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None,
                                                                                        MetricRecord | None]:
        return self.base.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.base.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.base.aggregate_evaluate(server_round, replies)


def client_noise_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """ClientApp mod: add this site's noise share to its (clipped) update and report weight 1.

    Inactive unless the training message's config holds :data:`KEY_NOISE_STD`. The noise is drawn
    from a generator seeded by ``os.urandom`` at the site, never sent anywhere.
    """
    if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
        return call_next(msg, context)
    config = msg.content.config_records.get(CONFIG)
    if config is None or KEY_NOISE_STD not in config:
        return call_next(msg, context)
    std = float(config[KEY_NOISE_STD])
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    rng = np.random.default_rng(secrets.randbits(128))
    arrays = reply.content.array_records[ARRAYS]
    noised = {}
    for key in arrays.keys():
        a = arrays[key].numpy()
        noised[key] = KeptArray(a + rng.normal(0.0, std, a.shape).astype(a.dtype) if a.dtype.kind == "f" else a)
    reply.content.array_records[ARRAYS] = ArrayRecord(noised)
    reply.content.metric_records[METRICS][NUM_EXAMPLES] = 1  # equal weights: the sum's sensitivity is C
    return reply


__all__ = ["KEY_NOISE_STD", "DistributedDP", "client_noise_mod"]
