"""Aggregation strategies: Flower's, chosen by name, and a wrapper that keeps some state local.

Names map to Flower message-API strategies (``flwr.serverapp.strategy``) with FedAvg weighting
by the number of training examples, plus centered clipping (:mod:`.robust`), which Flower lacks. :class:`LocalStateStrategy` wraps any of them and keeps a
chosen subset of the arrays per *group* of sites instead of averaging it across all sites:

- FedBN (Li et al., ICLR 2021): normalisation parameters and statistics, one group per site;
- DSBN-style aggregation: domain batch-norm layers averaged only among sites of one modality;
- the ``local`` reference mode: every array, one group per site (sites never share anything).

Strategy state (FedOpt moments, the wrapper's per-group arrays) is captured by
:func:`strategy_state` for checkpoints and restored by :func:`load_strategy_state`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import get_args

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedsilo.config.federation_schema import StrategyName, StrategySection
from fedsilo.federation.client_dp import wrap_client_dp
from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES, KeptArray
from fedsilo.federation.robust import CenteredClipping
from fedsilo.tasks import Task

logger = logging.getLogger(__name__)

#: The strategy names ``federation.strategy.name`` accepts (the config schema's list).
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)


def build_strategy(cfg: StrategySection, num_sites: int) -> Strategy:
    """The Flower strategy named by ``cfg.name`` (without the local-state wrapper).

    Sampling is done by fedsilo's round loop (seeded), so the strategy is built to accept
    whatever sites it is handed: fractions 1.0, minimum 1 node.
    """
    common = {
        "fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1,
        "min_evaluate_nodes": 1, "min_available_nodes": 1, "weighted_by_key": NUM_EXAMPLES,
        "arrayrecord_key": ARRAYS,
    }
    name = cfg.name
    if name in ("fedavg", "fedbn"):
        return FedAvg(**common)
    if name == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if name == "fedadam":
        return FedAdam(**common, eta=cfg.server_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)
    if name == "fedyogi":
        return FedYogi(**common, eta=cfg.server_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)
    if name == "fedadagrad":
        return FedAdagrad(**common, eta=cfg.server_lr, tau=cfg.tau)
    if name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(**common, beta=cfg.trim_beta)
    if name == "krum":
        return Krum(**common, num_malicious_nodes=cfg.num_malicious)
    if name == "multikrum":
        return MultiKrum(**common, num_malicious_nodes=cfg.num_malicious, num_nodes_to_select=cfg.num_selected)
    if name == "bulyan":
        if num_sites < 4 * cfg.num_malicious + 3:
            raise ValueError(
                f"bulyan needs num_sites >= 4 * num_malicious + 3 = {4 * cfg.num_malicious + 3}, got {num_sites}"
            )
        return Bulyan(**common, num_malicious_nodes=cfg.num_malicious)
    if name == "centeredclip":
        return CenteredClipping(**common, radius=cfg.clip_radius, iterations=cfg.clip_iterations)
    raise ValueError(f"federation.strategy.name must be one of {', '.join(STRATEGY_NAMES)}, got {name!r}")


def sites_per_round(num_sites: int, fraction: float, min_sites: int) -> int:
    """Sites sampled for training in a round: ``int(num_sites * fraction)``, at least ``min_sites``."""
    return min(num_sites, max(min_sites, int(num_sites * fraction)))


def make_strategy(task: Task, norm_keys: set[str]) -> Strategy:
    """The configured strategy, wrapped to keep state local where the mode, strategy or task asks,
    or for client-level differential privacy (``privacy.mode = "client"``), and under the
    server optimisers the task asks for per model part (:meth:`Task.server_optimisers`,
    federated mode; outside the DP wrapper, inside the local-state one).

    Parameters
    ----------
    task
        The run's task (its config, and which arrays it keeps local to groups of sites).
    norm_keys
        State-dict keys of the model's normalisation layers (what FedBN keeps local).
    """
    strategy = _make_strategy(task, norm_keys)
    parts = task.server_optimisers() if task.cfg.experiment.mode == "federated" else {}
    if not parts:
        return strategy
    from fedsilo.federation.server_opt import PerPartServerOpt

    params = {k for k, p in task.build_model().named_parameters() if p.requires_grad}
    if isinstance(strategy, LocalStateStrategy):
        strategy.base = PerPartServerOpt(strategy.base, parts, params, task.cfg.federation.strategy)
        return strategy
    return PerPartServerOpt(strategy, parts, params, task.cfg.federation.strategy)


def _make_strategy(task: Task, norm_keys: set[str]) -> Strategy:
    cfg = task.cfg
    fed = cfg.federation
    base = build_strategy(fed.strategy, fed.num_sites)
    client_dp = cfg.privacy.mode == "client" and cfg.privacy.active
    if cfg.experiment.mode == "local":
        if client_dp:
            logger.warning("privacy.mode = 'client' is ignored in local mode (sites share nothing)")
        return LocalStateStrategy(base, lambda key: True)
    if fed.strategy.name == "fedbn" or fed.strategy.local_norm:
        if not norm_keys:
            logger.warning("Local normalisation requested but the model has no normalisation layers")
        return LocalStateStrategy(base, norm_keys.__contains__)
    rule = task.local_state()
    if rule is not None:
        if client_dp:
            raise ValueError(f"task {task.name!r} keeps arrays local to groups of sites, which client-level DP "
                             f"cannot noise; use privacy.mode = 'sample'")
        return LocalStateStrategy(base, rule[0], owner=rule[2] if len(rule) > 2 else None)
    if client_dp:
        return wrap_client_dp(base, cfg, sites_per_round(fed.num_sites, fed.fraction_train, fed.min_sites))
    return base


class LocalStateStrategy(Strategy):
    """Keep the arrays selected by ``is_local`` per group of sites; delegate the rest to ``base``.

    Parameters
    ----------
    base
        The strategy that aggregates the shared arrays (its result for local keys is ignored
        when sending to a group that has its own copy).
    is_local
        Predicate on array keys: True for keys that stay within a group.
    groups
        Node id -> group name (a site name for FedBN/local mode, a modality for DSBN). Set
        later with :meth:`set_groups` when node ids are only known at run time.
    owner
        Optional ``key -> group | None``: the group whose copy of a local array replaces the base
        strategy's aggregate in the global arrays (DSBN: ``...bns.mr...`` comes from the MR group),
        so the global model carries every group's own arrays. Those arrays are plain
        example-weighted means within their group (a server optimiser does not see them).
    """

    def __init__(self, base: Strategy, is_local: Callable[[str], bool],
                 groups: Mapping[int, str] | None = None,
                 owner: Callable[[str], str | None] | None = None) -> None:
        self.base = base
        self.is_local = is_local
        self._groups: dict[int, str] = dict(groups or {})
        self._owner = owner
        self.local: dict[str, dict[str, np.ndarray]] = {}

    @property
    def has_owners(self) -> bool:
        """Whether the global arrays carry each group's own local arrays (see ``owner``)."""
        return self._owner is not None

    def set_groups(self, groups: Mapping[int, str]) -> None:
        """Node id -> group name."""
        self._groups = dict(groups)

    def summary(self) -> None:
        logger.info("Local state kept per group (%d groups); shared arrays by %s",
                    len(set(self._groups.values())), type(self.base).__name__)
        self.base.summary()

    # -- personalisation -----------------------------------------------------------------------

    def personalised(self, arrays: ArrayRecord, group: str) -> ArrayRecord:
        """``arrays`` with the local keys replaced by ``group``'s own copy (if it has one)."""
        own = self.local.get(group)
        if not own:
            return arrays
        out = ArrayRecord()
        for k, v in arrays.items():
            out[k] = KeptArray(own[k]) if k in own else v
        return out

    def _personalise(self, messages: Iterable[Message]) -> list[Message]:
        out = []
        for msg in messages:
            group = self._groups.get(msg.metadata.dst_node_id)
            if group is None:
                raise KeyError(f"node {msg.metadata.dst_node_id} has no group; call set_groups first")
            content = RecordDict(dict(msg.content.items()))
            content[ARRAYS] = self.personalised(msg.content.array_records[ARRAYS], group)
            out.append(Message(content, dst_node_id=msg.metadata.dst_node_id,
                               message_type=msg.metadata.message_type))
        return out

    # -- Strategy API --------------------------------------------------------------------------

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self._personalise(self.base.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = self.base.aggregate_train(server_round, replies)
        by_group: dict[str, list[Message]] = {}
        for msg in replies:
            if not msg.has_error():
                by_group.setdefault(self._groups[msg.metadata.src_node_id], []).append(msg)
        for group, msgs in by_group.items():
            weights = np.array([float(m.content.metric_records[METRICS][NUM_EXAMPLES]) for m in msgs])
            weights = weights / weights.sum()
            local: dict[str, np.ndarray] = {}
            for key in msgs[0].content.array_records[ARRAYS].keys():
                if not self.is_local(key):
                    continue
                stack = [m.content.array_records[ARRAYS][key].numpy() for m in msgs]
                avg = sum(w * a.astype(np.float64) for w, a in zip(weights, stack, strict=True))
                local[key] = np.asarray(avg).astype(stack[0].dtype)
            self.local[group] = local
        if self._owner is not None and arrays is not None:
            merged = ArrayRecord()
            for key, value in arrays.items():
                own = self.local.get(self._owner(key) or "", {})
                merged[key] = KeptArray(own[key]) if key in own else value
            arrays = merged
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._personalise(self.base.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.base.aggregate_evaluate(server_round, replies)


# --------------------------------------------------------------------------------------------
# Checkpointing strategy state
# --------------------------------------------------------------------------------------------

_PLAIN = (int, float, str, bool, type(None), np.ndarray, np.generic)


def _is_state(value: object) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, (str, int)) and _is_state(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_state(v) for v in value)
    return False


def strategy_state(strategy: Strategy) -> dict[str, object]:
    """The data attributes of a strategy (and of strategies it wraps), deep-copied.

    This captures what Flower strategies accumulate across rounds (FedOpt's ``current_arrays``,
    ``m_t``, ``v_t``; FedAvgM's momentum; DP wrappers' clipping norms) and our wrapper's
    per-group arrays, without pickling callables.
    """
    state: dict[str, object] = {}
    for key, value in vars(strategy).items():
        if key.startswith("_"):
            continue  # run-time wiring (e.g. node ids), not learnt state
        if isinstance(value, Strategy):
            state[key] = {"__strategy__": strategy_state(value)}
        elif _is_state(value):
            state[key] = copy.deepcopy(value)
    return state


def load_strategy_state(strategy: Strategy, state: Mapping[str, object]) -> None:
    """Restore :func:`strategy_state` output into a strategy built from the same config."""
    for key, value in state.items():
        if isinstance(value, Mapping) and "__strategy__" in value:
            load_strategy_state(getattr(strategy, key), value["__strategy__"])  # type: ignore[arg-type]
        else:
            setattr(strategy, key, copy.deepcopy(value))
