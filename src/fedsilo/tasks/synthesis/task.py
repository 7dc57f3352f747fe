"""The synthesis task: federated DCGAN synthesis of fundus images (FedGAN), and its CT pre-training.

Kamran et al., "FedGAN: Federated diabetic retinopathy image generation", PLOS ONE 2025: every
round each sampled site trains the generator and the discriminator (Radford et al., ICLR 2016)
on its own images for E local epochs or S steps, and both are averaged (FedAvg by default, any
strategy of the foundation, or FedBN-style local normalisation). A pre-training run of the same
task on abdominal CT/MR slices (``data.source = "volumes"``, centralised) initialises the
fine-tuning through ``gan.pretrained`` -- the weights are really loaded, adapted to the fundus
images' channels and resolution (the reference implementation never loaded them).

Options beyond the paper (``[gan]``): an EMA of the generator kept by the coordinator and released
(``ema_decay``), differentiable augmentation (``diffaugment``), a spectrally normalised
(``spectral_norm``) or shallower (``d_blocks``) discriminator.

Evaluation (server side, every ``federation.eval_every`` rounds and at the end) is in
:mod:`~fedsilo.tasks.synthesis.evaluation`; with ``gan.evaluation = "reference"`` its scoring
networks are trained on the pooled images (:mod:`~fedsilo.tasks.synthesis.references`: local and
simulation engines only), with ``"federated"`` the feature metrics are combined from statistics
the sites compute (:mod:`~fedsilo.tasks.synthesis.federated_eval`: every engine, deployment
included).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.augment.diffaugment import DiffAugment
from fedsilo.data.federated import FederatedData, SiteData
from fedsilo.data.fundus import GRADE_NAMES, federated_fundus, fundus_site_from_path
from fedsilo.data.images import ImageDataset
from fedsilo.models.classifier import GradeCNN
from fedsilo.models.dcgan import DCGANDiscriminator, DCGANGenerator
from fedsilo.models.dcgan_transfer import adapt_state_dict
from fedsilo.models.ema import WeightEMA
from fedsilo.models.gan_losses import discriminator_row_loss, generator_loss
from fedsilo.models.norms import norm_state_keys
from fedsilo.seeding import derive_seed, torch_generator
from fedsilo.tasks.base import InferenceSpec, LocalSteps, Phase, StepLoss, Task, TrainContext
from fedsilo.tasks.synthesis.data import GanImages, SliceImages, all_images
from fedsilo.tasks.synthesis.evaluation import discriminator_view, generate, generator_metrics, grid_images
from fedsilo.tasks.synthesis.federated_eval import FederatedEvaluation
from fedsilo.tasks.synthesis.grids import save_grid_png
from fedsilo.tasks.synthesis.manifold import nearest_neighbours
from fedsilo.tasks.synthesis.model import GANPair, Generate
from fedsilo.tasks.synthesis.references import NUM_GRADES, References, reference_networks
from fedsilo.tasks.synthesis.training import PrivateFakes, adam, discriminator_step_loss, generator_step_loss

__all__ = ["SynthesisTask"]

logger = logging.getLogger(__name__)

GRID = 64


class SynthesisTask(Task):
    """Federated DCGAN synthesis (FedGAN) of fundus images or abdominal slices."""

    name = "synthesis"
    primary_metric = "realism"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._refs: References | None = None
        self._fed: FederatedData[Any] | None = None
        self._kept: frozenset[str] | None = None
        g = cfg.gan
        #: ``gan.evaluation = "federated"``: the feature metrics come from the sites' statistics
        self.federated_eval = FederatedEvaluation(
            self.image_shape, n=g.eval_samples, seed=derive_seed(cfg.experiment.seed, "eval-z"),
            conditional=g.conditional) if g.evaluation == "federated" else None

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

    def make_pair(self, reference: bool = False) -> GANPair:
        """The GAN of this run; with ``reference`` the scoring GAN of
        :mod:`~fedsilo.tasks.synthesis.references`, without the discriminator options under study
        (``gan.spectral_norm``, ``gan.d_blocks``), so that runs that differ only in them are
        scored by the same reference networks."""
        g, seed = self.cfg.gan, self.cfg.experiment.seed
        c, size, _ = self.image_shape
        classes = NUM_GRADES if g.conditional else 0
        return GANPair(
            DCGANGenerator(size, c, g.latent_dim, g.g_width, g.norm, classes, seed=derive_seed(seed, "init-g")),
            DCGANDiscriminator(size, c, g.d_width, g.norm, classes, seed=derive_seed(seed, "init-d"),
                               blocks=None if g.d_blocks < 0 or reference else g.d_blocks,
                               spectral_norm=g.spectral_norm and not reference),
        )

    def weight_average(self) -> WeightEMA:
        """``gan.ema_decay``: the coordinator's per-round EMA of the global generator (see
        :mod:`fedsilo.models.ema`). Kept there, not at the sites: the released generator is the
        coordinator's, the average of aggregates costs no traffic, no privacy (post-processing)
        and works under secure aggregation; site-side averages of local iterates would have to be
        sent and averaged again, or never reach the released model. None in ``local`` mode (no
        global generator exists there)."""
        decay = self.cfg.gan.ema_decay
        if decay and self.cfg.experiment.mode == "local":
            logger.warning("gan.ema_decay is ignored in experiment.mode = 'local': sites share no generator")
            decay = 0.0
        return WeightEMA(decay, prefix="generator.")

    def _make_model(self) -> nn.Module:
        return self.make_pair()

    def make_reference_classifier(self) -> GradeCNN:
        c = self.cfg.classifier
        return GradeCNN(self.image_shape[0], NUM_GRADES, width=c.width, depth=c.depth, norm="batch")

    private_module = "discriminator"

    def dp_compatible(self, model: nn.Module) -> nn.Module:
        """Only the discriminator sees real images: it alone becomes DP-compatible (the generator is
        private by post-processing, Xie et al. 2018's DPGAN argument)."""
        from fedsilo.privacy.dp import make_dp_compatible

        model.discriminator = make_dp_compatible(model.discriminator, "GAN discriminator")
        return model

    pretrained_key = "gan.pretrained"

    @property
    def pretrained_run(self) -> str:
        """``gan.pretrained``: a finished synthesis run (e.g. CT pre-training) to start from."""
        return self.cfg.gan.pretrained

    def initial_state(self, pretrained: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """DCGAN initialisation, or a pre-trained run's networks adapted to this run's images
        (:func:`~fedsilo.models.dcgan_transfer.adapt_state_dict`: channels and resolution).

        Raises
        ------
        ValueError
            When ``pretrained`` holds no generator or no discriminator.
        """
        model = self.build_model()
        if pretrained is None:
            return model.state_dict()
        for part in ("generator", "discriminator"):
            prefix = f"{part}."
            sub = {k[len(prefix):]: v for k, v in pretrained.items() if k.startswith(prefix)}
            if not sub:
                raise ValueError(f"{self.pretrained_key} = {self.pretrained_run!r} holds no {part}")
            state, summary = adapt_state_dict(sub, getattr(model, part))
            getattr(model, part).load_state_dict(state, strict=True)
            logger.info("Pre-trained %s from %s: %d copied, %d adapted, %d skipped, %d missing", part,
                        self.pretrained_run, len(summary.copied), len(summary.adapted), len(summary.skipped),
                        len(summary.missing))
            for line in summary.lines():
                logger.debug("%s: %s", part, line)
        return model.state_dict()

    def site_kept_keys(self) -> frozenset[str]:
        """``gan.federation.discriminator``: every discriminator array (local) or its normalisation
        layers' (local_norm) stay at each site; none (shared)."""
        if self._kept is None:
            sharing = self.cfg.gan.federation.discriminator
            d = self.build_model().discriminator
            keys = set(d.state_dict()) if sharing == "local" else norm_state_keys(d) if sharing == "local_norm" else set()
            if sharing == "local_norm" and not keys:
                logger.warning("gan.federation.discriminator = 'local_norm' but the discriminator has no normalisation "
                               "layers (gan.norm = %r): it is shared", self.cfg.gan.norm)
            self._kept = frozenset(f"discriminator.{k}" for k in keys)
        return self._kept

    def server_optimisers(self) -> dict[str, tuple[str, float]]:
        """``gan.federation.server_opt_g`` / ``server_opt_d`` with their learning rates."""
        f = self.cfg.gan.federation
        parts = {"generator.": (f.server_opt_g, f.server_lr_g), "discriminator.": (f.server_opt_d, f.server_lr_d)}
        return {prefix: opt for prefix, opt in parts.items() if opt[0] != "none"}

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

    def site_from_path(self, path: str, name: str) -> SiteData[Any]:
        """Deployment: a site's own fundus images (:func:`~fedsilo.data.fundus.fundus_site_from_path`)
        or abdominal slices (:func:`~fedsilo.data.abdomen.volume_site_from_path`)."""
        if self.cfg.data.source != "volumes":
            return fundus_site_from_path(self.cfg, path, name)
        from fedsilo.data.abdomen import volume_site_from_path

        site = volume_site_from_path(self.cfg, path, name)
        return SiteData(site.name, SliceImages(site.train), SliceImages(site.val), site.info)

    def pooled_train(self) -> GanImages:
        parts = [s.train for s in self.federated_data().sites]
        return SliceImages.concat(parts) if isinstance(parts[0], SliceImages) else ImageDataset.concat(parts)

    def references(self, device: torch.device) -> References:
        """The scoring networks (trained once per pooled data set, cached on disk)."""
        if self.federated_eval is not None:
            raise ValueError("gan.evaluation = 'federated' uses no reference networks trained on pooled images")
        if self._refs is None:
            self._refs = reference_networks(self, self.pooled_train(), self.test_data(), self.graded, device)
        return self._refs

    # -- learning ------------------------------------------------------------------------------

    def local_steps(self, model: nn.Module, data: GanImages, ctx: TrainContext) -> LocalSteps:
        """A discriminator phase (``gan.d_steps`` updates, the only one that reads images) and a
        generator phase per batch, each with DCGAN's Adam at its own learning rate.

        Under sample-level DP every step draws a fixed number of fakes (DP-SGD's expected batch
        size) with grades from a uniform prior, from a generator of their own: nothing the
        generator does depends on the real batch, one added image adds one clipped row to the
        discriminator's sum (sensitivity C), and the generator is private by post-processing
        (Xie et al., arXiv:1802.06739).

        With ``gan.diffaugment`` every image the discriminator sees, real or generated, in either
        phase, is transformed first (:mod:`fedsilo.augment.diffaugment`); each image's transform is
        its own, so the DP argument above is unchanged.
        """
        g = self.cfg.gan
        device, gen, cond = ctx.device, ctx.generator, g.conditional
        real_target = 1.0 - g.label_smoothing
        # DiffAugment draws from the round's generator: under DP the secure one that draws the batches
        aug = DiffAugment(g.diffaugment, gen) if g.diffaugment and gen is not None else None

        def adam_for(lr: float) -> Any:
            return lambda params, scheduled: adam(params, scheduled, g.beta1)

        def prepare(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return data.batch(idx, device)

        if ctx.private_batch_size is None:
            def d_loss(module: nn.Module, batch: Any) -> StepLoss:
                loss = discriminator_step_loss(model, module, *batch, conditional=cond, real_target=real_target,
                                               gen=gen, augment=aug)
                return loss, {"train_d_loss": loss}

            def g_loss(module: nn.Module, batch: Any) -> StepLoss:
                loss = generator_step_loss(model, module, batch[1], conditional=cond, gen=gen, augment=aug)
                return loss, {"train_g_loss": loss}
        else:
            fakes = PrivateFakes(model, ctx.private_batch_size, cond,
                                 torch_generator(self.cfg.experiment.seed, "dp-fakes", ctx.round, ctx.site_index),
                                 device)

            def d_loss(module: nn.Module, batch: Any) -> StepLoss:
                real, labels = batch
                fake, y_fake = fakes.draw(grad=False)
                x = torch.cat([real, fake]) if aug is None else aug(torch.cat([real, fake]))
                logits = module(x, torch.cat([labels, y_fake])) if cond else module(x)
                loss = discriminator_row_loss(logits[: len(real)], logits[len(real):], real_target)
                return loss, {"train_d_loss": loss}

            def g_loss(module: nn.Module, batch: Any) -> StepLoss:
                fake, y_fake = fakes.draw(grad=True)
                fake = fake if aug is None else aug(fake)
                d = model.discriminator
                loss = generator_loss(d(fake, y_fake) if cond else d(fake))
                return loss, {"train_g_loss": loss}

        return LocalSteps(prepare, [
            Phase(model.discriminator, d_loss, lr=g.lr_d, optimizer=adam_for(g.lr_d), repeats=g.d_steps,
                  has_own_rows=True),
            Phase(model.generator, g_loss, lr=g.lr_g, optimizer=adam_for(g.lr_g), reads_data=False),
        ])

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data: GanImages | None, device: torch.device) -> dict[str, float]:
        """Realism, FD, KID, precision/recall/density/coverage, diversity (and TSTR when
        conditional) of the generator on ``gan.eval_samples`` images against ``data``."""
        refs = None if self.federated_eval is not None else self.references(device)
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

    # (gan.evaluation = "federated": the feature metrics, from the sites; see federated_eval)

    def site_statistics_request(self, model: nn.Module, device: torch.device) -> dict[str, np.ndarray] | None:
        """The generated images' features and radii every site receives (federated evaluation only)."""
        if self.federated_eval is None:
            return None
        if self.cfg.privacy.active and not getattr(self, "_dp_warned", False):
            self._dp_warned = True
            logger.warning("The sites' evaluation statistics (feature moments and k-NN counts of their training "
                           "images) are not covered by the DP guarantee, as no site's validation metrics are; "
                           "raise federation.eval_every to release fewer of them")
        return self.federated_eval.request(model.generator, device)

    def site_statistics(self, site: SiteData[Any], request: Mapping[str, np.ndarray],
                        device: torch.device) -> dict[str, np.ndarray]:
        """A site's statistics over its training images (federated evaluation only)."""
        if self.federated_eval is None:
            raise ValueError("site statistics need gan.evaluation = 'federated'")
        return self.federated_eval.site(site.name, site.train, request, device)

    def combine_site_statistics(self, request: Mapping[str, np.ndarray], stats: list[Mapping[str, np.ndarray]],
                                names: list[str]) -> dict[str, float]:
        """Realism, FD, precision, recall, density and coverage from the sites' statistics."""
        if self.federated_eval is None:
            raise ValueError("site statistics need gan.evaluation = 'federated'")
        return self.federated_eval.combine(request, stats, names)

    def round_artifacts(self, model: nn.Module, rnd: int, out_dir: Any, device: torch.device) -> None:
        """``samples/round-NNN.png`` (the same 64 latent codes every round; rows of one grade when
        conditional) and, after the last round, ``samples/nearest-real.png``."""
        fake = grid_images(model.generator, self.cfg.experiment.seed, self.cfg.gan.conditional, device, GRID)
        (Path(out_dir) / "samples").mkdir(parents=True, exist_ok=True)
        save_grid_png(fake.cpu(), Path(out_dir) / "samples" / f"round-{rnd:03d}.png", nrow=8, scale=_scale(fake))
        if rnd == self.cfg.federation.rounds and self.federated_eval is None:  # (no pooled images otherwise)
            self.nearest_real_grid(fake[:8], Path(out_dir) / "samples" / "nearest-real.png")

    def nearest_real_grid(self, fake: torch.Tensor, path: Path) -> Path:
        """Top row: generated images; bottom row: the closest pooled training image of each (pixels)."""
        real, _ = all_images(self.pooled_train())
        idx, _ = nearest_neighbours(fake.cpu(), real, k=1)
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
        if self.federated_eval is not None:
            return images, torch.zeros(n, dtype=torch.long), (
                "none (an unconditional generator evaluated federatedly: no grade classifier was trained on "
                "pooled images to grade it; label 0)")
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


def _scale(images: torch.Tensor) -> int:
    """Enlargement of sample grids: small images (28-32 px) x3, 64 px x2, larger ones as they are."""
    side = images.shape[-1]
    return 3 if side <= 32 else 2 if side <= 64 else 1
