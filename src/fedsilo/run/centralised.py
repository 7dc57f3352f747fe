"""The centralised reference: one model trained on all sites' training data pooled.

It is the upper bound federated learning is measured against ("% of centralised"). A round
here processes as many samples as a federated round with every site: ``local_epochs`` passes
over the pooled data, or ``local_steps x num_sites`` steps. It is evaluated exactly like the
federated global model: on every site's validation split and on the global test split. (The
``local`` reference — each site alone — runs through the federation engine with nothing
shared; see :class:`fedsilo.federation.strategies.LocalStateStrategy`.)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from fedsilo.config import ExperimentConfig
from fedsilo.progress import current
from fedsilo.rounds import SITE_DONE, Row, SiteTable, StopTraining
from fedsilo.run.folder import RunDir
from fedsilo.run.load import initial_weights
from fedsilo.seeding import resolve_device
from fedsilo.tasks import TrainContext, make_task
from fedsilo.training import train_site

logger = logging.getLogger(__name__)


def weighted_mean_rows(rows: list[tuple[dict[str, Any], int]]) -> dict[str, float]:
    """Example-weighted mean of metric dicts (what Flower's FedAvg does for evaluation metrics)."""
    rows = [(m, n) for m, n in rows if n > 0]
    total = sum(n for _, n in rows)
    if not total:
        return {}
    keys = set.intersection(*(set(m) for m, _ in rows))
    out = {}
    for k in sorted(keys):
        vals = [(m[k], n) for m, n in rows if isinstance(m[k], (int, float)) and np.isfinite(m[k])]
        if vals:
            out[k] = float(sum(v * n for v, n in vals) / sum(n for _, n in vals))
    return out


def pooled_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Config whose local-step budget covers all sites at once (same samples per round)."""
    steps = cfg.train.local_steps * cfg.federation.num_sites
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, local_steps=steps))


class CentralisedRounds:
    """Round executor of the centralised reference."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.cfg = run.cfg
        self.task = make_task(self.cfg)
        self.train_task = make_task(pooled_config(self.cfg))
        self.device = resolve_device(self.cfg.experiment.device)
        self.label = f"{self.cfg.experiment.name} (centralised)"
        self.model = self.task.build_model()
        self.model.load_state_dict(initial_weights(self.task))
        self.data = self.task.federated_data()
        self.pooled = self.task.pooled_train()
        #: state the pooled "site" keeps between rounds (e.g. a DP accountant), checkpointed
        self.site_state: dict[str, Any] = {}
        #: what the pooled site keeps for itself between rounds (train.keep_optimizer_state), checkpointed
        self.carry: dict[str, Any] = {}
        #: what is evaluated and released: the trained weights, or the task's average of them over
        #: rounds (a GAN generator's EMA), kept exactly as the federated coordinator keeps it
        self.ema = self.task.weight_average()

    def setup(self) -> SiteTable:
        table = self.data.class_table
        logger.info("Centralised reference: %d sites' training data pooled", len(self.data.sites))
        return SiteTable([{"name": s.name, "index": i, "num_train": len(s.train), "num_val": len(s.val),
                           "class_counts": [int(c) for c in table[i]] if len(table) else [],
                           **{k: v for k, v in s.info.items() if isinstance(v, (str, int, float, bool))}}
                          for i, s in enumerate(self.data.sites)], list(self.data.class_names))

    def train_round(self, rnd: int) -> list[Row]:
        done = self.site_state.get(SITE_DONE)
        if done:
            raise StopTraining(f"the pooled site may not train again: {done}")
        current().round_started(rnd, ["pooled"])
        ctx = TrainContext(round=rnd, site_index=0, site_name="pooled", device=self.device,
                           site_state=self.site_state, carry=self.carry)
        result = train_site(self.train_task, self.model, self.pooled, ctx)
        self.ema.update(self.model.state_dict())
        return [Row("global", {"num-examples": result.num_examples, **result.metrics})]

    def released(self) -> torch.nn.Module:
        """The model evaluated and released (a copy holding the average when one is kept)."""
        return self.ema.apply_to(copy.deepcopy(self.model)) if self.ema.average is not None else self.model

    def evaluate(self, rnd: int, *, sites: bool = True) -> list[Row]:
        rows: list[Row] = []
        model = self.released()
        if sites:
            per_site = []
            for site in self.data.sites:
                m = self.task.evaluate_site(model, site.val, self.device)
                n = int(m.pop("n", len(site.val)))
                rows.append(Row(site.name, {f"val_{k}": v for k, v in m.items()}))
                per_site.append(({f"val_{k}": v for k, v in m.items()}, n))
            if per_site:
                rows.append(Row("global", weighted_mean_rows(per_site)))
        test = self.data.test
        # federated test metrics (a GAN's gan.evaluation = "federated"): each site's statistics, as
        # its ClientApp would compute them, combined as the coordinator does
        request = self.task.site_statistics_request(model, self.device)
        if test is not None or request is not None:
            m = self.task.evaluate(model, test, self.device)
            if request is not None:
                stats = [self.task.site_statistics(s, request, self.device) for s in self.data.sites]
                m.update(self.task.combine_site_statistics(request, stats, [s.name for s in self.data.sites]))
            rows.append(Row("global", {f"test_{k}": v for k, v in m.items()}))
            self.task.round_artifacts(model, rnd, self.run.path, self.device)
        return rows

    def evaluate_pending(self) -> list[Row]:
        return []  # (nothing is deferred: the pooled site is evaluated in place)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "site_state": dict(self.site_state), "carry": dict(self.carry), "ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.site_state = dict(state.get("site_state", {}))
        self.carry = dict(state.get("carry", {}))
        self.ema.load_state_dict(state.get("ema"))

    def final_state(self) -> dict[str, Any]:
        return {**self.ema.final(self.state_dict()["model"]), "mode": "centralised",
                "site_state": dict(self.site_state)}
