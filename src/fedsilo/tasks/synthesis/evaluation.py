"""Scoring a generator: realism, Fréchet distance, KID, precision/recall/density/coverage,
MS-SSIM diversity and, for a conditional generator, train-on-synthetic-test-on-real utility.

Metric names (the server logs them as ``test_*``): ``realism``, ``fd``, ``kid``, ``precision``,
``recall``, ``density``, ``coverage``, ``diversity`` (1 - MS-SSIM), ``tstr_accuracy``,
``tstr_kappa`` (with ``trtr_*``, the same classifier trained on real images); each with ``_n``
(generated images) and, where meaningful, ``_ci_low``/``_ci_high`` (95%).

This module scores at the coordinator. With ``gan.evaluation = "federated"`` it computes only
diversity and TSTR here; realism, FD and precision/recall/density/coverage are combined from the
sites' statistics (:mod:`~fedsilo.tasks.synthesis.federated_eval`), and KID and ``trtr_*`` are not
computed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedsilo.models.classifier import GradeCNN
from fedsilo.models.dcgan import DCGANGenerator, sample_latent
from fedsilo.seeding import derive_seed
from fedsilo.tasks.classification.metrics import grading_metrics
from fedsilo.tasks.synthesis.diversity import ms_ssim_diversity
from fedsilo.tasks.synthesis.features import FeatureAdapter
from fedsilo.tasks.synthesis.manifold import precision_recall_density_coverage
from fedsilo.tasks.synthesis.metrics import frechet_distance, kernel_inception_distance, realism_score
from fedsilo.tasks.synthesis.references import NUM_GRADES, References
from fedsilo.tasks.synthesis.stats import MetricResult
from fedsilo.tasks.synthesis.training import train_classifier

BOOTSTRAP = 200


def grid_images(generator: DCGANGenerator, seed: int, conditional: bool, device: torch.device,
                n: int = 64) -> torch.Tensor:
    """The ``n`` images ``(n, C, H, W)`` of a run's sample grids: latent codes drawn with the run's
    ``seed`` and, when ``conditional``, rows of 8 of one grade (0-4, repeating); the same for every
    round and every run of that seed, so grids differ only by the generator."""
    grades = torch.arange(n) // 8 % NUM_GRADES if conditional else None
    return generate(generator, n, derive_seed(seed, "grid-z"), device, grades)


def generate(generator: DCGANGenerator, n: int, seed: int, device: torch.device,
             grades: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """``n`` images ``(n, C, H, W)`` in [-1, 1] from latent codes drawn with ``seed`` (and grades ``(n,)``
    for a conditional generator); eval mode, no gradients, the generator's mode restored."""
    gen = torch.Generator().manual_seed(seed)
    z = sample_latent(n, generator.latent_dim, gen)
    was = generator.training
    generator.eval()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, n, batch_size):
                y = None if grades is None else grades[s : s + batch_size].to(device)
                out.append(generator(z[s : s + batch_size].to(device), y).float())
    finally:
        generator.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def balanced_grades(n: int, seed: int) -> torch.Tensor:
    """``n`` grades, as equal in number as possible, in a seeded random order."""
    grades = torch.arange(n) % NUM_GRADES
    return grades[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def flat(result: MetricResult, name: str | None = None) -> dict[str, float]:
    key = name or result.name
    out = {key: result.value, f"{key}_n": float(result.n)}
    if result.ci_low is not None and result.ci_high is not None:
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = result.ci_low, result.ci_high
    return out


def generator_metrics(generator: DCGANGenerator, refs: References | None, real: torch.Tensor | None,
                      real_grades: torch.Tensor | None, *, n: int, seed: int, device: torch.device,
                      conditional: bool, tstr_epochs: int, batch_size: int,
                      make_classifier: Callable[[], GradeCNN]) -> dict[str, float]:
    """Every score of ``generator`` against held-out ``real`` images ``(M, C, H, W)`` (see module doc).

    With ``refs`` None (``gan.evaluation = "federated"``) only what needs no network trained on
    pooled images: diversity, and TSTR when conditional (without the train-on-real baseline);
    realism, FD and precision/recall come from the sites
    (:mod:`~fedsilo.tasks.synthesis.federated_stats`).
    """
    grades = balanced_grades(n, seed) if conditional else None
    fake = generate(generator, n, seed, device, grades)
    labels = None if grades is None else grades.to(device)
    out = {} if refs is None else flat(realism_score(refs.discriminator, fake, labels, n_bootstrap=BOOTSTRAP,
                                                      seed=seed))
    out.update(flat(ms_ssim_diversity(fake, n_pairs=min(500, n * (n - 1) // 2), seed=seed, n_bootstrap=BOOTSTRAP),
                     "diversity"))
    if real is None or len(real) < 6 or (refs is not None and refs.classifier is None):
        return out
    if refs is not None:
        features = FeatureAdapter(refs.classifier.features, num_features=refs.classifier.num_features)
        fr, ff = features(real.to(device)), features(fake)
        out.update(flat(frechet_distance(fr, ff, n_bootstrap=BOOTSTRAP, seed=seed)))
        out.update(flat(kernel_inception_distance(fr, ff, subsets=50, seed=seed)))
        for result in precision_recall_density_coverage(fr, ff, n_bootstrap=BOOTSTRAP, seed=seed).values():
            out.update(flat(result))
    if conditional and real_grades is not None:
        clf = make_classifier().to(device)
        train_classifier(clf, fake, labels, epochs=tstr_epochs, batch_size=batch_size,
                         gen=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            m = grading_metrics(clf(real.to(device)).float().cpu(), real_grades.cpu(), ci_seed=seed)
        out.update({"tstr_accuracy": m["accuracy"], "tstr_kappa": m["kappa"]})
        out.update({f"tstr_{k}": v for k, v in m.items() if k.endswith(("_ci_low", "_ci_high"))})
        if refs is not None:
            out.update(refs.real_baseline)
    return out


def discriminator_view(d: nn.Module, g: DCGANGenerator, real: torch.Tensor, seed: int, device: torch.device,
                       real_grades: torch.Tensor | None, conditional: bool) -> dict[str, float]:
    """A site's cheap check of the global GAN: mean ``sigmoid(D)`` on its validation images and on as
    many generated ones (``d_real``, ``d_fake``; 0.5/0.5 = D cannot tell them apart)."""
    grades = real_grades if conditional else None
    fake = generate(g, len(real), seed, device, grades)
    with torch.no_grad():
        was = d.training
        d.eval()
        try:
            args_r = (real.to(device),) if grades is None else (real.to(device), grades.to(device))
            args_f = (fake,) if grades is None else (fake, grades.to(device))
            d_real = float(torch.sigmoid(d(*args_r).reshape(-1)).mean())
            d_fake = float(torch.sigmoid(d(*args_f).reshape(-1)).mean())
        finally:
            d.train(was)
    return {"d_real": d_real, "d_fake": d_fake}
