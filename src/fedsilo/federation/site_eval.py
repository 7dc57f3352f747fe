"""The evaluation exchange of a federated round: every site scores the global model on its
validation split and, for a task with federated test metrics (a GAN's FD and precision/recall
against the sites' images), computes the statistics the coordinator asked for.

:func:`evaluate_sites` is :class:`~fedsilo.federation.server_app.FederatedRounds`' side of it:
it sends the evaluation messages (with the task's request, when there is one), turns the replies
into per-site rows (and the strategy's weighted ``global`` validation row) and returns the sites'
statistics, in site order, for the task to combine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsilo.federation.messages import (
    EVAL_REQUEST,
    EVAL_STATS,
    METRICS,
    NUM_EXAMPLES,
    arrays_to_numpy,
    state_to_arrays,
)
from fedsilo.rounds import Row

logger = logging.getLogger(__name__)


@dataclass
class SiteEvaluation:
    """What one evaluation exchange returned: rows to log, and each answering site's statistics."""

    rows: list[Row] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    stats: list[dict[str, np.ndarray]] = field(default_factory=list)


def evaluate_sites(rounds: Any, rnd: int, request: Mapping[str, np.ndarray] | None = None,
                   arrays: ArrayRecord | None = None) -> SiteEvaluation:
    """Send round ``rnd``'s evaluation messages to every site (with ``request`` attached when given)
    and collect the replies; a site that fails or sends no statistics is logged and left out.

    ``rounds`` is the :class:`~fedsilo.federation.server_app.FederatedRounds` of the run (not
    imported here: server_app imports this module). ``arrays`` are the weights the sites score
    (default: the round's aggregate; a GAN with an EMA sends the released generator).
    """
    messages = rounds._configure(rounds.strategy.configure_evaluate, rnd, rounds.sites, arrays)
    if request is not None:
        for msg in messages:
            msg.content[EVAL_REQUEST] = state_to_arrays(request)
    by_node = rounds._by_node
    answers = [(by_node[r.metadata.src_node_id], r) for r in rounds._send(messages) if r.metadata.src_node_id in by_node]
    return collect_evaluations(rounds, rnd, answers, request)


def collect_evaluations(rounds: Any, rnd: int, answers: Iterable[tuple[Any, Message]],
                        request: Mapping[str, np.ndarray] | None = None) -> SiteEvaluation:
    """Rows (and statistics) of evaluation replies, given as ``(site, reply)`` in site order: a
    row per answering site, and the strategy's weighted ``global`` validation row (federated mode).

    Fused evaluation (:mod:`fedsilo.federation.fused_eval`) passes its sites' validation records
    here too, as stand-in evaluation replies, so both paths log the same numbers.
    """
    out = SiteEvaluation()
    good = []
    for site, reply in answers:
        if reply.has_error():
            logger.warning("Round %d: evaluation failed at %s: %s", rnd, site.name, reply.error.reason)
            continue
        metrics = dict(reply.content.metric_records[METRICS])
        if metrics.get(NUM_EXAMPLES, 0) > 0:
            good.append(reply)
        out.rows.append(Row(site.name, {k: v for k, v in metrics.items() if k != NUM_EXAMPLES}))
        if request is not None:
            stats = reply.content.array_records.get(EVAL_STATS)
            if stats is None:
                logger.warning("Round %d: %s sent no evaluation statistics", rnd, site.name)
            else:
                out.names.append(site.name)
                out.stats.append(dict(arrays_to_numpy(stats)))
    if good and rounds.cfg.experiment.mode == "federated":
        agg = rounds.strategy.aggregate_evaluate(rnd, good)
        if agg is not None:
            out.rows.append(Row("global", {k: float(v) for k, v in agg.items()}))
    return out
