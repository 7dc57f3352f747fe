"""Reference networks that score a generator, trained once, centrally, on the pooled real images.

- A **reference discriminator**: the discriminator of a DCGAN trained centrally on the pooled
  real training images; its mean ``sigmoid`` on generated images is the FedGAN paper's realism
  score (Kamran et al., PLOS ONE 2025).
- A **reference DR-grade classifier** (:class:`~fedsilo.models.classifier.GradeCNN`) trained on the
  same images; its penultimate features are the space of Fréchet distance, KID and
  precision/recall (no Inception-v3 weights are available offline; these numbers are therefore
  not comparable with published FIDs), and its test accuracy/kappa is the train-on-real
  baseline of the conditional model's utility.

Both depend only on the pooled images, the architecture settings and the seed, so they are
cached on disk (``$FEDSILO_CACHE`` or ``~/.cache/fedsilo``, ``gan-references/``) and shared by
every run of a sweep that pools the same images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedsilo.data.cache import default_cache_dir
from fedsilo.data.images import iterate_batches
from fedsilo.fileio import atomic_torch_save
from fedsilo.models.classifier import GradeCNN
from fedsilo.seeding import derive_seed
from fedsilo.tasks.classification.metrics import grading_metrics
from fedsilo.tasks.synthesis.data import GanImages, all_images, content_hash
from fedsilo.tasks.synthesis.training import adam, gan_step, train_classifier

logger = logging.getLogger(__name__)

NUM_GRADES = 5


@dataclass
class References:
    """The scoring networks (eval mode) and the train-on-real baseline (None without grades)."""

    discriminator: torch.nn.Module
    classifier: GradeCNN | None
    real_baseline: dict[str, float]


def _settings(task: Any) -> dict[str, Any]:
    cfg = task.cfg
    g, c = cfg.gan, cfg.classifier
    return {"version": 1, "seed": cfg.experiment.seed, "epochs": g.reference_epochs, "batch": cfg.train.batch_size,
            "latent": g.latent_dim, "g_width": g.g_width, "d_width": g.d_width, "norm": g.norm,
            "conditional": g.conditional, "smoothing": g.label_smoothing, "lr": [g.lr_g, g.lr_d], "beta1": g.beta1,
            "classifier": [c.width, c.depth]}


def reference_networks(task: Any, pooled: GanImages, test: GanImages | None, graded: bool,
                       device: torch.device) -> References:
    """Load the references for ``pooled`` from the cache, or train and cache them."""
    settings = _settings(task)
    key = hashlib.sha256((content_hash(pooled) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:24]
    path = default_cache_dir() / "gan-references" / f"{key}.pt"
    pair = task.make_pair(reference=True)
    classifier = task.make_reference_classifier() if graded else None
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
            pair.discriminator.load_state_dict(saved["discriminator"])
            if classifier is not None:
                classifier.load_state_dict(saved["classifier"])
            logger.info("Reference networks from cache %s", path)
            return References(pair.discriminator.to(device).eval(),
                              None if classifier is None else classifier.to(device).eval(), saved["real_baseline"])
        except (OSError, KeyError, RuntimeError) as exc:
            logger.warning("Ignoring unreadable reference cache %s (%s); retraining", path, exc)
    seed = task.cfg.experiment.seed
    logger.info("Training the reference GAN and classifier on %d pooled real images (%d epochs; cached in %s)",
                len(pooled), settings["epochs"], path.parent)
    x, y = all_images(pooled, device)
    gen = torch.Generator().manual_seed(derive_seed(seed, "reference-gan"))
    pair.to(device).train()
    g = task.cfg.gan
    opt_d, opt_g = adam(pair.discriminator.parameters(), g.lr_d, g.beta1), adam(pair.generator.parameters(), g.lr_g,
                                                                                 g.beta1)
    for _ in range(settings["epochs"]):
        for idx in iterate_batches(len(x), task.cfg.train.batch_size, generator=gen, shuffle=True, drop_last=True):
            gan_step(pair, x[idx], y[idx], opt_d, opt_g, conditional=g.conditional,
                     real_target=1.0 - g.label_smoothing, d_steps=g.d_steps, gen=gen)
    baseline: dict[str, float] = {}
    if classifier is not None:
        cgen = torch.Generator().manual_seed(derive_seed(seed, "reference-classifier"))
        train_classifier(classifier.to(device), x, y, epochs=settings["epochs"], batch_size=task.cfg.train.batch_size,
                         gen=cgen)
        if test is not None and len(test):
            tx, ty = all_images(test, device)
            with torch.no_grad():
                m = grading_metrics(classifier(tx).float().cpu(), ty.cpu())
            baseline = {"trtr_accuracy": m["accuracy"], "trtr_kappa": m["kappa"]}
    atomic_torch_save({"discriminator": pair.discriminator.state_dict(),
                       "classifier": None if classifier is None else classifier.state_dict(),
                       "real_baseline": baseline, "settings": settings}, Path(path))
    return References(pair.discriminator.eval(), None if classifier is None else classifier.eval(), baseline)
