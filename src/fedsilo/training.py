"""Pieces every task's local training shares: optimisers, the round's batches, FedProx.

A round of local training at a site is ``train.local_steps`` optimiser steps when set, else
``train.local_epochs`` passes over the site's training split; batch order is drawn from a
generator seeded by (experiment seed, round, site), so it is the same on every engine and
after a resume.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from fedsilo.config.schema import TrainSection
from fedsilo.data.images import batches_per_epoch, iterate_batches


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


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainSection, *, lr: float | None = None,
                   betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """The configured optimiser (fresh each round, as in FedAvg's local SGD) at learning rate ``lr``
    (default ``cfg.lr``; pass :func:`round_lr` for the round's scheduled rate)."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kwargs = {"lr": lr, "weight_decay": cfg.weight_decay}
    if betas is not None:
        kwargs["betas"] = betas
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    return torch.optim.Adam(params, **kwargs)


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
