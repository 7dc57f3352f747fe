"""The fedsilo ServerApp's rounds over any Flower Grid (in-process, simulation, deployment).

Each round: sample sites with a seeded generator, let the strategy configure the training
messages, send them through the Grid, validate every reply (wrong keys/shapes/dtypes,
non-finite values, a num-examples above the site's count at setup, errors, and with
``federation.validation`` an update norm above its bound are rejected and logged by site),
aggregate the valid ones *in site order* (so the floating-point sums do not depend on arrival order), evaluate on the sites'
validation splits and the global test split, and return the rows to log.

:class:`FederatedRounds` is a round executor (see :mod:`fedsilo.run.loop`): it knows Flower,
the task and the strategy, not the run folder; :func:`server_app` wraps a ``main`` in a Flower
``ServerApp`` (:mod:`fedsilo.run.app` binds it to run folders).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsilo import progress
from fedsilo.config import ExperimentConfig, dumps
from fedsilo.federation.fused_eval import FusedEvaluation
from fedsilo.federation.grids import SubsetGrid
from fedsilo.federation.messages import (
    ARRAYS,
    CONFIG_TOML,
    METRICS,
    NUM_EXAMPLES,
    SITE_STATE,
    arrays_to_numpy,
    arrays_to_state,
    cast_like,
    state_to_arrays,
)
from fedsilo.federation.secure import apply_mean_update
from fedsilo.federation.site_eval import evaluate_sites
from fedsilo.federation.site_memory import needs_memory, simulated_dir_hint
from fedsilo.federation.sites import UNREACHABLE, SiteInfo, describe_sites
from fedsilo.federation.strategies import (
    LocalStateStrategy,
    load_strategy_state,
    make_strategy,
    sites_per_round,
    strategy_state,
)
from fedsilo.federation.validation import (
    check_num_examples,
    check_train_reply,
    describe_template,
    norm_rejections,
    update_norm,
)
from fedsilo.models.norms import norm_state_keys
from fedsilo.rounds import SITE_DONE, FederationError, Row, SiteTable, StopTraining
from fedsilo.seeding import derive_seed, np_rng, resolve_device
from fedsilo.tasks import make_task

logger = logging.getLogger(__name__)


class FederatedRounds(FusedEvaluation):
    """Round executor of a federated (or local-reference) run over a Flower Grid.

    Parameters
    ----------
    grid
        Where the sites are (in-process, simulation or a SuperLink).
    cfg
        The resolved experiment config.
    initial
        The initial global weights (a task's initialisation, or pre-trained weights).
    out_dir
        Where per-round files of the task go (sample grids, overlays).
    started_with
        Site names a resumed run started with (``sites.json``); empty for a new run.
    deployed
        Whether the sites are a deployment's SuperNodes (``federation.fused_evaluation = "auto"`` fuses there).
    """

    def __init__(self, grid: Grid, cfg: ExperimentConfig, initial: Mapping[str, torch.Tensor], *,
                 out_dir: Path, started_with: list[str] | None = None, deployed: bool = False) -> None:
        self.grid = grid
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.started_with = list(started_with or [])
        self.task = make_task(cfg)
        self.device = resolve_device(cfg.experiment.device)
        self.label = f"{cfg.experiment.name} ({cfg.experiment.mode})"
        self.arrays: ArrayRecord = state_to_arrays(initial)
        self.template = describe_template(arrays_to_numpy(self.arrays))
        self.strategy = make_strategy(self.task, norm_state_keys(self.task.build_model()))
        self.ema = self.task.weight_average()  # what is evaluated and released (e.g. a GAN generator's EMA)
        self.config_text = dumps(cfg)
        self.sites: list[SiteInfo] = []
        self.site_state: dict[str, dict[str, Any]] = {}
        #: under secure aggregation: the masked vector each node sent in the last round (all the coordinator saw)
        self.masked: dict[int, list[bytes]] = {}
        #: the weights each node was sent in the current round (what its update is measured from)
        self._sent: dict[int, ArrayRecord] = {}
        self.bound_norms = cfg.federation.validation.bounds_norms and cfg.experiment.mode == "federated"
        if cfg.federation.validation.bounds_norms and not self.bound_norms:
            logger.warning("federation.validation's norm bounds are ignored in experiment.mode = %r (sites do not "
                           "share an aggregate)", cfg.experiment.mode)
        self._test: Any = None
        self._setup_fusion(deployed)  # federation.fused_evaluation (fused_eval)

    # -- setup ---------------------------------------------------------------------------------

    def _config(self) -> ConfigRecord:
        # simulated sites keep what they keep between rounds in RUN_DIR/site-state (site_memory)
        hint = simulated_dir_hint(self.out_dir, needs_memory(self.cfg, self.task.site_kept_keys()))
        return ConfigRecord({CONFIG_TOML: self.config_text, **hint})

    def setup(self) -> SiteTable:
        """Ask every node who it is; order sites; check a resumed run has its sites back.

        Raises
        ------
        FederationError
            Fewer than ``federation.num_sites`` sites described themselves within
            ``federation.timeout``, two sites share a name, or a resumed run's sites differ from
            those it started with.
        """
        fed = self.cfg.federation
        sites = describe_sites(self.grid, self._config, fed.num_sites, fed.timeout)
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise FederationError(f"site names must be unique, got {sorted(names)}")
        self.sites = sorted(sites, key=lambda s: (s.index, s.name))
        now = [s.name for s in self.sites]
        if self.started_with and self.started_with != now:
            raise FederationError(f"the run was started with sites {self.started_with} but {now} connected; a "
                                  f"resumed run needs the same sites (same names and site indices) to continue")
        if isinstance(self.strategy, LocalStateStrategy):
            self.strategy.set_groups({s.node_id: self.group_of(s) for s in self.sites})
        return SiteTable([s.record() for s in self.sites], self._class_names())

    def _class_names(self) -> list[str]:
        width = max((len(s.class_counts) for s in self.sites), default=0)
        try:
            names = list(self.task.federated_data().class_names)
        except Exception:  # noqa: BLE001 - a coordinator without data (deployment)
            names = []
        return names if len(names) == width else [str(i) for i in range(width)]

    def group_of(self, site: SiteInfo) -> str:
        """The group whose local state a site shares (itself, unless the task groups by e.g. modality)."""
        rule = self.task.local_state()
        if rule is None or self.cfg.experiment.mode == "local" or self.cfg.federation.strategy.name == "fedbn":
            return site.name
        key = rule[1]
        if key not in site.info:
            raise FederationError(f"site {site.name} did not report {key!r}, which the task groups sites by")
        return str(site.info[key])

    # -- rounds --------------------------------------------------------------------------------

    def _sample(self, rnd: int) -> list[SiteInfo]:
        """The round's sites: a seeded sample of those that have not declared themselves done.

        Raises
        ------
        StopTraining
            When fewer than ``federation.min_sites`` sites may still train (e.g. every site's
            privacy budget is spent).
        """
        fed = self.cfg.federation
        done = {s.name: str(self.site_state.get(s.name, {}).get(SITE_DONE, "")) for s in self.sites}
        eligible = [s for s in self.sites if not done[s.name]]
        if len(eligible) < fed.min_sites:
            reasons = "; ".join(f"{name}: {why}" for name, why in done.items() if why)
            raise StopTraining(f"{len(eligible)} site(s) may still train, federation.min_sites = {fed.min_sites} "
                               f"({reasons})")
        k = min(len(eligible), sites_per_round(len(self.sites), fed.fraction_train, fed.min_sites))
        if k == len(eligible):
            return eligible
        chosen = np_rng(self.cfg.experiment.seed, "sample", rnd).choice(len(eligible), size=k, replace=False)
        return [eligible[i] for i in sorted(chosen)]

    @property
    def _by_node(self) -> dict[int, SiteInfo]:
        return {s.node_id: s for s in self.sites}

    def _with_state(self, messages: Iterable[Message]) -> list[Message]:
        """``messages``, each with its site's state (accountant, site-done flag) added."""
        messages = list(messages)
        for msg in messages:
            state = self.site_state.get(self._by_node[msg.metadata.dst_node_id].name)
            if state:
                msg.content[SITE_STATE] = ConfigRecord(state)
        return messages

    def _sorted(self, replies: Iterable[Message]) -> list[Message]:
        order = {s.node_id: s.index for s in self.sites}
        return sorted(replies, key=lambda m: order.get(m.metadata.src_node_id, 1 << 30))

    def _send(self, messages: Iterable[Message]) -> list[Message]:
        return self._sorted(self.grid.send_and_receive(self._with_state(messages), timeout=self.cfg.federation.timeout))

    def _send_train(self, rnd: int, sampled: list[SiteInfo]) -> tuple[list[Message], Message | None]:
        """The round's training replies, and with secure aggregation the stand-in reply that carries
        the unmasked mean update (None when the protocol abandoned the round)."""
        messages = self._configure(self.strategy.configure_train, rnd, sampled)
        fed = self.cfg.federation
        if not fed.secure_aggregation:
            self._sent = {m.metadata.dst_node_id: m.content.array_records[ARRAYS] for m in messages}
            if self.pending_evaluation is not None:  # the last round's evaluation rides on these messages
                return self._fused_send(sampled, messages), None
            return self._send(messages), None
        # distributed DP weighs every site 1; otherwise by its training examples
        client_dp = self.cfg.privacy.mode == "client" and self.cfg.privacy.active
        max_weight = 1.0 if client_dp else max(s.num_train for s in sampled)
        from fedsilo.federation.secure_workflow import secure_round  # Flower's legacy server API: only when used

        result = secure_round(self.grid, rnd, self._with_state(messages), fed.secagg, max_weight=max_weight,
                              timeout=fed.timeout)
        self.masked = result.masked
        replies = self._sorted(result.replies)
        if result.mean_update is None:
            return replies, None
        total = sum(int(r.content.metric_records[METRICS][NUM_EXAMPLES]) for r in replies)
        return replies, apply_mean_update(self.arrays, result.mean_update, total, len(replies))

    def _configure(self, fn: Callable[..., Iterable[Message]], rnd: int, sites: list[SiteInfo],
                   arrays: ArrayRecord | None = None) -> list[Message]:
        # Flower's strategies shuffle the nodes they are given with the global `random`; seed it
        # so message order (not results: replies are sorted) is reproducible too.
        random.seed(derive_seed(self.cfg.experiment.seed, "configure", rnd))
        msgs = fn(rnd, arrays or self.arrays, self._config(), SubsetGrid(self.grid, [s.node_id for s in sites]))
        # Strategies share one RecordDict among messages; give each its own before adding site state.
        return [Message(RecordDict(dict(m.content.items())), dst_node_id=m.metadata.dst_node_id,
                        message_type=m.metadata.message_type) for m in msgs]

    def train_round(self, rnd: int) -> list[Row]:
        start = time.perf_counter()
        sampled = self._sample(rnd)
        progress.current().round_started(rnd, [s.name for s in sampled])
        replies, secure_sum = self._send_train(rnd, sampled)
        secure = self.cfg.federation.secure_aggregation
        rows, valid = [], []
        by_node = self._by_node
        answered = set()
        for reply in replies:
            site = by_node.get(reply.metadata.src_node_id)
            if site is None:
                logger.warning("Round %d: reply from unknown node %s ignored", rnd, reply.metadata.src_node_id)
                continue
            if reply.has_error() and reply.error.code in UNREACHABLE:
                continue  # the node went away (Flower's SuperLink answers for it): a dropout, below
            answered.add(site.node_id)
            # (under secure aggregation a reply holds no arrays: only the masked sum can be checked)
            reason = check_train_reply(reply, self.template, site.num_train) if not secure else (
                f"site reported an error: {reply.error.reason}" if reply.has_error() else None)
            if reason is not None:
                logger.warning("Round %d: update from %s rejected: %s", rnd, site.name, reason)
                rows.append(Row(site.name, {"rejected": 1, "reason": reason}))
                continue
            valid.append(reply)
            rows.append(Row(site.name, dict(reply.content.metric_records[METRICS])))
            state = reply.content.config_records.get(SITE_STATE)
            if state is not None:
                self.site_state[site.name] = dict(state)
        bounded = self._bound_norms(rnd, valid, rows) if self.bound_norms and not secure else None
        if bounded:
            valid = [r for r in valid if all(r is not b for b in bounded)]
        for site in sampled:
            if site.node_id not in answered:
                logger.warning("Round %d: %s dropped out (no reply within %.0fs, or its node left)", rnd,
                               site.name, self.cfg.federation.timeout)
                rows.append(Row(site.name, {"dropped": 1}))
        need = self.cfg.federation.min_sites
        if len(valid) < need:
            why = "; ".join(f"{r.scope}: {r.values['reason']}" for r in rows if "reason" in r.values)
            raise FederationError(f"round {rnd}: only {len(valid)} valid update(s), federation.min_sites = {need}; "
                                  f"stopping" + (f" (rejected: {why})" if why else ""))
        if secure:  # one update cannot be taken out of a masked sum: an inflated weight stops the run
            over = [f"{by_node[r.metadata.src_node_id].name}: {why}" for r in valid if (why := check_num_examples(
                r.content.metric_records[METRICS][NUM_EXAMPLES], by_node[r.metadata.src_node_id].num_train))]
            if over:
                raise FederationError(f"round {rnd}: secure aggregation summed an update whose weight is beyond its "
                                      f"site's count at setup; stopping ({'; '.join(over)})")
        if secure and secure_sum is None:
            raise FederationError(f"round {rnd}: secure aggregation abandoned the round (too few sites kept enough "
                                  f"active neighbours to unmask the sum; federation.secagg.reconstruction_threshold)")
        arrays, agg = self.strategy.aggregate_train(rnd, [secure_sum] if secure else valid)
        if arrays is None:
            raise FederationError(f"round {rnd}: the strategy produced no aggregate")
        self.arrays = cast_like(arrays, {k: np.empty(0, dtype=d) for k, (_, d) in self.template.items()})
        self.ema.update(arrays_to_state(self.arrays))
        # strategies report round-level privacy numbers (client-level epsilon) as privacy_* metrics
        strategy_metrics = {k: v for k, v in (agg or {}).items() if k.startswith("privacy_")}
        rows.append(Row("global", {"sites_sampled": len(sampled), "sites_aggregated": len(valid),
                                   "sites_rejected": sum(1 for r in rows if r.values.get("rejected")),
                                   "sites_dropped": sum(1 for r in rows if r.values.get("dropped")),
                                   **({} if bounded is None else {"sites_norm_rejected": len(bounded)}),
                                   "round_seconds": time.perf_counter() - start,
                                   "message_bytes": self.arrays.count_bytes(),
                                   **strategy_metrics}))
        return self._late_rows() + rows  # (fused evaluation: the round before's validation rows first)

    def _bound_norms(self, rnd: int, valid: list[Message], rows: list[Row]) -> list[Message]:
        """The replies of ``valid`` that ``federation.validation``'s norm bounds reject; each site's
        row gets its ``update_norm``, and a rejected site's row says why (its state is kept: it trained)."""
        bounds = self.cfg.federation.validation
        row_of = {r.scope: r for r in rows}
        norms = [update_norm(m.content.array_records[ARRAYS], self._sent.get(m.metadata.src_node_id, self.arrays))
                 for m in valid]
        rejected = []
        for reply, norm, reason in zip(valid, norms, norm_rejections(norms, bounds.max_update_norm,
                                                                     bounds.max_update_norm_factor)):
            row = row_of[self._by_node[reply.metadata.src_node_id].name]
            if reason is None:
                row.values["update_norm"] = norm
                continue
            logger.warning("Round %d: update from %s rejected: %s", rnd, row.scope, reason)
            row.values = {"rejected": 1, "reason": reason, "update_norm": norm}
            rejected.append(reply)
        return rejected

    # -- evaluation ----------------------------------------------------------------------------

    def _test_data(self) -> Any | None:
        if self._test is None:
            try:
                self._test = self.task.test_data()
            except Exception as exc:  # noqa: BLE001 - coordinator without data
                logger.warning("No global test split available on the server: %s", exc)
                self._test = False
        return self._test or None

    def _model(self, arrays: ArrayRecord) -> torch.nn.Module:
        model = self.task.build_model()
        model.load_state_dict(arrays_to_state(arrays))
        return model.to(self.device)

    def evaluate(self, rnd: int, *, sites: bool = True) -> list[Row]:
        rows: list[Row] = []
        federated = self.cfg.experiment.mode != "local"
        model = self.ema.apply_to(self._model(self.arrays)) if federated else None  # the released model
        # a task with federated test metrics asks every site for statistics (round 0 included)
        request = self.task.site_statistics_request(model, self.device) if model is not None else None
        released = state_to_arrays(self.ema.released(arrays_to_state(self.arrays))) if self.ema.active else None
        sites = sites and not self._defer(rnd, request)  # fused: scored with the next round's training messages
        exchange = (evaluate_sites(self, rnd, request, released)
                    if self.sites and (sites or request is not None) else None)
        if sites and exchange is not None:
            rows += exchange.rows
        test = self._test_data()
        if test is not None:
            per_group = isinstance(self.strategy, LocalStateStrategy) and not self.strategy.has_owners
            if per_group and (rnd > 0 or self.cfg.experiment.mode == "local"):
                for group in dict.fromkeys(self.group_of(s) for s in self.sites):
                    arrays = self.strategy.personalised(self.arrays, group)
                    m = self.task.evaluate(self._model(arrays), test, self.device)
                    rows.append(Row(group, {f"test_{k}": v for k, v in m.items()}))
        if model is not None and (test is not None or request is not None):
            m = self.task.evaluate(model, test, self.device)
            if request is not None and exchange is not None:
                m.update(self.task.combine_site_statistics(request, exchange.stats, exchange.names))
            rows.append(Row("global", {f"test_{k}": v for k, v in m.items()}))
            self.task.round_artifacts(model, rnd, self.out_dir, self.device)
        return rows

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"arrays": dict(arrays_to_numpy(self.arrays)), "strategy": strategy_state(self.strategy),
                "site_state": dict(self.site_state), "ema": self.ema.state_dict(),
                "pending_evaluation": self.pending_evaluation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arrays = state_to_arrays(state["arrays"])
        self.ema.load_state_dict(state.get("ema"))
        load_strategy_state(self.strategy, state["strategy"])
        self.site_state = dict(state.get("site_state", {}))
        self.pending_evaluation = state.get("pending_evaluation")  # (fused evaluation; older checkpoints: None)

    def final_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.ema.final(arrays_to_state(self.arrays)), "mode": self.cfg.experiment.mode}
        if isinstance(self.strategy, LocalStateStrategy):
            out["site_models"] = {s.name: arrays_to_state(self.strategy.personalised(self.arrays, self.group_of(s)))
                                  for s in self.sites}
        out["site_state"] = dict(self.site_state)
        return out


def server_app(main: Callable[[Grid, Context], None]) -> ServerApp:
    """A Flower ServerApp whose main is ``main(grid, context)`` (see :mod:`fedsilo.run.app`)."""
    app = ServerApp()
    app.main()(main)
    return app
