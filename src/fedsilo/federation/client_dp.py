"""Client-level differential privacy: DP-FedAvg with Flower's DP strategy wrappers and an accountant.

DP-FedAvg (McMahan et al., "Learning differentially private recurrent language models", ICLR
2018) bounds each site's model update to L2 norm ``C``, averages the updates of the ``m`` sampled
sites with *equal* weights and adds ``N(0, (sigma C / m)^2)`` noise, so the whole contribution
of one site (every image it holds) is protected. Flower implements the clipping and noise
(``flwr.serverapp.strategy.DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping``;
adaptive clipping after Andrew et al., NeurIPS 2021); fedsilo wraps them in
:class:`AccountedClientDP`, which adds what Flower's wrappers leave out here:

- an accountant over rounds *with* site sampling (rate ``sites per round / sites``; Flower's own
  accountant supports only no-amplification accounting), reporting ``privacy_epsilon`` in the
  round's global metrics and refusing a round that would exceed ``privacy.max_epsilon``
  (the run then stops cleanly);
- equal weights: each update's ``num-examples`` is set to 1 before aggregation, so FedAvg's
  average has sensitivity ``C / m`` (example-weighted averaging would not match the noise);
- honest accounting when sites drop out: with ``m' < m`` updates the effective noise multiplier
  of the round is ``sigma m' / m``;
- noise nobody can regenerate: Flower draws noise from NumPy's global generator; it is seeded per
  round from ``os.urandom`` (and its previous state restored), or, with
  ``privacy.reproducible_noise = true`` (simulation only), from the experiment seed so that runs
  repeat exactly.

Client-side clipping in Flower needs a ClientApp mod; Flower's own mods require exactly one
ConfigRecord per message, but fedsilo messages may carry a second (site state), so
:func:`client_clipping_mod` does the same clipping with Flower's functions on the named records.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT, compute_adaptive_clip_model_update

from fedsilo.config import ExperimentConfig
from fedsilo.config.privacy_schema import PrivacySection
from fedsilo.federation.distributed_dp import DistributedDP
from fedsilo.federation.messages import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, SUMMED_SITES, KeptArray
from fedsilo.privacy.accounting import Accountant, PrivacyBudgetExhausted, default_delta, noise_for
from fedsilo.seeding import derive_seed, secure_seed

logger = logging.getLogger(__name__)

#: Error code of a clipping failure at a site (Flower's ``ErrorCode.MOD_FAILED_PRECONDITION``).
_MOD_FAILED = 4


def client_dp_noise(privacy: PrivacySection, num_sites: int, sites_per_round: int, rounds: int) -> tuple[float, float]:
    """``(noise_multiplier, delta)`` of client-level DP: the configured sigma, or the one that
    reaches ``privacy.epsilon`` after ``rounds`` rounds at rate ``sites_per_round / num_sites``."""
    if not 1 <= sites_per_round <= num_sites:
        raise ValueError(f"sites_per_round must be in [1, {num_sites}], got {sites_per_round}")
    delta = privacy.delta or default_delta(num_sites)
    if privacy.epsilon:
        return noise_for(privacy.epsilon, sites_per_round / num_sites, rounds, delta, privacy.accountant), delta
    return privacy.noise_multiplier, delta


def _float_arrays(record: ArrayRecord) -> ArrayRecord:
    """Integer arrays (e.g. BatchNorm counters) as float64: Flower's clipping scales in place."""
    out = ArrayRecord()
    for k, v in record.items():
        a = v.numpy()
        out[k] = KeptArray(a.astype(np.float64)) if not np.issubdtype(a.dtype, np.floating) else v
    return out


def clamp_norm_variances(record: ArrayRecord) -> ArrayRecord:
    """Noised normalisation statistics made valid again: running variances clamped at 0.

    DP-FedAvg noises every array of the average, BatchNorm's ``running_var`` included, and a
    variance near 0 plus noise can turn negative: ``sqrt(var + eps)`` is then NaN and the model
    (a batch-norm GAN's generator most of all) outputs NaN. Clamping is post-processing of the
    noised release, so it costs no privacy (Dwork & Roth 2014, Prop. 2.1).

    Parameters
    ----------
    record
        The aggregate; arrays named ``*running_var`` are clamped, the others kept as they are.
    """
    out = ArrayRecord()
    for k, v in record.items():
        if k.endswith("running_var"):
            a = v.numpy()
            if (a < 0).any():
                v = KeptArray(np.maximum(a, 0).astype(a.dtype))
        out[k] = v
    return out


