"""Secure aggregation: the coordinator learns only the weighted mean of the sites' updates.

fedsilo runs Flower's SecAgg+ implementation (Bell et al., "Secure single-server aggregation with
(poly)logarithmic overhead", CCS 2020; :class:`flwr.server.workflow.SecAggPlusWorkflow` and
:func:`flwr.client.mod.secaggplus_mod`) for each training round, in four message exchanges:
setup (keys), share keys (Shamir shares of each site's secrets to its neighbours), collect masked
vectors (the sites train, then send their quantised, masked updates), unmask (surviving sites
send the shares that remove the masks from the *sum*). A site that drops out after sending its
keys is recovered from its neighbours' shares: the round completes over the others.

What each site sends is its *update* ``u_i = w_i - w`` (trained minus received weights), scaled
by its weight share ``n_i / max_weight``, clipped coordinate-wise to ``[-c, c]``
(``federation.secagg.clipping_range``) and stochastically rounded to ``Q`` levels
(``quantization_range``). The unmasked result is ``sum_i r_i u_i / sum_i r_i`` with ``r_i`` the
quantised weight shares: FedAvg's example-weighted mean update up to the rounding, at most
``k * 2c / Q / sum_i r_i`` per coordinate for ``k`` sites when nothing is clipped (each site
reports the share of coordinates it had to clip as ``secagg_clipped``). The strategy then
applies that mean as FedAvg/FedProx do, or as the pseudo-gradient of FedAdam, FedYogi, FedAvgM.

This module drives the workflow's stages from fedsilo's round loop: a throwaway legacy context
and a capturing strategy stand in for Flower's legacy server, and fedsilo's own training messages
(global weights, config, site state) replace the workflow's fit instructions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from fedsilo.config.privacy_schema import SecAggSection
from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES, SUMMED_SITES
from fedsilo.seeding import derive_seed

logger = logging.getLogger(__name__)

#: Modulus of the masked integers (Flower's default, 2**32).
MODULUS = 2**32
#: Metric a site reports: the share of its update's coordinates clipped to the range.
CLIPPED = "secagg_clipped"


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
        num_shares=_odd_shares(settings.num_shares, len(messages)),
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


def float_names(arrays: ArrayRecord) -> list[str]:
    """The arrays that are summed securely: the floating-point ones. Integer buffers (BatchNorm's
    ``num_batches_tracked``) would be clipped to the range, and keep the global value instead."""
    return [k for k in arrays.keys() if np.dtype(arrays[k].numpy().dtype).kind == "f"]


def _odd_shares(fraction: float, sites: int) -> int | float:
    """The workflow's ``num_shares``: all sites (classic SecAgg) or an odd count >= 3."""
    if fraction >= 1.0 or sites <= 3:
        return 1.0  # every site is every site's neighbour
    k = max(3, round(fraction * sites))
    return k if k % 2 else k + 1


# -- the site's side ---------------------------------------------------------------------------


def secure_payload_mod(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """ClientApp mod under :func:`secaggplus_mod`: turn fedsilo's training reply into what SecAgg+
    masks (the update ``trained - received`` as float arrays, at least 1-d, weighted by
    ``num-examples``), keeping the reply's metrics and site state."""
    received = msg.content.array_records[ARRAYS]
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    trained = reply.content.array_records[ARRAYS]
    update = [np.atleast_1d(np.asarray(trained[k].numpy(), dtype=np.float64) - received[k].numpy())
              for k in float_names(received)]
    metrics = reply.content.metric_records[METRICS]
    n = int(metrics[NUM_EXAMPLES])
    protocol = context.state.config_records.get(RECORD_KEY_STATE)
    if protocol is not None:  # the share of coordinates SecAgg+ will clip (weighted as it weights them)
        share = n / float(protocol["max_weight"])
        flat = np.concatenate([np.abs(u).ravel() for u in update]) * share
        metrics[CLIPPED] = float(np.mean(flat > float(protocol["clipping_range"])))
    content = RecordDict({k: v for k, v in reply.content.items() if k != ARRAYS})
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), n, {})
    for key, record in compat.fitres_to_recorddict(fitres, keep_input=False).items():
        content[key] = record
    # SecAgg+'s stochastic rounding draws from NumPy's global generator: seed it per site and round
    # (by the site's position, which every engine gives alike, so the engines' results agree)
    rnd = int(msg.metadata.group_id) if str(msg.metadata.group_id).isdigit() else 0
    node = context.node_config
    site = int(node.get("partition-id", node.get("site-index", context.node_id % 2**31)))
    np.random.seed(derive_seed(0, "secagg-rounding", site, rnd) % 2**32)
    return Message(content, reply_to=msg)


def secure_mods(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """The site's SecAgg+ handling, for messages of a secure round only (others pass through)."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, lambda m, c: secure_payload_mod(m, c, call_next))


def apply_mean_update(arrays: ArrayRecord, mean_update: Mapping[str, np.ndarray], total: int, sites: int) -> Message:
    """A stand-in training reply carrying ``arrays + mean_update`` with ``num-examples = total``
    (and ``summed-sites = sites``): what FedAvg-family strategies would compute from the
    individual replies."""
    from flwr.app import Array, MetricRecord

    new = ArrayRecord({k: Array(np.asarray(np.asarray(arrays[k].numpy(), dtype=np.float64)
                                           + np.asarray(mean_update[k]).reshape(arrays[k].shape)))
                       if k in mean_update else arrays[k] for k in arrays.keys()})
    content = RecordDict({ARRAYS: new, METRICS: MetricRecord({NUM_EXAMPLES: int(total), SUMMED_SITES: int(sites)})})
    return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


__all__ = ["CLIPPED", "SecureRound", "apply_mean_update", "secure_mods", "secure_payload_mod", "secure_round"]
