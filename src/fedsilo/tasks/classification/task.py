"""The classification task: a :class:`~fedsilo.models.classifier.GradeCNN` grading fundus images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.data.fundus import GRADE_NAMES, NUM_GRADES, federated_fundus, fundus_site_from_path
from fedsilo.data.images import ImageDataset, iterate_batches
from fedsilo.models.classifier import GradeCNN
from fedsilo.privacy.dp import SiteDP
from fedsilo.progress import current
from fedsilo.seeding import derive_seed, seed_torch, torch_generator
from fedsilo.tasks.base import InferenceSpec, Task, TrainContext, TrainResult, evaluating
from fedsilo.tasks.classification.metrics import grading_metrics
from fedsilo.training import (
    add_proximal_grad,
    autocast,
    make_optimizer,
    num_round_batches,
    proximal_term,
    round_batches,
    round_lr,
    snapshot_params,
)


class ClassificationTask(Task):
    """Federated DR grading (5 ICDR grades) on fundus images."""

    name = "classification"
    primary_metric = "kappa"

    def _make_model(self) -> nn.Module:
        c = self.cfg.classifier
        channels = 1 if self.cfg.data.preprocess.grayscale else 3
        return GradeCNN(channels, NUM_GRADES, width=c.width, depth=c.depth, norm=c.norm, dropout=c.dropout)

    def curve_metrics(self) -> list[str]:
        return ["train_loss", "val_kappa", "test_kappa", "test_accuracy"]

    def federated_data(self) -> FederatedData[ImageDataset]:
        return federated_fundus(self.cfg)

    def site_from_path(self, path: str, name: str) -> SiteData[ImageDataset]:
        """Deployment: a site's own data (see :func:`~fedsilo.data.fundus.fundus_site_from_path`)."""
        return fundus_site_from_path(self.cfg, path, name)

    def pooled_train(self) -> ImageDataset:
        return ImageDataset.concat([s.train for s in self.federated_data().sites])

    def train(self, model: nn.Module, data: ImageDataset, ctx: TrainContext) -> TrainResult:
        seed = self.cfg.experiment.seed
        gen = torch_generator(seed, "batches", ctx.round, ctx.site_index)
        seed_torch(derive_seed(seed, "dropout", ctx.round, ctx.site_index), ctx.device)
        model.to(ctx.device).train()
        opt = make_optimizer(model.parameters(), self.cfg.train,
                             lr=round_lr(self.cfg.train, ctx.round, self.cfg.federation.rounds))
        anchor = snapshot_params(model) if ctx.proximal_mu else None
        steps = num_round_batches(len(data), self.cfg.train)
        dp = SiteDP.begin(self.cfg.privacy, n=len(data), batch_size=self.cfg.train.batch_size,
                          steps_per_round=steps, rounds=self.cfg.federation.rounds,
                          site_state=ctx.site_state) if len(data) else None
        reporter = current()
        site = ctx.site_name
        reporter.site_started(site, steps)
        total, count = 0.0, 0
        if dp is None:
            for idx in round_batches(len(data), self.cfg.train, gen):
                with autocast(self.cfg.experiment.amp, ctx.device):
                    loss = self._loss(model, data, idx, ctx.device, gen)
                opt.zero_grad(set_to_none=True)
                (loss + proximal_term(model, anchor, ctx.proximal_mu)).backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                reporter.batch_done(site)
        else:
            noise = torch_generator(seed, "dp-noise", ctx.round, ctx.site_index, device=ctx.device)
            with dp.make_private(model, opt, batch_generator=gen, noise_generator=noise) as private:
                # FedProx's pull towards the global model is data-independent: added after the noise
                prox = (lambda: add_proximal_grad(model, anchor, ctx.proximal_mu)) if anchor else None
                for idx in private.batches():
                    opt_loss = self._loss(private.module, data, idx, ctx.device, gen)
                    private.optimizer.zero_grad(set_to_none=True)
                    opt_loss.backward()
                    private.step(prox)
                    if len(idx):
                        total += float(opt_loss.detach()) * len(idx)
                        count += len(idx)
                    reporter.batch_done(site)
        reporter.site_finished(site)
        metrics = {"train_loss": total / max(count, 1)}
        if dp is not None:
            metrics.update(dp.finish())
        return TrainResult(metrics, num_examples=len(data))

    def _loss(self, model: nn.Module, data: ImageDataset, idx: torch.Tensor, device: torch.device,
              gen: torch.Generator) -> torch.Tensor:
        x, y = data.batch(idx, device)
        if self.cfg.classifier.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
        return F.cross_entropy(model(x), y)

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

    def intended_use(self) -> str:
        return ("Research on federated diabetic-retinopathy grading (5 ICDR grades) from colour fundus "
                "photographs: comparing federated, centralised and local training. Not a screening device: "
                "it was not validated on a clinical population, and its kappa on the test split is the only "
                "evidence of its quality.")
