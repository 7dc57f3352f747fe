"""The one site-training loop every task uses.

A round of local training at a site (:func:`train_site`) is ``train.local_steps`` optimiser steps
when set, else ``train.local_epochs`` passes over the site's training split. The loop owns
everything tasks share, so it is written once:

- **randomness**: one generator seeded by (experiment seed, round, site) draws the batch order
  and then each batch's random choices, and torch's global generator (dropout) is seeded from
  the same triple, so a round is the same on every engine and after a resume;
- **batches**: shuffled batches, or Poisson batches under sample-level DP (every step is taken:
  an empty batch is a noise-only step, which the accountant counts like any other);
- **optimisers**: one per phase of the task's step (:class:`~fedsilo.tasks.base.Phase`), fresh
  each round (FedAvg's local SGD), at the round's scheduled learning rate; with
  ``train.keep_optimizer_state`` their state (Adam moments, step counts) continues from the
  site's previous round (kept in :attr:`~fedsilo.tasks.base.TrainContext.carry`);
- **FedProx** (Li et al., MLSys 2020): ``mu / 2 ||w - w_global||^2`` in each phase's loss, or,
  under DP-SGD, its gradient added after the noise (post-processing);
- **DP-SGD** (Abadi et al., CCS 2016; Opacus): the phase that reads data is clipped and noised,
  the others run with per-sample gradients off (:mod:`fedsilo.privacy.dp`);
- **progress** and the round's metrics (batch-size-weighted means of what the phases log).

A task supplies only what a batch does (:meth:`~fedsilo.tasks.base.Task.local_steps`) and how
it is evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.config.schema import TrainSection
from fedsilo.data.images import batches_per_epoch, iterate_batches
from fedsilo.privacy.canaries import GradientCanaries, canary_rows, draw_canaries
from fedsilo.privacy.dp import PrivateTrainer, SiteDP
from fedsilo.progress import current
from fedsilo.seeding import derive_seed, private_generator, seed_torch
from fedsilo.tasks.base import LocalSteps, Phase, Task, TrainContext, TrainResult


def round_lr(cfg: TrainSection, rnd: int, rounds: int, base: float | None = None) -> float:
    """Learning rate of round ``rnd`` (1-based) of ``rounds``: constant or cosine-decayed.

    Cosine: ``lr_final + (lr - lr_final) * (1 + cos(pi * (rnd - 1) / (rounds - 1))) / 2`` with
    ``lr_final = lr * lr_final_factor``, so round 1 uses ``lr`` and the last round ``lr_final``.
    """
    lr = cfg.lr if base is None else base
    if cfg.lr_schedule == "constant" or rounds <= 1:
        return lr
    t = min(max(rnd - 1, 0), rounds - 1) / (rounds - 1)
    final = lr * cfg.lr_final_factor
    return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainSection, lr: float) -> torch.optim.Optimizer:
    """The configured optimiser (``train.optimizer``, fresh each round, as in FedAvg's local SGD)
    at learning rate ``lr`` (:func:`round_lr` gives the round's scheduled rate)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


#: Key of the optimisers' states in :attr:`TrainContext.carry` (one per phase, in phase order).
OPTIMIZERS = "optimizers"


def restore_optimizers(optimizers: list[torch.optim.Optimizer], saved: list[dict[str, Any]] | None) -> None:
    """Load the optimiser states of a site's previous round (``saved``, one per phase) into this
    round's optimisers, keeping this round's scheduled learning rates (None = nothing saved yet).

    Raises
    ------
    ValueError
        When ``saved`` holds a different number of optimisers.
    """
    if not saved:
        return
    if len(saved) != len(optimizers):
        raise ValueError(f"the site kept {len(saved)} optimiser state(s) but this round has {len(optimizers)} "
                         f"phase(s); was the task's training changed between rounds?")
    for opt, state in zip(optimizers, saved, strict=True):
        lrs = [group["lr"] for group in opt.param_groups]
        opt.load_state_dict(state)
        for group, lr in zip(opt.param_groups, lrs, strict=True):
            group["lr"] = lr


def round_batches(n: int, cfg: TrainSection, generator: torch.Generator, batch_size: int | None = None,
                  drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index batches for one round of local training over ``n`` samples."""
    bs = batch_size or cfg.batch_size
    if n == 0:
        return
    if cfg.local_steps:
        done = 0
        while done < cfg.local_steps:
            for idx in iterate_batches(n, bs, generator=generator, shuffle=True, drop_last=drop_last):
                yield idx
                done += 1
                if done == cfg.local_steps:
                    return
    else:
        for _ in range(cfg.local_epochs):
            yield from iterate_batches(n, bs, generator=generator, shuffle=True, drop_last=drop_last)


def num_round_batches(n: int, cfg: TrainSection, batch_size: int | None = None, drop_last: bool = False) -> int:
    """How many batches :func:`round_batches` yields."""
    if n == 0:
        return 0
    if cfg.local_steps:
        return cfg.local_steps
    return cfg.local_epochs * batches_per_epoch(n, batch_size or cfg.batch_size, drop_last)


def proximal_term(model: nn.Module, global_params: Mapping[str, torch.Tensor] | None, mu: float) -> torch.Tensor | float:
    """FedProx's ``mu / 2 * ||w - w_global||^2`` over trainable parameters (Li et al., MLSys 2020)."""
    if not mu or global_params is None:
        return 0.0
    total = 0.0
    for name, p in model.named_parameters():
        if p.requires_grad and name in global_params:
            total = total + (p - global_params[name]).pow(2).sum()
    return 0.5 * mu * total


def add_proximal_grad(model: nn.Module, global_params: Mapping[str, torch.Tensor] | None, mu: float) -> None:
    """Add the gradient of :func:`proximal_term`, ``mu (w - w_global)``, to ``p.grad`` in place
    (for optimisers that set ``p.grad`` themselves, e.g. DP-SGD after its noise)."""
    if not mu or global_params is None:
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name in global_params and p.grad is not None:
                p.grad.add_(p - global_params[name], alpha=mu)


def snapshot_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters (the global model FedProx pulls towards)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bfloat16 autocast on CUDA when ``enabled`` (``experiment.amp``), else a no-op context.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike float16).
    """
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def private_submodule(task: Task, model: nn.Module) -> nn.Module:
    """The part of ``model`` that DP-SGD trains (:attr:`Task.private_module`)."""
    return model.get_submodule(task.private_module) if task.private_module else model


def run_canaries(task: Task, model: nn.Module) -> GradientCanaries | None:
    """The run's audit canaries (``privacy.canaries``) on the private module's weights, or None
    (none asked for, or no sample-level DP-SGD to put them in)."""
    p = task.cfg.privacy
    if not p.canaries or p.mode != "sample" or not p.active:
        return None
    prefix = task.private_module + "." if task.private_module else ""
    params = [(prefix + name, w.shape) for name, w in private_submodule(task, model).named_parameters()
              if w.requires_grad]
    # a centralised run trains one pooled data set: every canary is in it
    sites = 1 if task.cfg.experiment.mode == "centralised" else task.cfg.federation.num_sites
    return draw_canaries(params, p.canaries, sites, task.cfg.experiment.seed)


def site_canaries(task: Task, model: nn.Module, site_index: int) -> GradientCanaries | None:
    """The canaries whose slots are in site ``site_index``'s data set, or None."""
    canaries = run_canaries(task, model)
    return canaries.at_site(site_index) if canaries is not None else None


class SiteRound:
    """One round of local training of ``model`` (in place) on a site's ``data``.

    Built per round; :meth:`batches` yields the round's batch indices and :meth:`step` applies
    the task's phases to one of them; :meth:`finish` returns the round's metrics (and closes
    DP-SGD). :func:`train_site` is the whole loop; tests drive single steps.

    Parameters
    ----------
    task
        The task (its config and :meth:`~fedsilo.tasks.base.Task.local_steps`).
    model
        The model holding the global weights.
    data
        The site's training split (``len(data)`` samples, ``data.batch(idx, device)``).
    ctx
        Round, site, device, FedProx weight and the site's state (privacy accountant).

    Raises
    ------
    PrivacyBudgetExhausted
        When this round would take the site above ``privacy.max_epsilon`` (nothing is changed).
    ValueError
        When more than one phase reads data (DP-SGD can privatise only one).
    """

    def __init__(self, task: Task, model: nn.Module, data: Any, ctx: TrainContext) -> None:
        cfg = task.cfg
        seed = cfg.experiment.seed
        self.n = len(data)
        self.ctx = ctx
        self.amp = cfg.experiment.amp
        self.rounds = cfg.federation.rounds
        self.train_cfg = cfg.train
        # under DP, which samples a batch holds is part of the mechanism: drawn securely, like the noise
        reproducible = not cfg.privacy.active or cfg.privacy.reproducible_noise
        self.generator = private_generator(seed, "batches", ctx.round, ctx.site_index, reproducible=reproducible)
        seed_torch(derive_seed(seed, "dropout", ctx.round, ctx.site_index), ctx.device)
        model.to(ctx.device).train()
        self.num_steps = num_round_batches(self.n, cfg.train)
        # audit canaries (privacy.canaries): further members of the site's data set, Poisson-sampled at
        # the rate of its samples (the plan, and the real samples' sampling, do not depend on them)
        self.canaries = site_canaries(task, model, ctx.site_index) if self.n else None
        self.dp = SiteDP.begin(cfg.privacy, n=self.n, batch_size=cfg.train.batch_size,
                               steps_per_round=self.num_steps, rounds=self.rounds,
                               site_state=ctx.site_state) if self.n else None
        # what a task adds per private step (a GAN's fakes) is sized by the configured batch size, a
        # number that does not depend on the site's data (the plan's n * q changes with one sample more)
        private_batch = cfg.train.batch_size if self.dp is not None else None
        self.steps: LocalSteps = task.local_steps(
            model, data, dataclasses.replace(ctx, generator=self.generator, private_batch_size=private_batch))
        readers = [p for p in self.steps.phases if p.reads_data]
        if len(readers) > 1:
            raise ValueError(f"task {task.name!r} has {len(readers)} phases that read data; DP-SGD privatises one")
        self.optimizers = [self._optimizer(p) for p in self.steps.phases]
        self.carry = ctx.carry if cfg.train.keep_optimizer_state else None
        if self.carry is not None:
            restore_optimizers(self.optimizers, self.carry.get(OPTIMIZERS))
        self.anchors = [snapshot_params(p.module) if ctx.proximal_mu else None for p in self.steps.phases]
        self.private: PrivateTrainer | None = None
        if self.dp is not None and readers:
            i = self.steps.phases.index(readers[0])
            noise = private_generator(seed, "dp-noise", ctx.round, ctx.site_index, reproducible=reproducible,
                                      device=ctx.device)
            if readers[0].module is not private_submodule(task, model):
                raise ValueError(f"task {task.name!r}: the phase that reads data must train "
                                 f"{task.private_module or 'the whole model'!r} (Task.private_module)")
            self.private = self.dp.make_private(readers[0].module, self.optimizers[i],
                                                batch_generator=self.generator, noise_generator=noise)
            names = {id(p): name for name, p in model.named_parameters()}
            self.canary_params = [(names[id(p)], p) for p in self.private.optimizer.params]
        self.totals: dict[str, float] = {}
        self.count = 0

    def _optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        base = self.train_cfg.lr if phase.lr is None else phase.lr
        lr = round_lr(self.train_cfg, self.ctx.round, self.rounds, base=base)
        if phase.optimizer is not None:
            return phase.optimizer(phase.module.parameters(), lr)
        return make_optimizer(phase.module.parameters(), self.train_cfg, lr)

    def batches(self) -> Iterator[torch.Tensor]:
        """The round's batch indices: Poisson batches under DP-SGD, else shuffled ones."""
        if self.private is not None:
            return self.private.batches()
        return round_batches(self.n, self.train_cfg, self.generator)

    def step(self, idx: torch.Tensor) -> None:
        """Every phase's update(s) on the batch ``idx`` ``(B,)`` (B may be 0 under DP-SGD)."""
        slots = None
        if self.canaries is not None and self.private is not None:
            # each canary joins the step's Poisson batch with the samples' rate q
            drawn = torch.rand(len(self.canaries), generator=self.generator) < self.private.plan.sample_rate
            slots = np.flatnonzero(drawn.numpy())
        batch = self.steps.prepare(idx)
        logged: dict[str, float | torch.Tensor] = {}
        for phase, opt, anchor in zip(self.steps.phases, self.optimizers, self.anchors, strict=True):
            for _ in range(phase.repeats):
                if self.private is not None and phase.reads_data:
                    logged.update(self._private_update(phase, batch, len(idx), anchor, slots))
                else:
                    with self._no_grad_sample():
                        logged.update(self._update(phase, opt, batch, anchor))
        if len(idx):
            for key, value in logged.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                self.totals[key] = self.totals.get(key, 0.0) + float(value) * len(idx)
            self.count += len(idx)

    def _update(self, phase: Phase, opt: torch.optim.Optimizer, batch: Any,
                anchor: Mapping[str, torch.Tensor] | None) -> dict[str, float | torch.Tensor]:
        with autocast(self.amp, self.ctx.device):
            loss, logged = phase.loss(phase.module, batch)
        opt.zero_grad(set_to_none=True)
        (loss + proximal_term(phase.module, anchor, self.ctx.proximal_mu)).backward()
        opt.step()
        return logged

    def _private_update(self, phase: Phase, batch: Any, size: int, anchor: Mapping[str, torch.Tensor] | None,
                        slots: np.ndarray | None = None) -> dict[str, float | torch.Tensor]:
        private = self.private
        assert private is not None
        rows = None
        if slots is not None and self.canaries is not None:
            rows = canary_rows(self.canary_params, self.canaries, slots, private.plan.max_grad_norm)
        # FedProx's pull towards the global model is data-independent: added after the noise
        prox = (lambda: add_proximal_grad(phase.module, anchor, self.ctx.proximal_mu)) if anchor else None
        private.optimizer.zero_grad(set_to_none=True)
        if not size and not phase.has_own_rows:
            private.noise_step(prox, rows)
            return {}
        with autocast(self.amp, self.ctx.device):
            loss, logged = phase.loss(private.module, batch)
        loss.backward()
        private.step(prox, rows)
        return logged

    def _no_grad_sample(self) -> contextlib.AbstractContextManager[None]:
        return self.private.no_grad_sample() if self.private is not None else contextlib.nullcontext()

    def finish(self) -> TrainResult:
        """Close DP-SGD (the accountant goes back into the site state) and return the round's
        batch-size-weighted mean of every logged value, plus the privacy spent."""
        if self.private is not None:
            self.private.close()
        metrics = {k: v / max(self.count, 1) for k, v in self.totals.items()}
        if self.carry is not None:
            self.carry[OPTIMIZERS] = [opt.state_dict() for opt in self.optimizers]
        if self.dp is not None:
            metrics.update(self.dp.finish())
        return TrainResult(metrics, num_examples=self.n)


def train_site(task: Task, model: nn.Module, data: Any, ctx: TrainContext) -> TrainResult:
    """One round of local training of ``model`` (in place) on ``data`` (see :class:`SiteRound`)."""
    round_ = SiteRound(task, model, data, ctx)
    reporter = current()
    reporter.site_started(ctx.site_name, round_.num_steps)
    try:
        for idx in round_.batches():
            round_.step(idx)
            reporter.batch_done(ctx.site_name)
    except BaseException:
        if round_.private is not None:
            round_.private.close()
        raise
    reporter.site_finished(ctx.site_name)
    return round_.finish()
