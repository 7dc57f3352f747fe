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

This module holds the site's side (:func:`secure_mods`, light enough for every ClientApp start: it
imports Flower's SecAgg+ mod only for messages of a secure round) and the stand-in reply the
strategy aggregates; :mod:`fedsilo.federation.secure_workflow` holds the coordinator's side.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType

from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES, SUMMED_SITES
from fedsilo.seeding import derive_seed

#: Metric a site reports: the share of its update's coordinates clipped to the range.
CLIPPED = "secagg_clipped"
#: The SecAgg+ config record of a message (Flower's ``RECORD_KEY_CONFIGS``) and the protocol state
#: a site keeps (``RECORD_KEY_STATE``); spelled here so that messages outside a secure round never
#: import Flower's legacy modules.
SECAGG_CONFIGS = "secaggplus_configs"
SECAGG_STATE = "secaggplus_state"


def float_names(arrays: ArrayRecord) -> list[str]:
    """The arrays that are summed securely: the floating-point ones. Integer buffers (BatchNorm's
    ``num_batches_tracked``) would be clipped to the range, and keep the global value instead."""
    return [k for k in arrays.keys() if np.dtype(arrays[k].numpy().dtype).kind == "f"]


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
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    protocol = context.state.config_records.get(SECAGG_STATE)
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
    if msg.metadata.message_type != MessageType.TRAIN or SECAGG_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod

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


__all__ = ["CLIPPED", "apply_mean_update", "float_names", "secure_mods", "secure_payload_mod"]
