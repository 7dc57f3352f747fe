"""Server optimisers per part of the model (a GAN's generator and discriminator), on top of any mean.

FedOpt (Reddi et al., ICLR 2021) treats ``aggregate - current weights`` as a pseudo-gradient and
feeds it to a server optimiser. :class:`PerPartServerOpt` does this separately for each part of
the model named by a state-dict key prefix (``generator.``, ``discriminator.``), each with its own
optimiser and learning rate (``gan.federation.server_opt_g`` / ``server_opt_d``): the two
networks of a GAN learn at different speeds and need not share a server step.

It wraps the strategy that computes the aggregate (``federation.strategy``, under a DP wrapper
the noised mean: the server step is post-processing of it) and hands each part's parameters, as
one stand-in reply of weight 1, to a Flower :class:`~flwr.serverapp.strategy.FedAdam` or
:class:`~flwr.serverapp.strategy.FedAvgM` whose current arrays are that part of the global
weights, so the update rules are Flower's own (FedAdam's bias correction included). Buffers
(batch-norm statistics, counters) and keys outside every part take the aggregate unchanged.
The per-part optimisers are data attributes, so their moments are checkpointed with the
strategy (:func:`~fedsilo.federation.strategies.strategy_state`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvgM, Strategy

from fedsilo.config.federation_schema import StrategySection
from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES, KeptArray

logger = logging.getLogger(__name__)

SERVER_OPTS = ("fedadam", "fedavgm")


def part_optimiser(name: str, lr: float, cfg: StrategySection) -> FedAdam | FedAvgM:
    """Flower's FedAdam or FedAvgM at server learning rate ``lr`` (betas, tau and momentum from ``cfg``).

    Raises
    ------
    ValueError
        For another name, or a learning rate that is not positive.
    """
    if lr <= 0:
        raise ValueError(f"server learning rate must be > 0, got {lr}")
    common = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1,
              "weighted_by_key": NUM_EXAMPLES, "arrayrecord_key": ARRAYS}
    if name == "fedadam":
        return FedAdam(**common, eta=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)
    if name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=lr, server_momentum=cfg.server_momentum)
    raise ValueError(f"server optimiser must be one of {', '.join(SERVER_OPTS)}, got {name!r}")


def _attr(prefix: str) -> str:
    return "opt_" + (re.sub(r"\W+", "_", prefix).strip("_") or "model")


class PerPartServerOpt(Strategy):
    """A server optimiser per model part on top of ``base``'s aggregate.

    Parameters
    ----------
    base
        The strategy that configures rounds and computes the aggregate.
    parts
        State-dict key prefix -> (``fedadam`` or ``fedavgm``, server learning rate).
    param_keys
        The state-dict keys of trainable parameters (only these are optimised).
    cfg
        ``federation.strategy`` (beta_1, beta_2, tau, server_momentum).
    """

    def __init__(self, base: Strategy, parts: Mapping[str, tuple[str, float]], param_keys: Iterable[str],
                 cfg: StrategySection) -> None:
        if not parts:
            raise ValueError("parts must name at least one model part (a key prefix)")
        self.base = base
        self._prefixes = list(parts)
        self._param_keys = frozenset(param_keys)
        self._current: ArrayRecord | None = None
        for prefix, (name, lr) in parts.items():
            setattr(self, _attr(prefix), part_optimiser(name, lr, cfg))

    def summary(self) -> None:
        for prefix in self._prefixes:
            logger.info("Server optimiser of %s*: %s", prefix, type(getattr(self, _attr(prefix))).__name__)
        self.base.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = arrays
        return self.base.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.base.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        if self._current is None:
            raise RuntimeError("aggregate_train before configure_train: the current weights are unknown")
        out = ArrayRecord(dict(arrays.items()))
        for prefix in self._prefixes:
            keys = [k for k in arrays.keys() if k.startswith(prefix) and k in self._param_keys]
            if keys:
                for key, value in self._step(prefix, server_round, arrays, keys).items():
                    out[key] = KeptArray(value.astype(arrays[key].numpy().dtype))
        return out, metrics

    def _step(self, prefix: str, server_round: int, aggregate: ArrayRecord, keys: list[str]) -> dict[str, np.ndarray]:
        """One server step of ``prefix``'s optimiser from the current weights towards ``aggregate``."""
        assert self._current is not None
        opt = getattr(self, _attr(prefix))
        current = {k: self._current[k].numpy() for k in keys}
        # the part's current weights, in the form each Flower optimiser keeps them
        opt.current_arrays = current if isinstance(opt, FedAdam) else ArrayRecord(
            {k: KeptArray(v) for k, v in current.items()})
        stand_in = Message(RecordDict({ARRAYS: ArrayRecord({k: aggregate[k] for k in keys}),
                                       METRICS: MetricRecord({NUM_EXAMPLES: 1})}),
                           dst_node_id=0, message_type=MessageType.TRAIN)
        new, _ = opt.aggregate_train(server_round, [stand_in])
        return {k: np.asarray(new[k].numpy()) for k in keys}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.base.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.base.aggregate_evaluate(server_round, replies)


__all__ = ["SERVER_OPTS", "PerPartServerOpt", "part_optimiser"]