def build_dp_wrapper(base: Strategy, privacy: PrivacySection, noise_multiplier: float, sites_per_round: int) -> Strategy:
    """Flower's DP wrapper chosen by ``privacy.clipping`` (fixed/adaptive) and ``privacy.clipping_side``."""
    side, kind = privacy.clipping_side, privacy.clipping
    if kind == "fixed":
        cls = DifferentialPrivacyServerSideFixedClipping if side == "server" else DifferentialPrivacyClientSideFixedClipping
        return cls(base, noise_multiplier, privacy.clipping_norm, sites_per_round)
    stddev = privacy.clipped_count_stddev or sites_per_round / 20
    if noise_multiplier >= 2 * stddev:
        raise ValueError(
            f"adaptive clipping needs privacy.clipped_count_stddev > noise_multiplier / 2 = {noise_multiplier / 2:.4g} "
            f"(the clipped-update count shares the privacy budget), got {stddev:.4g}"
        )
    cls = (DifferentialPrivacyServerSideAdaptiveClipping if side == "server"
           else DifferentialPrivacyClientSideAdaptiveClipping)
    return cls(base, noise_multiplier, sites_per_round, initial_clipping_norm=privacy.clipping_norm,
               target_clipped_quantile=privacy.target_quantile, clip_norm_lr=privacy.clip_norm_lr,
               clipped_count_stddev=stddev)


class AccountedClientDP(Strategy):
    """A Flower DP wrapper plus accounting with site sampling (see the module docstring).

    Parameters
    ----------
    dp
        One of Flower's four DP wrappers (around a FedAvg/FedProx weighted by ``num-examples``).
    noise_multiplier
        sigma the wrapper adds (the configured one; for adaptive clipping the wrapper splits it
        between the update and the clipped count so that the total is sigma, Andrew et al. Thm 1).
    num_sites, sites_per_round
        Population and sample size per round (sampling rate ``sites_per_round / num_sites``).
    delta, max_epsilon
        Reporting delta and the budget (0 = none).
    mechanism
        ``"rdp"`` or ``"prv"``.
    seed
        Experiment seed (seeds each round's noise when ``reproducible``).
    reproducible
        ``privacy.reproducible_noise``; otherwise each round's noise is seeded from ``os.urandom``.
    distributed
        ``dp`` is :class:`~fedsilo.federation.distributed_dp.DistributedDP` (secure aggregation):
        the sites added the noise, and a round summed over ``m'`` of ``m`` sites carries the noise
        multiplier ``sigma sqrt(m'/m)``.
    """

    def __init__(self, dp: Strategy, *, noise_multiplier: float, num_sites: int, sites_per_round: int,
                 delta: float, max_epsilon: float = 0.0, mechanism: str = "rdp", seed: int = 0, reproducible: bool = False,
                 distributed: bool = False) -> None:
        self.dp = dp
        self.noise_multiplier = float(noise_multiplier)
        self.num_sites = num_sites
        self.sites_per_round = sites_per_round
        self.delta = delta
        self.max_epsilon = max_epsilon
        self.mechanism = mechanism
        self.seed = seed
        self.reproducible = reproducible
        self.distributed = distributed
        # plain list (not an Accountant) so fedsilo's strategy checkpointing captures it
        self.history: list[tuple[float, float, int]] = []

    @property
    def sample_rate(self) -> float:
        return self.sites_per_round / self.num_sites

    def accountant(self) -> Accountant:
        """The accountant of the rounds released so far."""
        return Accountant(self.mechanism, self.history)

    def summary(self) -> None:
        logger.info("Client-level DP: sigma %.4g, %d of %d sites per round, delta %g", self.noise_multiplier,
                    self.sites_per_round, self.num_sites, self.delta)
        self.dp.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.max_epsilon:
            eps = self.accountant().projected_epsilon(self.delta, self.noise_multiplier, self.sample_rate, 1)
            if eps > self.max_epsilon:
                raise PrivacyBudgetExhausted(
                    f"another round would take the federation's client-level epsilon to {eps:.3f} > "
                    f"privacy.max_epsilon = {self.max_epsilon} (delta {self.delta:g})"
                )
        messages = list(self.dp.configure_train(server_round, arrays, config, grid))
        if hasattr(self.dp, "current_arrays"):
            self.dp.current_arrays = _float_arrays(arrays)
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        good = [r for r in replies if not r.has_error()]
        for reply in good:
            reply.content.metric_records[METRICS][NUM_EXAMPLES] = 1  # equal weights: sensitivity C / m
            reply.content.array_records[ARRAYS] = _float_arrays(reply.content.array_records[ARRAYS])
        state = np.random.get_state()
        seed = derive_seed(self.seed, "client-dp-noise", server_round) if self.reproducible else secure_seed()
        np.random.seed(seed % 2**32)
        try:
            arrays, metrics = self.dp.aggregate_train(server_round, replies)
        finally:
            np.random.set_state(state)
        out = MetricRecord(dict(metrics.items()) if metrics is not None else {})
        if arrays is not None and good:
            if self.distributed:  # one stand-in reply: how many sites' noise shares the sum holds
                summed = int(good[0].content.metric_records[METRICS].get(SUMMED_SITES, len(good)))
                effective = self.noise_multiplier * math.sqrt(min(1.0, summed / self.sites_per_round))
            else:
                effective = self.noise_multiplier * min(1.0, len(good) / self.sites_per_round)
            if effective < self.noise_multiplier:
                logger.warning("Round %d: %d of %d sites contributed; the round's effective noise multiplier "
                               "is %.4g", server_round, len(good), self.sites_per_round, effective)
            acc = self.accountant()
            acc.step(effective, self.sample_rate, 1)
            self.history = acc.history
            out["privacy_epsilon"] = acc.epsilon(self.delta)
            arrays = clamp_norm_variances(arrays)
        out["privacy_noise_multiplier"] = self.noise_multiplier
        out["privacy_clipping_norm"] = float(self.dp.clipping_norm)
        out["privacy_delta"] = self.delta
        return arrays, out

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.dp.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.dp.aggregate_evaluate(server_round, replies)


