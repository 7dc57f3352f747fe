"""Toy regression task: each site holds vectors ``x`` and targets ``y = x . w + noise``, with its own
distribution of ``x``; the model is a linear layer; the metric is the mean squared error."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.tasks import LocalSteps, Phase, StepLoss, Task, TrainContext

DIM = 4
TRUE_W = torch.tensor([1.0, -2.0, 0.5, 3.0])


class Vectors:
    """Rows ``x`` (N, DIM) and targets ``y`` (N,): what a site holds."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx].to(device), self.y[idx].to(device)


def _vectors(n: int, shift: float, seed: int) -> Vectors:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=gen) + shift
    return Vectors(x, x @ TRUE_W + 0.1 * torch.randn(n, generator=gen))


class ToyRegression(Task):
    """Federated linear regression (the minimum a task implements)."""

    name = "toy-regression"
    primary_metric = "mse"
    higher_is_better = False

    def _make_model(self) -> nn.Module:
        return nn.Linear(DIM, 1)

    def federated_data(self) -> FederatedData[Vectors]:
        seed, k = self.cfg.experiment.seed, self.cfg.federation.num_sites
        sites = [SiteData(f"site-{i + 1}", _vectors(64, shift=i - k / 2, seed=seed * 100 + i),
                          _vectors(16, shift=i - k / 2, seed=seed * 100 + 50 + i), {})
                 for i in range(k)]
        return FederatedData(sites, _vectors(64, 0.0, seed * 100 + 99), np.array([[len(s.train)] for s in sites]),
                             ("rows",))

    def pooled_train(self) -> Vectors:
        sites = self.federated_data().sites
        return Vectors(torch.cat([s.train.x for s in sites]), torch.cat([s.train.y for s in sites]))

    def local_steps(self, model: nn.Module, data: Vectors, ctx: TrainContext) -> LocalSteps:
        def loss(module: nn.Module, batch: Any) -> StepLoss:
            x, y = batch
            value = F.mse_loss(module(x).squeeze(1), y)
            return value, {"train_loss": value}

        return LocalSteps(lambda idx: data.batch(idx, ctx.device), [Phase(model, loss)])

    def evaluate(self, model: nn.Module, data: Vectors, device: torch.device) -> dict[str, float]:
        with torch.no_grad():
            x, y = data.batch(torch.arange(len(data)), device)
            return {"mse": float(F.mse_loss(model.to(device)(x).squeeze(1), y)), "n": len(data)}
