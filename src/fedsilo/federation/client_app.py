"""The fedsilo ClientApp: what runs at each site (an ordinary Flower ClientApp).

A site learns which data it holds from its node config:

- in-process and simulation engines: ``partition-id`` (and ``num-partitions``), the site's
  position in the partition of the configured data;
- deployment: ``site-name`` and ``data-path``, the site's own data on its own host.

Everything else — task, model, training settings — comes with each message as the resolved
experiment config, so a SuperNode needs only the installed package and its data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsilo.config import ExperimentConfig, config_from_toml_text
from fedsilo.data.errors import DataError
from fedsilo.data.federated import SiteData
from fedsilo.federation.client_dp import client_clipping_mod
from fedsilo.federation.distributed_dp import client_noise_mod
from fedsilo.federation.ledger import PrivacyLedger
from fedsilo.federation.messages import (
    ARRAYS,
    CONFIG,
    CONFIG_TOML,
    EVAL_REQUEST,
    EVAL_STATS,
    EVALUATE_FIRST,
    METRICS,
    NUM_EXAMPLES,
    SITE,
    SITE_STATE,
    VALIDATION,
    arrays_to_numpy,
    arrays_to_state,
    state_to_arrays,
)
from fedsilo.federation.poisoning import NODE_CONFIG_KEY, poison
from fedsilo.federation.ray_cluster import ray_assigned_gpus
from fedsilo.federation.secure import secure_mods
from fedsilo.federation.site_memory import SiteMemory, begin_round, end_round, needs_memory
from fedsilo.seeding import resolve_device
from fedsilo.tasks import Task, TrainContext, make_task
from fedsilo.training import train_site

logger = logging.getLogger(__name__)

# Client-level DP with client-side clipping: the mod clips the update to the norm the server's DP
# wrapper sends (inactive otherwise).
app = ClientApp(mods=[secure_mods, client_noise_mod, client_clipping_mod])


@dataclass
class SiteJob:
    """A site's view of the experiment: config, task, its data and where to compute."""

    cfg: ExperimentConfig
    task: Task
    index: int
    site: SiteData[Any]
    device: torch.device


_JOBS: dict[tuple[str, str], SiteJob] = {}
# One model object per experiment config and process, reused by every site of the process: each
# message loads its weights into it (all parameters and buffers), so nothing carries over between
# sites or rounds, and only one model exists however many sites the in-process engine runs.
_MODELS: dict[str, torch.nn.Module] = {}


def site_job(msg: Message, context: Context) -> SiteJob:
    """Resolve (and cache per process) the site's job from a message and the node config."""
    text = str(msg.content.config_records[CONFIG][CONFIG_TOML])
    node = context.node_config
    key = (_digest(text), repr(sorted(node.items())))
    job = _JOBS.get(key)
    if job is None:
        cfg = config_from_toml_text(text)
        if "data-path" in node and cfg.privacy.active and cfg.privacy.reproducible_noise:
            # a real site (its own data path) never uses noise the coordinator could regenerate
            raise ValueError("this site refuses privacy.reproducible_noise = true: the coordinator knows "
                             "experiment.seed and could regenerate and remove the site's DP noise")
        ledger = PrivacyLedger.from_node_config(node)
        if ledger is not None and ledger.budget(cfg.privacy.max_epsilon) != cfg.privacy.max_epsilon:
            # the site's own cap holds whatever the coordinator's config says
            cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(
                cfg.privacy, max_epsilon=ledger.budget(cfg.privacy.max_epsilon)))
        if cfg.experiment.threads:
            torch.set_num_threads(cfg.experiment.threads)
        task = make_task(cfg)
        if "data-path" in node:
            index, site = task_site_from_path(task, node)
        else:
            index = int(node["partition-id"])
            site = task.site_data(index)
        # in a Ray actor, "auto" is the GPU Ray assigned to this site (or the CPU when none was)
        device = resolve_device(str(node.get("device", cfg.experiment.device)), ray_assigned_gpus())
        job = SiteJob(cfg, task, index, site, device)
        if len(_JOBS) >= 4096:
            _JOBS.clear()
        _JOBS[key] = job
    return job


def task_site_from_path(task: Task, node: dict[str, Any]) -> tuple[int, SiteData[Any]]:
    """Deployment: the site's own data from ``data-path`` (see the deployment guide).

    Raises
    ------
    DataError
        The data cannot be read; the message starts with the site's name (the coordinator shows it).
    """
    name = str(node.get("site-name", "site"))
    try:
        return int(node.get("site-index", 0)), task.site_from_path(str(node["data-path"]), name)
    except DataError as exc:
        if name in str(exc):
            raise
        raise DataError(f"site {name!r}: {exc}") from exc


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _model_from(job: SiteJob, msg: Message) -> torch.nn.Module:
    """The task's model holding the message's weights (every parameter and buffer is loaded)."""
    key = _digest(str(msg.content.config_records[CONFIG][CONFIG_TOML]))
    model = _MODELS.get(key)
    if model is None:
        if len(_MODELS) > 4:
            _MODELS.clear()
        model = _MODELS[key] = job.task.build_model().to(job.device)
    model.load_state_dict(arrays_to_state(msg.content.array_records[ARRAYS]), strict=True)
    return model