def wrap_client_dp(base: Strategy, cfg: ExperimentConfig, sites_per_round: int) -> AccountedClientDP:
    """``base`` (FedAvg or FedProx) wrapped for client-level DP as
    ``cfg.privacy`` says."""
    privacy, fed = cfg.privacy, cfg.federation
    sigma, delta = client_dp_noise(privacy, fed.num_sites, sites_per_round, fed.rounds)
    if sites_per_round < 10:
        logger.warning("Client-level DP with %d sites per round: the noise (sigma C / m) is large next to the "
                       "average of so few updates; expect a large utility cost or a large epsilon", sites_per_round)
    distributed = fed.secure_aggregation
    dp = (DistributedDP(base, sigma, privacy.clipping_norm, sites_per_round) if distributed
          else build_dp_wrapper(base, privacy, sigma, sites_per_round))
    return AccountedClientDP(dp, noise_multiplier=sigma, num_sites=fed.num_sites, sites_per_round=sites_per_round,
                             delta=delta, max_epsilon=privacy.max_epsilon, mechanism=privacy.accountant,
                             seed=cfg.experiment.seed, reproducible=privacy.reproducible_noise,
                             distributed=distributed)


def client_clipping_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """ClientApp mod: clip the site's update to the norm the server's client-side DP wrapper sends.

    Inactive unless the message is a training message whose ``config`` record holds
    ``clipping_norm``. Clips ``reply - sent`` (Flower's ``compute_adaptive_clip_model_update``,
    the FlatClip of McMahan et al.) and reports ``norm_bit`` (1 = the update was clipped), which
    the adaptive wrappers use and the fixed ones ignore.
    """
    if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
        return call_next(msg, context)
    config = msg.content.config_records.get(CONFIG)
    if config is None or KEY_CLIPPING_NORM not in config:
        return call_next(msg, context)
    norm = float(config[KEY_CLIPPING_NORM])
    sent = msg.content.array_records[ARRAYS]
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    received = reply.content.array_records.get(ARRAYS)
    if received is None or list(received.keys()) != list(sent.keys()):
        reason = "client-side clipping: the reply's arrays do not match the arrays received"
        logger.error(reason)
        return Message(Error(code=_MOD_FAILED, reason=reason), reply_to=msg)
    new = [a.astype(np.float64) for a in received.to_numpy_ndarrays()]
    old = [a.astype(np.float64) for a in sent.to_numpy_ndarrays()]
    clipped = compute_adaptive_clip_model_update(new, old, norm)
    dtypes = [a.dtype for a in received.to_numpy_ndarrays()]
    reply.content.array_records[ARRAYS] = ArrayRecord({
        k: KeptArray(np.round(v).astype(d) if not np.issubdtype(d, np.floating) else v.astype(d))
        for k, v, d in zip(received.keys(), new, dtypes, strict=True)
    })
    reply.content.metric_records[METRICS][KEY_NORM_BIT] = int(clipped)
    return reply


__all__ = [
    "AccountedClientDP",
    "build_dp_wrapper",
    "client_clipping_mod",
    "client_dp_noise",
    "wrap_client_dp",
]
