"""The synthesis task: federated DCGAN synthesis of fundus images (FedGAN), and its CT pre-training.

Kamran et al., "FedGAN: Federated diabetic retinopathy image generation", PLOS ONE 2025: every
round each sampled site trains the generator and the discriminator (Radford et al., ICLR 2016)
on its own images for E local epochs or S steps, and both are averaged (FedAvg by default, any
strategy of the foundation, or FedBN-style local normalisation). A pre-training run of the same
task on abdominal CT/MR slices (``data.source = "volumes"``, centralised) initialises the
fine-tuning through ``gan.pretrained`` -- the weights are really loaded, adapted to the fundus
images' channels and resolution (the reference implementation never loaded them).

Evaluation (server side, every ``federation.eval_every`` rounds and at the end) is in
:mod:`~fedsilo.tasks.synthesis.evaluation`; the scoring networks in
:mod:`~fedsilo.tasks.synthesis.references`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.data.fundus import GRADE_NAMES, federated_fundus
from fedsilo.data.images import ImageDataset
from fedsilo.models.classifier import GradeCNN
from fedsilo.models.dcgan import DCGANDiscriminator, DCGANGenerator, sample_latent
from fedsilo.models.dcgan_transfer import adapt_state_dict
from fedsilo.models.gan_losses import discriminator_loss, generator_loss
from fedsilo.privacy.dp import SiteDP, private_discriminator_step
from fedsilo.progress import current
from fedsilo.runs import RunDir, RunDirError
from fedsilo.seeding import derive_seed, torch_generator
from fedsilo.tasks.base import InferenceSpec, Task, TrainContext, TrainResult
from fedsilo.tasks.synthesis.data import GanImages, SliceImages, all_images
from fedsilo.tasks.synthesis.evaluation import discriminator_view, generate, generator_metrics
from fedsilo.tasks.synthesis.grids import save_grid_png
from fedsilo.tasks.synthesis.manifold import nearest_neighbours
from fedsilo.tasks.synthesis.model import GANPair, Generate
from fedsilo.tasks.synthesis.references import NUM_GRADES, References, reference_networks
from fedsilo.tasks.synthesis.training import adam, fake_labels, gan_step
from fedsilo.training import autocast, num_round_batches, proximal_term, round_batches, round_lr, snapshot_params

__all__ = ["SynthesisTask"]

logger = logging.getLogger(__name__)

GRID = 64


class SynthesisTask(Task):
    """Federated DCGAN synthesis (FedGAN) of fundus images or abdominal slices."""

    name = "synthesis"
    primary_metric = "realism"
    percent_metrics = {"fd": False, "kid": False, "precision": True, "recall": True, "coverage": True}

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._refs: References | None = None
        self._fed: FederatedData[Any] | None = None

    # -- model ---------------------------------------------------------------------------------

    @property
    def graded(self) -> bool:
        """Fundus images carry DR grades; abdominal slices do not."""
        return self.cfg.data.source != "volumes"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        d = self.cfg.data
        if d.source == "volumes":
            return 1, d.volume.size, d.volume.size
        return (1 if d.preprocess.grayscale else 3), d.image_size, d.image_size

    def make_pair(self) -> GANPair:
        g, seed = self.cfg.gan, self.cfg.experiment.seed
        c, size, _ = self.image_shape
        classes = NUM_GRADES if g.conditional else 0
        return GANPair(
            DCGANGenerator(size, c, g.latent_dim, g.g_width, g.norm, classes, seed=derive_seed(seed, "init-g")),
            DCGANDiscriminator(size, c, g.d_width, g.norm, classes, seed=derive_seed(seed, "init-d")),
        )

    def _make_model(self) -> nn.Module:
        return self.make_pair()

    def make_reference_classifier(self) -> GradeCNN:
        c = self.cfg.classifier
        return GradeCNN(self.image_shape[0], NUM_GRADES, width=c.width, depth=c.depth, norm="batch")

    def dp_compatible(self, model: nn.Module) -> nn.Module:
        """Only the discriminator sees real images: it alone becomes DP-compatible (the generator is
        private by post-processing, Xie et al. 2018's DPGAN argument)."""
        from fedsilo.privacy.dp import make_dp_compatible

        model.discriminator = make_dp_compatible(model.discriminator, "GAN discriminator")
        return model

    def initial_state(self) -> dict[str, torch.Tensor]:
        """DCGAN initialisation, or the pre-trained run's networks adapted to this run's images."""
        model = self.build_model()
        path = self.cfg.gan.pretrained
        if not path:
            return model.state_dict()
        src = self.pretrained_state(path)
        for part in ("generator", "discriminator"):
            prefix = f"{part}."
            sub = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)}
            if not sub:
                raise RunDirError(f"gan.pretrained = {path!r} holds no {part} (is it a synthesis run?)")
            state, summary = adapt_state_dict(sub, getattr(model, part))
            getattr(model, part).load_state_dict(state, strict=True)
            logger.info("Pre-trained %s from %s: %d copied, %d adapted, %d skipped, %d missing", part, path,
                        len(summary.copied), len(summary.adapted), len(summary.skipped), len(summary.missing))
            for line in summary.lines():
                logger.debug("%s: %s", part, line)
        return model.state_dict()

    @staticmethod
    def pretrained_state(path: str) -> dict[str, torch.Tensor]:
        """The final global state of a finished synthesis run folder."""
        run = RunDir.open(path)
        if run.cfg.experiment.task != "synthesis":
            raise RunDirError(f"gan.pretrained = {path!r} is a {run.cfg.experiment.task} run, not a synthesis run")
        if not run.final_path.exists():
            raise RunDirError(f"gan.pretrained = {path!r} has not finished (no final.pt)")
        return torch.load(run.final_path, map_location="cpu", weights_only=False)["model"]

    # -- data ----------------------------------------------------------------------------------

    def federated_data(self) -> FederatedData[Any]:
        if self.cfg.data.source != "volumes":
            return federated_fundus(self.cfg)
        if self._fed is None:
            from fedsilo.data.abdomen import SliceDataset, federated_volumes

            vol = federated_volumes(self.cfg)
            sites = [SiteData(s.name, SliceImages(s.train), SliceImages(s.val), s.info) for s in vol.sites]
            tests = list(vol.test.values()) if isinstance(vol.test, dict) else []
            test = SliceImages(SliceDataset.concat(tests)) if tests else None
            self._fed = FederatedData(sites, test, np.array([[len(s.train)] for s in sites]), ("slices",))
        return self._fed

    def pooled_train(self) -> GanImages:
        parts = [s.train for s in self.federated_data().sites]
        return SliceImages.concat(parts) if isinstance(parts[0], SliceImages) else ImageDataset.concat(parts)

    def references(self, device: torch.device) -> References:
        """The scoring networks (trained once per pooled data set, cached on disk)."""
        if self._refs is None:
            self._refs = reference_networks(self, self.pooled_train(), self.test_data(), self.graded, device)
        return self._refs

    # -- learning ------------------------------------------------------------------------------

    def train(self, model: nn.Module, data: GanImages, ctx: TrainContext) -> TrainResult:
        cfg, g = self.cfg, self.cfg.gan
        seed = cfg.experiment.seed
        gen = torch_generator(seed, "batches", ctx.round, ctx.site_index)
        model.to(ctx.device).train()
        rounds = cfg.federation.rounds
        opt_d = adam(model.discriminator.parameters(), round_lr(cfg.train, ctx.round, rounds, base=g.lr_d), g.beta1)
        opt_g = adam(model.generator.parameters(), round_lr(cfg.train, ctx.round, rounds, base=g.lr_g), g.beta1)
        anchor = snapshot_params(model) if ctx.proximal_mu else None
        steps = num_round_batches(len(data), cfg.train)
        dp = SiteDP.begin(cfg.privacy, n=len(data), batch_size=cfg.train.batch_size, steps_per_round=steps,
                          rounds=rounds, site_state=ctx.site_state) if len(data) else None
        reporter = current()
        reporter.site_started(ctx.site_name, steps)
        d_total = g_total = 0.0
        count = 0
        if dp is None:
            mu = ctx.proximal_mu
            for idx in round_batches(len(data), cfg.train, gen):
                real, labels = data.batch(idx, ctx.device)
                with autocast(cfg.experiment.amp, ctx.device):
                    d_loss, g_loss = gan_step(
                        model, real, labels, opt_d, opt_g, conditional=g.conditional,
                        real_target=1.0 - g.label_smoothing, d_steps=g.d_steps, gen=gen,
                        extra_d=lambda: proximal_term(model.discriminator, _sub(anchor, "discriminator."), mu),
                        extra_g=lambda: proximal_term(model.generator, _sub(anchor, "generator."), mu))
                d_total, g_total, count = d_total + d_loss * len(idx), g_total + g_loss * len(idx), count + len(idx)
                reporter.batch_done(ctx.site_name)
        else:
            d_total, g_total, count = self._train_private(model, data, ctx, dp, opt_d, opt_g, gen)
        reporter.site_finished(ctx.site_name)
        metrics = {"train_d_loss": d_total / max(count, 1), "train_g_loss": g_total / max(count, 1)}
        if dp is not None:
            metrics.update(dp.finish())
        return TrainResult(metrics, num_examples=len(data))

    def _train_private(self, model: GANPair, data: GanImages, ctx: TrainContext, dp: SiteDP,
                       opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer,
                       gen: torch.Generator) -> tuple[float, float, int]:
        """DP-SGD on the discriminator (Poisson batches, clipping, noise); the generator learns only
        through the private discriminator (no per-sample gradients recorded for its step)."""
        g = self.cfg.gan
        real_target = 1.0 - g.label_smoothing
        noise = torch_generator(self.cfg.experiment.seed, "dp-noise", ctx.round, ctx.site_index, device=ctx.device)
        d_total = g_total = 0.0
        count = 0
        with dp.make_private(model.discriminator, opt_d, batch_generator=gen, noise_generator=noise) as private:
            for idx in private.batches():
                real, labels = data.batch(idx, ctx.device)
                b = max(len(idx), 1)
                y_fake = fake_labels(labels, g.conditional, gen) if len(idx) else None
                if g.conditional and y_fake is None:
                    y_fake = torch.randint(0, NUM_GRADES, (b,), generator=gen).to(ctx.device)
                with torch.no_grad():
                    fake = model.generator(sample_latent(b, g.latent_dim, gen, ctx.device), y_fake)
                d_loss = private_discriminator_step(
                    private, real, fake, lambda r, f: discriminator_loss(r, f, real_target),
                    real_labels=labels if g.conditional else None, fake_labels=y_fake)
                with private.no_grad_sample():
                    fake = model.generator(sample_latent(b, g.latent_dim, gen, ctx.device), y_fake)
                    logits = private.module(fake) if y_fake is None else private.module(fake, y_fake)
                    g_loss = generator_loss(logits.reshape(-1))
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    private.optimizer.zero_grad(set_to_none=True)
                d_total, g_total = d_total + float(d_loss) * len(idx), g_total + float(g_loss.detach()) * len(idx)
                count += len(idx)
                current().batch_done(ctx.site_name)
        return d_total, g_total, count

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data: GanImages | None, device: torch.device) -> dict[str, float]:
        """Realism, FD, KID, precision/recall/density/coverage, diversity (and TSTR when
        conditional) of the generator on ``gan.eval_samples`` images against ``data``."""
        refs = self.references(device)
        real, grades = all_images(data, device) if data is not None and len(data) else (None, None)
        g = self.cfg.gan
        return generator_metrics(model.generator, refs, real, grades, n=g.eval_samples,
                                 seed=derive_seed(self.cfg.experiment.seed, "eval-z"), device=device,
                                 conditional=g.conditional, tstr_epochs=g.tstr_epochs,
                                 batch_size=self.cfg.train.batch_size, make_classifier=self.make_reference_classifier)

    def evaluate_site(self, model: nn.Module, data: GanImages, device: torch.device) -> dict[str, float]:
        """Cheap: how the global discriminator scores the site's validation images and as many fakes."""
        if not len(data):
            return {"n": 0}
        idx = torch.arange(min(len(data), 256))
        real, grades = data.batch(idx, device)
        view = discriminator_view(model.discriminator, model.generator, real,
                                  derive_seed(self.cfg.experiment.seed, "site-eval-z"), device, grades,
                                  self.cfg.gan.conditional)
        return {**view, "n": len(idx)}

    def round_artifacts(self, model: nn.Module, rnd: int, out_dir: Any, device: torch.device) -> None:
        """``samples/round-NNN.png`` (the same 64 latent codes every round; rows of one grade when
        conditional) and, after the last round, ``samples/nearest-real.png``."""
        g = self.cfg.gan
        grades = torch.arange(GRID) // (GRID // 8) % NUM_GRADES if g.conditional else None
        fake = generate(model.generator, GRID, derive_seed(self.cfg.experiment.seed, "grid-z"), device, grades)
        (Path(out_dir) / "samples").mkdir(parents=True, exist_ok=True)
        save_grid_png(fake.cpu(), Path(out_dir) / "samples" / f"round-{rnd:03d}.png", nrow=8, scale=_scale(fake))
        if rnd == self.cfg.federation.rounds:
            self.nearest_real_grid(fake[:8], Path(out_dir) / "samples" / "nearest-real.png")

    def nearest_real_grid(self, fake: torch.Tensor, path: Path) -> Path:
        """Top row: generated images; bottom row: the closest pooled training image of each (pixels)."""
        real, _ = all_images(self.pooled_train())
        _, idx = nearest_neighbours(fake.cpu(), real, k=1)
        return save_grid_png(torch.cat([fake.cpu(), real[idx[:, 0].long()]]), path, nrow=len(fake), scale=_scale(fake))

    # -- use ------------------------------------------------------------------------------------

    def generate(self, model: nn.Module, n: int, grade: int | None, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
        g = self.cfg.gan
        if grade is not None and not g.conditional:
            raise ValueError("--grade needs a conditional generator (gan.conditional = true); this one is not")
        if g.conditional:
            grades = torch.full((n,), grade) if grade is not None else torch.arange(n) % NUM_GRADES
            return generate(model.generator, n, seed, device, grades).cpu(), grades, "conditioning grade"
        images = generate(model.generator, n, seed, device).cpu()
        if not self.graded:
            return images, torch.zeros(n, dtype=torch.long), "none (ungraded abdominal slices; label 0)"
        clf = self.references(device).classifier
        with torch.no_grad():
            grades = clf(images.to(device)).argmax(1).cpu()
        return images, grades, "predicted by the reference grade classifier trained on the run's real images"

    def inference_spec(self, model: nn.Module) -> InferenceSpec:
        g = self.cfg.gan
        gen = Generate(model.generator).eval()
        width = g.latent_dim + (NUM_GRADES if g.conditional else 0)
        c, size, _ = self.image_shape
        contract = {
            "input": {"name": "code", "shape": ["batch", width], "dtype": "float32",
                      "meaning": f"z ~ N(0, I) of size {g.latent_dim}"
                                 + (f", then a one-hot DR grade of size {NUM_GRADES}" if g.conditional else "")},
            "output": {"name": "images", "shape": ["batch", c, size, size], "dtype": "float32", "range": [-1.0, 1.0],
                       "meaning": "generated images; (x + 1) * 127.5 gives 8-bit pixels"
                                  + (", RGB" if c == 3 else ", grey"),
                       **({"classes": list(GRADE_NAMES)} if g.conditional else {})},
        }
        return InferenceSpec(gen, torch.zeros(1, width), "code", "images", contract)

    def intended_use(self) -> str:
        return ("Research on federated synthesis of fundus images (FedGAN): measuring how close federated "
                "generators come to centralised ones and what they leak. Synthetic images are for method "
                "development and data-sharing studies, not for training clinical models without validation "
                "on real data.")

    # -- reports -------------------------------------------------------------------------------

    def curve_metrics(self) -> list[str]:
        return ["train_d_loss", "train_g_loss", "test_realism", "test_fd", "val_d_real", "val_d_fake"]

    def summary_columns(self, keys: Any) -> list[str]:
        present = set(keys)
        names = ["realism", "fd", "kid", "precision", "recall", "density", "coverage", "diversity", "tstr_kappa",
                 "trtr_kappa"]
        cols = [f"test_{n}" for n in names] + [f"sel_test_{n}" for n in ("realism", "fd")] + ["val_d_real",
                                                                                               "val_d_fake"]
        return [c for c in cols if c in present]

    def report_sections(self, run_dir: Any) -> list[tuple[str, str, list[str]]]:
        from fedsilo.report.html import img_file

        folder = Path(run_dir) / "samples"
        rounds = sorted(folder.glob("round-*.png"))
        if not rounds:
            return []
        body = (f"<p>64 images from the same latent codes after round {int(rounds[-1].stem.split('-')[1])}"
                + (" (rows: DR grades 0-4, repeating)" if self.cfg.gan.conditional else "") + ".</p>"
                + img_file(rounds[-1], "generated samples"))
        if len(rounds) > 1:
            body += f"<p>Before training (round {int(rounds[0].stem.split('-')[1])}):</p>" + img_file(rounds[0], "early")
        nearest = folder / "nearest-real.png"
        if nearest.exists():
            body += ("<p>Top: generated; bottom: the closest real training image of each (pixel distance) — "
                     "copies of training images would show up here.</p>" + img_file(nearest, "nearest real"))
        return [("Generated samples", body, [])]

    def protocol_notes(self) -> list[str]:
        return [
            "No Inception-v3 weights are available offline: FD and KID are computed in the feature space of a "
            "reference DR-grade classifier trained on the run's real training images, so they are not comparable "
            "with published FIDs.",
            "Realism is the mean sigmoid output of a reference discriminator (of a GAN trained centrally on the "
            "pooled real training images), as the FedGAN paper defines it; it depends entirely on that "
            "discriminator, so compare realism only within one data set and seed.",
            "Real held-out images for FD/KID/precision/recall are the configured test split (RetinaMNIST: its 120 "
            "validation images), so these estimates carry the small-sample bias their intervals show.",
        ]


def _scale(images: torch.Tensor) -> int:
    """Enlargement of sample grids: small images (28-32 px) x3, 64 px x2, larger ones as they are."""
    side = images.shape[-1]
    return 3 if side <= 32 else 2 if side <= 64 else 1


def _sub(state: dict[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor] | None:
    """The entries of a state snapshot under ``prefix``, without it (None stays None)."""
    if state is None:
        return None
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
