"""Fused evaluation (``federation.fused_evaluation``): a round is one message exchange.

Without it a federated round is two exchanges: the training messages, then (every
``federation.eval_every`` rounds) the evaluation messages that score the new aggregate on the
sites' validation splits. In a deployment every exchange costs seconds (Flower's SuperNode sleeps
3 s after an empty pull), so fused evaluation defers the evaluation of round r's aggregate to
round r+1's exchange:

- each site sampled in round r+1 gets its training message with ``evaluate-first`` set: it scores
  the weights it received (round r's aggregate) on its validation split, then trains, and returns
  those metrics in a ``validation`` MetricRecord beside its update (the coordinator takes it out
  before the update is validated and aggregated, so it never mixes with the training metrics);
- each site not sampled gets round r's evaluation message in the same exchange;
- the replies become round r's validation rows exactly as a separate exchange's would
  (:func:`~fedsilo.federation.site_eval.collect_evaluations`: per-site rows and the strategy's
  weighted ``global`` row): same weights scored, same numbers.

The last round's aggregate, and that of a run that stops before its next training message, is
scored by an evaluation exchange of its own (:meth:`FusedEvaluation.evaluate_pending`). Round 0
(the initial weights) is not scored at the sites, fused or not. A checkpoint records the round
whose evaluation is pending, so a resumed run scores it with its first training message.

Never fused (the separate exchange stays): secure aggregation (SecAgg+'s own message flow), a
weight average of the released model (the sites would score other weights than they train from)
and federated test metrics (the evaluation message carries the task's request).
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType

from fedsilo.config import ExperimentConfig
from fedsilo.federation.messages import CONFIG, EVALUATE_FIRST, METRICS, VALIDATION
from fedsilo.federation.site_eval import collect_evaluations, evaluate_sites
from fedsilo.rounds import Row

logger = logging.getLogger(__name__)


def fused_evaluation_on(cfg: ExperimentConfig, deployed: bool) -> bool:
    """Whether ``federation.fused_evaluation`` fuses in this run (``auto``: in a deployment only)."""
    fed = cfg.federation
    if fed.fused_evaluation == "off" or (fed.fused_evaluation == "auto" and not deployed):
        return False
    if fed.secure_aggregation:
        if fed.fused_evaluation == "on":
            logger.warning("federation.fused_evaluation is ignored with federation.secure_aggregation: the sites' "
                           "validation keeps its own exchange")
        return False
    return True


def take_validation(reply: Message) -> MetricRecord | None:
    """The ``validation`` record of a fused training reply, removed from it (None: it has none)."""
    if reply.has_error() or VALIDATION not in reply.content.metric_records:
        return None
    record = reply.content.metric_records[VALIDATION]
    del reply.content[VALIDATION]
    return record


class FusedEvaluation:
    """The fused-evaluation part of :class:`~fedsilo.federation.server_app.FederatedRounds` (a
    mixin: it uses the executor's sites, strategy, ``_configure`` and ``_send``)."""

    sites: list[Any]
    strategy: Any
    ema: Any
    cfg: ExperimentConfig

    def _setup_fusion(self, deployed: bool) -> None:
        self.fused = fused_evaluation_on(self.cfg, deployed)
        #: the round whose sites' validation rides on the next training message (None: none)
        self.pending_evaluation: int | None = None
        self._late: list[Row] = []

    def _defer(self, rnd: int, request: object | None) -> bool:
        """Whether round ``rnd``'s site evaluation waits for round ``rnd + 1``'s training message
        (then it is recorded as pending)."""
        if (not self.fused or request is not None or self.ema.active or not self.sites
                or rnd >= self.cfg.federation.rounds):
            return False
        self.pending_evaluation = rnd
        return True

    def _fused_send(self, sampled: list[Any], messages: list[Message]) -> list[Message]:
        """Send a round's training messages (each asking its site to score the weights first) and
        the pending round's evaluation messages to the sites not sampled, as one exchange; return
        the training replies, their validation records taken out (the pending round's rows wait
        in :meth:`_late_rows`)."""
        pending, self.pending_evaluation = self.pending_evaluation, None
        if pending is None:
            return self._send(messages)
        for msg in messages:  # (strategies share one config record among messages: each gets its own)
            msg.content[CONFIG] = ConfigRecord({**msg.content.config_records[CONFIG], EVALUATE_FIRST: pending})
        chosen = {s.node_id for s in sampled}
        others = [s for s in self.sites if s.node_id not in chosen]
        evaluations = self._configure(self.strategy.configure_evaluate, pending, others) if others else []
        asked = {m.metadata.dst_node_id for m in evaluations}
        by_node = {s.node_id: s for s in self.sites}
        training, answers = [], []
        for reply in self._send([*messages, *evaluations]):  # (in site order)
            site = by_node.get(reply.metadata.src_node_id)
            if reply.metadata.src_node_id in asked:
                answers.append((site, reply))
                continue
            training.append(reply)
            record = take_validation(reply) if site is not None else None
            if record is not None:
                answers.append((site, Message(RecordDict({METRICS: record}), dst_node_id=site.node_id,
                                              message_type=MessageType.EVALUATE)))
            elif site is not None and not reply.has_error():
                logger.warning("Round %d: %s sent no validation metrics with its update (a site without fused "
                               "evaluation?); it has no validation row for round %d", pending + 1, site.name, pending)
        self._late = collect_evaluations(self, pending, [(s, r) for s, r in answers if s is not None]).rows
        for row in self._late:
            row.round = pending
        return training

    def _late_rows(self) -> list[Row]:
        """The validation rows the last fused exchange brought (of the round before), once."""
        rows, self._late = self._late, []
        return rows

    def evaluate_pending(self) -> list[Row]:
        """The pending round's site evaluation as an exchange of its own, for a run that stops
        before its next training message; [] when none is pending."""
        if self.pending_evaluation is None:
            return []
        rnd, self.pending_evaluation = self.pending_evaluation, None
        rows = evaluate_sites(self, rnd).rows
        for row in rows:
            row.round = rnd
        return rows

    # (declared for type checkers; FederatedRounds defines them)
    def _configure(self, *args: Any, **kwargs: Any) -> list[Message]:  # pragma: no cover
        raise NotImplementedError

    def _send(self, messages: list[Message]) -> list[Message]:  # pragma: no cover
        raise NotImplementedError
