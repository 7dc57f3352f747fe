"""The fedsilo ServerApp: federated rounds over any Flower Grid (in-process, simulation, deployment).

Each round: sample sites with a seeded generator, let the strategy configure the training
messages, send them through the Grid, validate every reply (wrong keys/shapes/dtypes,
non-finite values, errors are rejected and logged by site), aggregate the valid ones *in site
order* (so the floating-point sums do not depend on arrival order), evaluate on the sites'
validation splits and the global test split, log per-site and global metrics, checkpoint.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedsilo import progress
from fedsilo.config import dumps
from fedsilo.data.partition import format_partition_table, save_partition_table
from fedsilo.federation.messages import (
    CONFIG,
    CONFIG_TOML,
    METRICS,
    NUM_EXAMPLES,
    QUERY_SITE_INFO,
    SITE,
    SITE_DONE,
    SITE_STATE,
    arrays_to_numpy,
    arrays_to_state,
    cast_like,
    state_to_arrays,
)
from fedsilo.federation.strategies import (
    LocalStateStrategy,
    build_strategy,
    load_strategy_state,
    sites_per_round,
    strategy_state,
)
from fedsilo.federation.validation import check_train_reply, describe_template
from fedsilo.loop import FederationError, Row, StopTraining, run_rounds
from fedsilo.models.norms import norm_state_keys
from fedsilo.runs import RunDir
from fedsilo.seeding import derive_seed, np_rng, resolve_device
from fedsilo.tasks import Task, make_task

logger = logging.getLogger(__name__)

# Error replies a SuperLink creates for a node that left (deployment): counted as dropouts.
_UNREACHABLE = (ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


@dataclass
class SiteInfo:
    """A connected site as the server knows it (from its site_info reply)."""

    node_id: int
    name: str
    index: int
    num_train: int
    num_val: int
    class_counts: list[int]
    info: dict[str, Any]


class SubsetGrid(Grid):
    """A view of a Grid that exposes only some node ids (the sites sampled this round)."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = list(node_ids)

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


def make_strategy(task: Task, norm_keys: set[str]) -> Strategy:
    """The configured strategy, wrapped to keep state local where the mode, strategy or task asks,
    or for client-level differential privacy (``privacy.mode = "client"``)."""
    cfg = task.cfg
    fed = cfg.federation
    base = build_strategy(fed.strategy, fed.num_sites)
    client_dp = cfg.privacy.mode == "client" and cfg.privacy.active
    if cfg.experiment.mode == "local":
        if client_dp:
            logger.warning("privacy.mode = 'client' is ignored in local mode (sites share nothing)")
        return LocalStateStrategy(base, lambda key: True)
    if cfg.federation.strategy.name == "fedbn" or cfg.federation.strategy.local_norm:
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
        from fedsilo.privacy.client_dp import wrap_client_dp

        return wrap_client_dp(base, cfg, sites_per_round(fed.num_sites, fed.fraction_train, fed.min_sites))
    return base


