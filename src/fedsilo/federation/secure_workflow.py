"""The coordinator's side of secure aggregation: Flower's SecAgg+ workflow stages driven from
fedsilo's round loop (see :mod:`fedsilo.federation.secure` for the protocol and its guarantees).

Imported only when ``federation.secure_aggregation`` is on: it pulls in Flower's legacy server
API, which the workflow still uses, so a throwaway legacy context and a capturing strategy stand in
for Flower's legacy server, and fedsilo's own training messages replace the workflow's fit
instructions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedsilo.config.privacy_schema import SecAggSection
from fedsilo.federation.messages import ARRAYS
from fedsilo.federation.secure import float_names

#: Modulus of the masked integers (Flower's default, 2**32).
MODULUS = 2**32


@dataclass
class SecureRound:
    """What the coordinator holds after one secure round.

    Attributes
    ----------
    replies
        The sites' replies to the training message (metrics and site state; no arrays).
    mean_update
        ``name -> (shape)`` weighted mean update, or None when the round was abandoned.
    masked
        ``node_id ->`` the masked vector it sent (what the coordinator saw of a site).
    """

    replies: list[Message] = field(default_factory=list)
    mean_update: dict[str, np.ndarray] | None = None
    masked: dict[int, list[bytes]] = field(default_factory=dict)


class _Proxy(ClientProxy):
    """A node id for the legacy workflow (it never calls the proxy)."""

    def get_properties(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        raise NotImplementedError


class _Capture(Strategy):
    """Hands the workflow fedsilo's sampled nodes and keeps the unmasked aggregate."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.proxies = []
        for nid in node_ids:
            proxy = _Proxy(str(nid))
            proxy.node_id = nid
            self.proxies.append(proxy)
        self.aggregate: list[np.ndarray] | None = None

    def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN201
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
        return [(p, FitIns(parameters, {})) for p in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
        if results:
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
        return (results[0][1].parameters if results else None), {}

    def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # noqa: ANN001, ANN201
        return None, {}

    def evaluate(self, server_round, parameters):  # noqa: ANN001, ANN201
        return None


class _Recording:
    """A grid that keeps the replies of the collect-masked-vectors stage (the training replies)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.collected: list[Message] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        # each message its own records: a site's mod edits its message's config in place
        messages = [Message(_copy(m.content), dst_node_id=m.metadata.dst_node_id,
                            message_type=m.metadata.message_type, group_id=m.metadata.group_id) for m in messages]
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        if messages and ARRAYS in messages[0].content.array_records:
            self.collected = replies
        return replies


def _copy(content: RecordDict) -> RecordDict:
    out = RecordDict()
    for key, record in content.items():
        out[key] = ConfigRecord(dict(record.items())) if isinstance(record, ConfigRecord) else record
    return out


def secure_round(grid: Grid, rnd: int, messages: list[Message], settings: SecAggSection, *,
                 max_weight: float, timeout: float | None) -> SecureRound:
    """Run one SecAgg+ training round over ``messages`` (fedsilo's training messages, one per site).

    Parameters
    ----------
    grid
        Where the sites are.
    rnd
        The round (the messages' group id).
    messages
        One training message per sampled site (global weights, config, site state).
    settings
        ``federation.secagg``.
    max_weight
        The largest site weight (``num-examples``) of the round's sites.
    timeout
        Seconds to wait in each of the four exchanges.
    """
    if len(messages) < 2:
        raise ValueError(f"secure aggregation needs at least 2 sites in a round, got {len(messages)}")
    names = float_names(messages[0].content.array_records[ARRAYS])
    workflow = SecAggPlusWorkflow(
        num_shares=float(settings.num_shares),  # a share of the round's sites; Flower makes it odd
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=float(max_weight), clipping_range=float(settings.clipping_range),
        quantization_range=int(settings.quantization_range), modulus_range=MODULUS, timeout=timeout)
    strategy = _Capture(m.metadata.dst_node_id for m in messages)
    state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd}),
                        MAIN_PARAMS_RECORD: ArrayRecord()})
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=strategy)
    recording = _Recording(grid)
    flow = _workflow_state()
    by_node = {m.metadata.dst_node_id: m.content for m in messages}
    ok = workflow.setup_stage(recording, context, flow)
    if ok:
        flow.nid_to_fitins = {nid: _copy(by_node[nid]) for nid in flow.nid_to_fitins}
        ok = workflow.share_keys_stage(recording, context, flow)
    if ok:
        # a site lost before it shared its keys is no longer part of the round (nothing to recover)
        flow.sampled_node_ids = set(flow.active_node_ids)
        ok = workflow.collect_masked_vectors_stage(recording, context, flow)
    out = SecureRound(replies=[r for r in recording.collected if not r.has_error()])
    out.masked = {r.metadata.src_node_id: list(r.content.config_records[RECORD_KEY_CONFIGS].get(Key.MASKED_PARAMETERS, []))
                  for r in out.replies if RECORD_KEY_CONFIGS in r.content.config_records}
    if ok:
        workflow.unmask_stage(recording, context, flow)
    if strategy.aggregate is not None:
        shapes = {k: messages[0].content.array_records[ARRAYS][k].shape for k in names}
        out.mean_update = {k: np.asarray(a).reshape(shapes[k]) for k, a in zip(names, strategy.aggregate, strict=True)}
    return out


def _workflow_state() -> Any:
    """A fresh state of the SecAgg+ workflow (its own class; not exported by Flower)."""
    from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

    return WorkflowState()


__all__ = ["MODULUS", "SecureRound", "secure_round"]
