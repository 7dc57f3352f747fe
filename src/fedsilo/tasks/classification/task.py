"""The classification task: a :class:`~fedsilo.models.classifier.GradeCNN` grading fundus images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.data.fundus import GRADE_NAMES, NUM_GRADES, federated_fundus, fundus_site_from_path
from fedsilo.data.images import ImageDataset, iterate_batches
from fedsilo.models.classifier import GradeCNN
from fedsilo.seeding import derive_seed
from fedsilo.tasks.base import InferenceSpec, LocalSteps, Phase, StepLoss, Task, TrainContext, evaluating
from fedsilo.tasks.classification.metrics import grading_metrics


class ClassificationTask(Task):
    """Federated DR grading (5 ICDR grades) on fundus images."""

    name = "classification"
    primary_metric = "kappa"

    def _make_model(self) -> nn.Module:
        c = self.cfg.classifier
        channels = 1 if self.cfg.data.preprocess.grayscale else 3
        return GradeCNN(channels, NUM_GRADES, width=c.width, depth=c.depth, norm=c.norm, dropout=c.dropout)


    def federated_data(self) -> FederatedData[ImageDataset]:
        return federated_fundus(self.cfg)

    def site_from_path(self, path: str, name: str) -> SiteData[ImageDataset]:
        """Deployment: a site's own data (see :func:`~fedsilo.data.fundus.fundus_site_from_path`)."""
        return fundus_site_from_path(self.cfg, path, name)

    def pooled_train(self) -> ImageDataset:
        return ImageDataset.concat([s.train for s in self.federated_data().sites])

    def local_steps(self, model: nn.Module, data: ImageDataset, ctx: TrainContext) -> LocalSteps:
        """Cross-entropy on each batch, with random horizontal flips (``classifier.hflip``)."""
        gen, device, hflip = ctx.generator, ctx.device, self.cfg.classifier.hflip

        def prepare(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = data.batch(idx, device)
            if hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
            return x, y

        def loss(module: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepLoss:
            x, y = batch
            value = F.cross_entropy(module(x), y)
            return value, {"train_loss": value}

        return LocalSteps(prepare, [Phase(model, loss)])

    def evaluate(self, model: nn.Module, data: ImageDataset, device: torch.device) -> dict[str, float]:
        return self._metrics(model, data, device, ci=True)

    def evaluate_site(self, model: nn.Module, data: ImageDataset, device: torch.device) -> dict[str, float]:
        return self._metrics(model, data, device, ci=False)

    def _metrics(self, model: nn.Module, data: ImageDataset, device: torch.device, ci: bool) -> dict[str, float]:
        """Grading metrics of ``model`` on ``data``; with ``ci`` also bootstrap 95% intervals."""
        if len(data) == 0:
            return {"n": 0}
        model.to(device)
        logits, targets = [], []
        with evaluating(model):
            for idx in iterate_batches(len(data), self.cfg.eval.batch_size):
                x, y = data.batch(idx, device)
                logits.append(model(x).float().cpu())
                targets.append(y.cpu())
        seed = derive_seed(self.cfg.experiment.seed, "ci") if ci else None
        return grading_metrics(torch.cat(logits), torch.cat(targets), ci_seed=seed)

    def inference_spec(self, model: nn.Module) -> InferenceSpec:
        d = self.cfg.data
        channels = 1 if d.preprocess.grayscale else 3
        p = d.preprocess
        steps = [f"resize to {d.image_size}x{d.image_size}", "grayscale" if p.grayscale else "RGB"]
        steps += [f"CLAHE (clip {p.clahe_clip}, {p.clahe_tiles} tiles)"] * p.clahe
        steps += [f"gamma {p.gamma}"] * (p.gamma != 1.0) + [f"quantise to {p.quantise_levels} levels"] * bool(p.quantise_levels)
        contract = {
            "input": {"name": "images", "shape": ["batch", channels, d.image_size, d.image_size], "dtype": "float32",
                      "range": [-1.0, 1.0], "preprocessing": steps + ["scale [0, 1] -> [-1, 1]"]},
            "output": {"name": "logits", "shape": ["batch", NUM_GRADES], "dtype": "float32",
                       "meaning": "unnormalised log-probabilities of the ICDR grades; argmax = predicted grade",
                       "classes": list(GRADE_NAMES)},
        }
        return InferenceSpec(model.eval(), torch.zeros(1, channels, d.image_size, d.image_size), "images", "logits",
                             contract)