class FederatedRounds:
    """Round executor of a federated (or local-reference) run over a Flower Grid."""

    def __init__(self, grid: Grid, run: RunDir) -> None:
        self.grid = grid
        self.run = run
        self.cfg = run.cfg
        self.task = make_task(self.cfg)
        self.device = resolve_device(self.cfg.experiment.device)
        self.label = f"{self.cfg.experiment.name} ({self.cfg.experiment.mode})"
        model = self.task.build_model()
        initial = self.task.initial_state()
        self.arrays: ArrayRecord = state_to_arrays(initial)
        self.template = describe_template(arrays_to_numpy(self.arrays))
        self.strategy = make_strategy(self.task, norm_state_keys(model))
        self.config_text = dumps(self.cfg)
        self.sites: list[SiteInfo] = []
        self.site_state: dict[str, dict[str, Any]] = {}
        self._test = None

    # -- setup ---------------------------------------------------------------------------------

    def _config(self) -> ConfigRecord:
        return ConfigRecord({CONFIG_TOML: self.config_text})

    def _wait_for_nodes(self) -> list[int]:
        want, timeout = self.cfg.federation.num_sites, self.cfg.federation.timeout
        deadline = time.monotonic() + timeout
        while True:
            ids = sorted(self.grid.get_node_ids())
            if len(ids) >= want:
                return ids
            if time.monotonic() > deadline:
                raise FederationError(f"only {len(ids)} of {want} sites connected within {timeout:.0f}s")
            logger.info("Waiting for sites: %d of %d connected", len(ids), want)
            time.sleep(1.0)

    def setup(self) -> None:
        """Ask every node who it is; order sites; check a resumed run has its sites back; write the partition.

        Raises
        ------
        FederationError
            Fewer than ``federation.num_sites`` sites described themselves within
            ``federation.timeout``, two sites share a name, or a resumed run's sites differ from
            those it started with (``sites.json``).
        """
        sites = self._describe_sites()
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise FederationError(f"site names must be unique, got {sorted(names)}")
        self.sites = sorted(sites, key=lambda s: (s.index, s.name))
        before = [str(s.get("name")) for s in self.run.read_sites()]
        now = [s.name for s in self.sites]
        if before and before != now:
            raise FederationError(f"{self.run.path} was started with sites {before} but {now} connected; a resumed "
                                  f"run needs the same sites (same names and site indices) to continue")
        if isinstance(self.strategy, LocalStateStrategy):
            self.strategy.set_groups({s.node_id: self.group_of(s) for s in self.sites})
        self._write_partition()

    def _describe_sites(self) -> list[SiteInfo]:
        """Every connected node's :class:`SiteInfo`, asking again whom the SuperLink reports unreachable.

        After a coordinator restart the SuperLink lists nodes from its database before they have
        reconnected; a query to such a node waits for it, or comes back as an error when its
        heartbeat lapses, in which case the node is asked again once it is back.
        """
        fed = self.cfg.federation
        deadline = time.monotonic() + fed.timeout
        ids = self._wait_for_nodes()
        described: dict[int, SiteInfo] = {}
        unanswered: list[int] = []
        for _ in range(10_000):
            unanswered = [nid for nid in ids if nid not in described]
            msgs = [Message(RecordDict({CONFIG: self._config()}), dst_node_id=nid, message_type=QUERY_SITE_INFO)
                    for nid in unanswered]
            left = max(1.0, deadline - time.monotonic())
            for reply in self.grid.send_and_receive(msgs, timeout=left):
                nid = reply.metadata.src_node_id
                if reply.has_error():
                    if reply.error.code in _UNREACHABLE:
                        continue
                    raise FederationError(f"node {nid} failed to describe itself: {reply.error.reason}")
                m, s = reply.content.metric_records[METRICS], reply.content.config_records[SITE]
                described[nid] = SiteInfo(nid, str(s["site-name"]), int(m["site-index"]), int(m["num-train"]),
                                          int(m["num-val"]), [int(c) for c in m["class-counts"]], dict(s))
            if len(described) >= fed.num_sites or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
            ids = sorted(set(self.grid.get_node_ids()) | set(described))
        if len(described) < fed.num_sites:
            missing = [nid for nid in unanswered if nid not in described]
            raise FederationError(f"only {len(described)} of {fed.num_sites} sites described themselves within "
                                  f"{fed.timeout:.0f}s (federation.timeout); no answer from node(s) {missing}")
        return list(described.values())

    def group_of(self, site: SiteInfo) -> str:
        """The group whose local state a site shares (itself, unless the task groups by e.g. modality)."""
        rule = self.task.local_state()
        if rule is None or self.cfg.experiment.mode == "local" or self.cfg.federation.strategy.name == "fedbn":
            return site.name
        key = rule[1]
        if key not in site.info:
            raise FederationError(f"site {site.name} did not report {key!r}, which the task groups sites by")
        return str(site.info[key])

    def _write_partition(self) -> None:
        self.run.write_sites([{"name": s.name, "index": s.index, "num_train": s.num_train, "num_val": s.num_val,
                               "class_counts": s.class_counts,
                               **{k: v for k, v in s.info.items() if k != "site-name"}} for s in self.sites])
        counts = [s.class_counts for s in self.sites]
        if not counts or not all(counts):
            return
        table = np.array(counts)
        data = self.task.federated_data() if self._has_local_data() else None
        class_names = list(data.class_names) if data is not None else [str(i) for i in range(table.shape[1])]
        names = [s.name for s in self.sites]
        logger.info("Partition (training samples per class and site):\n%s",
                    format_partition_table(table, names, class_names))
        save_partition_table(table, names, class_names, self.run.artifact("partition.csv"),
                             self.run.artifact("partition.png"))

    def _has_local_data(self) -> bool:
        try:
            self.task.federated_data()
            return True
        except Exception:  # noqa: BLE001 - a coordinator without data (deployment)
            return False

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

    def _send(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for msg in messages:
            state = self.site_state.get(self._by_node[msg.metadata.dst_node_id].name)
            if state:
                msg.content[SITE_STATE] = ConfigRecord(state)
        replies = list(self.grid.send_and_receive(messages, timeout=self.cfg.federation.timeout))
        order = {s.node_id: s.index for s in self.sites}
        return sorted(replies, key=lambda m: order.get(m.metadata.src_node_id, 1 << 30))

    @property
    def _by_node(self) -> dict[int, SiteInfo]:
        return {s.node_id: s for s in self.sites}

    def _configure(self, fn: Callable[..., Iterable[Message]], rnd: int, sites: list[SiteInfo]) -> list[Message]:
        # Flower's strategies shuffle the nodes they are given with the global `random`; seed it
        # so message order (not results: replies are sorted) is reproducible too.
        random.seed(derive_seed(self.cfg.experiment.seed, "configure", rnd))
        msgs = fn(rnd, self.arrays, self._config(), SubsetGrid(self.grid, [s.node_id for s in sites]))
        # Strategies share one RecordDict among messages; give each its own before adding site state.
        return [Message(RecordDict(dict(m.content.items())), dst_node_id=m.metadata.dst_node_id,
                        message_type=m.metadata.message_type) for m in msgs]

    def train_round(self, rnd: int) -> list[Row]:
        start = time.perf_counter()
        sampled = self._sample(rnd)
        progress.current().round_started(rnd, [s.name for s in sampled])
        replies = self._send(self._configure(self.strategy.configure_train, rnd, sampled))
        rows, valid = [], []
        by_node = self._by_node
        answered = set()
        for reply in replies:
            site = by_node.get(reply.metadata.src_node_id)
            if site is None:
                logger.warning("Round %d: reply from unknown node %s ignored", rnd, reply.metadata.src_node_id)
                continue
            if reply.has_error() and reply.error.code in _UNREACHABLE:
                continue  # the node went away (Flower's SuperLink answers for it): a dropout, below
            answered.add(site.node_id)
            reason = check_train_reply(reply, self.template)
            if reason is not None:
                logger.warning("Round %d: update from %s rejected: %s", rnd, site.name, reason)
                rows.append(Row(site.name, {"rejected": 1, "reason": reason}))
                continue
            valid.append(reply)
            metrics = dict(reply.content.metric_records[METRICS])
            rows.append(Row(site.name, metrics))
            state = reply.content.config_records.get(SITE_STATE)
            if state is not None:
                self.site_state[site.name] = dict(state)
        for site in sampled:
            if site.node_id not in answered:
                logger.warning("Round %d: %s dropped out (no reply within %.0fs, or its node left)", rnd,
                               site.name, self.cfg.federation.timeout)
                rows.append(Row(site.name, {"dropped": 1}))
        need = self.cfg.federation.min_sites
        if len(valid) < need:
            raise FederationError(
                f"round {rnd}: only {len(valid)} valid update(s), federation.min_sites = {need}; stopping. "
                f"The last good checkpoint (round {rnd - 1}) is intact in {self.run.checkpoint_path}"
            )
        arrays, agg = self.strategy.aggregate_train(rnd, valid)
        if arrays is None:
            raise FederationError(f"round {rnd}: the strategy produced no aggregate")
        self.arrays = cast_like(arrays, {k: np.empty(0, dtype=d) for k, (_, d) in self.template.items()})
        # strategies report round-level privacy numbers (client-level epsilon) as privacy_* metrics
        strategy_metrics = {k: v for k, v in (agg or {}).items() if k.startswith("privacy_")}
        rows.append(Row("global", {"sites_sampled": len(sampled), "sites_aggregated": len(valid),
                                   "sites_rejected": sum(1 for r in rows if r.values.get("rejected")),
                                   "sites_dropped": sum(1 for r in rows if r.values.get("dropped")),
                                   "round_seconds": time.perf_counter() - start,
                                   "message_bytes": self.arrays.count_bytes(),
                                   **strategy_metrics}))
        return rows

    # -- evaluation ----------------------------------------------------------------------------

    def _test_data(self) -> Any | None:
        if self._test is None:
            try:
                self._test = self.task.test_data()
            except Exception as exc:  # noqa: BLE001 - coordinator without data
                logger.warning("No global test split available on the server: %s", exc)
                self._test = False
        return self._test or None

    def _model(self, arrays: ArrayRecord):
        model = self.task.build_model()
        model.load_state_dict(arrays_to_state(arrays))
        return model.to(self.device)

    def evaluate(self, rnd: int, *, sites: bool = True) -> list[Row]:
        rows: list[Row] = []
        if sites and self.sites:
            replies = self._send(self._configure(self.strategy.configure_evaluate, rnd, self.sites))
            good = []
            for reply in replies:
                site = self._by_node.get(reply.metadata.src_node_id)
                if site is None:
                    continue
                if reply.has_error():
                    logger.warning("Round %d: evaluation failed at %s: %s", rnd, site.name, reply.error.reason)
                    continue
                metrics = dict(reply.content.metric_records[METRICS])
                if metrics.get(NUM_EXAMPLES, 0) > 0:
                    good.append(reply)
                rows.append(Row(site.name, {k: v for k, v in metrics.items() if k != NUM_EXAMPLES}))
            if good and self.cfg.experiment.mode == "federated":
                agg = self.strategy.aggregate_evaluate(rnd, good)
                if agg is not None:
                    rows.append(Row("global", {k: float(v) for k, v in agg.items()}))
        test = self._test_data()
        if test is not None:
            per_group = isinstance(self.strategy, LocalStateStrategy) and not self.strategy.has_owners
            if per_group and (rnd > 0 or self.cfg.experiment.mode == "local"):
                for group in dict.fromkeys(self.group_of(s) for s in self.sites):
                    arrays = self.strategy.personalised(self.arrays, group)
                    m = self.task.evaluate(self._model(arrays), test, self.device)
                    rows.append(Row(group, {f"test_{k}": v for k, v in m.items()}))
            if self.cfg.experiment.mode != "local":
                model = self._model(self.arrays)
                m = self.task.evaluate(model, test, self.device)
                rows.append(Row("global", {f"test_{k}": v for k, v in m.items()}))
                self.task.round_artifacts(model, rnd, self.run.path, self.device)
        return rows

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"arrays": dict(arrays_to_numpy(self.arrays)), "strategy": strategy_state(self.strategy),
                "site_state": dict(self.site_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arrays = state_to_arrays(state["arrays"])
        load_strategy_state(self.strategy, state["strategy"])
        self.site_state = dict(state.get("site_state", {}))

    def final_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": arrays_to_state(self.arrays), "mode": self.cfg.experiment.mode}
        if isinstance(self.strategy, LocalStateStrategy):
            out["site_models"] = {s.name: arrays_to_state(self.strategy.personalised(self.arrays, self.group_of(s)))
                                  for s in self.sites}
        out["site_state"] = dict(self.site_state)
        return out


def make_server_app(
    run_dir: str | Path | None = None,
    on_round_end: Callable[[int], None] | None = None,
) -> ServerApp:
    """A ServerApp bound to a run folder (the CLI's engines) or reading it from the run config.

    Under ``flwr run .`` the run config keys ``config`` (a TOML file) and ``out`` (the run
    folder; empty = ``runs/<name>-<time>``) say what to run and where.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run = _run_from_context(context) if run_dir is None else RunDir.open(run_dir)
        executor = FederatedRounds(grid, run)
        run_rounds(executor, run, summary_key=f"test_{executor.task.primary_metric}", on_round_end=on_round_end)

    return app


def _run_from_context(context: Context) -> RunDir:
    from fedsilo.config import load_config

    cfg_path = str(context.run_config.get("config", ""))
    out = str(context.run_config.get("out", ""))
    if not cfg_path:
        raise ValueError("run config key 'config' must name an experiment TOML file")
    cfg = load_config(cfg_path)
    if not out:
        out = str(Path("runs") / f"{cfg.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (Path(out) / "config.toml").exists():
        return RunDir.open(out)
    return RunDir.create(out, cfg, engine="deployment")


app = make_server_app()