def _memory(job: SiteJob, msg: Message, context: Context) -> SiteMemory | None:
    """The site's memory of this run, when the run keeps anything at the sites between rounds."""
    if not needs_memory(job.cfg, job.task.site_kept_keys()):
        return None
    conf = msg.content.config_records[CONFIG]
    return SiteMemory.for_site(context, conf, str(conf[CONFIG_TOML]), job.cfg.experiment.name, job.site.name)


def _site_state(msg: Message) -> dict[str, Any]:
    record = msg.content.config_records.get(SITE_STATE)
    return dict(record) if record is not None else {}


@app.query("site_info")
def site_info(msg: Message, context: Context) -> Message:
    """Who this site is and how much data it holds (aggregate counts only, never samples)."""
    job = site_job(msg, context)
    counts = job.site.info.get("class_counts")
    metrics = MetricRecord({
        "site-index": job.index,
        "num-train": len(job.site.train),
        "num-val": len(job.site.val),
        "class-counts": [int(c) for c in counts] if counts is not None else [],
    })
    info = ConfigRecord({"site-name": job.site.name, **{k: v for k, v in job.site.info.items()
                                                        if isinstance(v, (str, int, float, bool))}})
    # (site info holds aggregate descriptors only: modality, annotated organs, counts)
    return Message(RecordDict({METRICS: metrics, SITE: info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training from the received global weights; with ``evaluate-first`` in
    the config (fused evaluation) the site first scores those weights on its validation split and
    returns the metrics in a ``validation`` record beside the update."""
    job = site_job(msg, context)
    model = _model_from(job, msg)
    conf = msg.content.config_records[CONFIG]
    state = _site_state(msg)
    rnd = int(conf.get("server-round", 0))
    attack = str(context.node_config.get(NODE_CONFIG_KEY, ""))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()} if attack else None
    memory = _memory(job, msg, context)
    carry = begin_round(memory, model, rnd) if memory is not None else None
    ctx = TrainContext(
        round=rnd,
        site_index=job.index,
        site_name=job.site.name,
        device=job.device,
        proximal_mu=float(conf.get("proximal-mu", 0.0)),
        config={k: v for k, v in conf.items() if k not in (CONFIG_TOML, EVALUATE_FIRST)},
        site_state=state,
        carry=carry,
    )
    ledger = PrivacyLedger.from_node_config(context.node_config)
    private = job.cfg.privacy.mode == "sample" and job.cfg.privacy.active
    if ledger is not None and private:
        ledger.reconcile(job.cfg.experiment.name, state, job.cfg.privacy.accountant)
    # fused evaluation: the received weights (with the site's kept arrays, as evaluate loads them), before training
    validation = _validation(job, model) if EVALUATE_FIRST in conf else None
    start = time.perf_counter()
    result = train_site(job.task, model, job.site.train, ctx)
    if ledger is not None and private:
        ledger.record(job.cfg.experiment.name, ctx.site_state)  # before the reply leaves the site
    seconds = time.perf_counter() - start
    state = model.state_dict()
    if memory is not None and carry is not None:  # kept at the site; kept arrays go back as they came
        state = end_round(memory, rnd, carry, state, job.task.site_kept_keys(), msg.content.array_records[ARRAYS])
    if initial is not None:
        # robustness studies only (benchmarks/poisoning.py): see federation/poisoning.py
        state = poison(attack, state, initial)
    content = RecordDict({
        ARRAYS: state_to_arrays(state),
        METRICS: MetricRecord({NUM_EXAMPLES: int(result.num_examples), **result.metrics, "train_seconds": seconds}),
    })
    if ctx.site_state:
        content[SITE_STATE] = ConfigRecord(ctx.site_state)
    if validation is not None:
        content[VALIDATION] = validation
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Metrics of the received model on the site's validation split (``val_`` prefixed) and, when
    the message asks for them, the task's statistics of the site's data (federated test metrics)."""
    job = site_job(msg, context)
    model = _model_from(job, msg)
    memory = _memory(job, msg, context) if job.task.site_kept_keys() else None
    if memory is not None:  # the site's own kept arrays (e.g. its discriminator), as of this round
        begin_round(memory, model, int(msg.content.config_records[CONFIG].get("server-round", 0)) + 1)
    content = RecordDict({METRICS: _validation(job, model)})
    request = msg.content.array_records.get(EVAL_REQUEST)
    if request is not None:
        content[EVAL_STATS] = state_to_arrays(job.task.site_statistics(job.site, arrays_to_numpy(request),
                                                                       job.device))
    return Message(content, reply_to=msg)


def _validation(job: SiteJob, model: torch.nn.Module) -> MetricRecord:
    """The site's validation metrics of ``model`` (``val_`` prefixed, ``num-examples`` the weight)."""
    metrics = job.task.evaluate_site(model, job.site.val, job.device)
    n = int(metrics.pop("n", len(job.site.val)))
    return MetricRecord({NUM_EXAMPLES: n, **{f"val_{k}": float(v) for k, v in metrics.items()}})
