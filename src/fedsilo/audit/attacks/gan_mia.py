"""Membership inference against GANs, and the FedGAN paper's real-vs-synthetic detector.

- **LOGAN white-box** (Hayes et al., "LOGAN: Membership inference attacks against generative
  models", PoPETs 2019): the discriminator, trained to say "real" on the training images, says
  it more confidently on its members; score = ``D(x)`` (logit).
- **GAN-Leaks full black-box** (Chen et al., "GAN-Leaks: A taxonomy of membership inference
  attacks against generative models", CCS 2020): draw many samples ``G(z)``; a member tends to
  have a closer sample; score = ``-min_j ||x - G(z_j)||`` (pixel space or a feature space).
- **GAN-Leaks white-box / partial black-box**: the latent optimisation of
  :mod:`~fedsilo.audit.attacks.inversion`; score = ``-min_z ||G(z) - x||^2``.
  Both GAN-Leaks scores may be *calibrated* with a reference generator trained without the
  targets (score difference), which removes the per-image difficulty of being reconstructed.
- **Real-vs-synthetic detector** (the FedGAN paper's "membership inference", Kamran et al.,
  PLOS ONE 2025): a classifier separating real from generated images. Its accuracy measures
  *realism* (0.5 = indistinguishable), not membership: it never asks whether an image was in the
  training set. It is reported with ``kind = "realism"`` and must never be read as privacy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedsilo.audit.attacks.inversion import inversion_attack
from fedsilo.audit.attacks.metrics import AttackResult, attack_result

#: ``sampler(n, generator) -> (n, C, H, W)`` synthetic images.
Sampler = Callable[[int, torch.Generator], Tensor]
#: ``feature_fn(images (N, C, H, W)) -> (N, d)``.
FeatureFn = Callable[[Tensor], Tensor]


def generator_sampler(generator: nn.Module, latent_dim: int | None = None, num_classes: int | None = None,
                      batch_size: int = 256) -> Sampler:
    """A :data:`Sampler` for a (conditional) generator with ``latent_dim`` / ``num_classes``
    attributes (as :class:`fedsilo.models.dcgan.DCGANGenerator`): z ~ N(0, I), labels uniform."""
    dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    classes = num_classes if num_classes is not None else int(getattr(generator, "num_classes", 0) or 0)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"latent_dim must be a positive int (or the generator's latent_dim attribute), got {dim!r}")

    def sample(n: int, gen: torch.Generator) -> Tensor:
        device = next(iter(generator.parameters())).device
        was = generator.training
        generator.eval()
        out = []
        try:
            with torch.no_grad():
                for s in range(0, n, batch_size):
                    b = min(batch_size, n - s)
                    z = torch.randn(b, dim, generator=gen).to(device)
                    if classes:
                        labels = torch.randint(0, classes, (b,), generator=gen).to(device)
                        out.append(generator(z, labels))
                    else:
                        out.append(generator(z))
        finally:
            generator.train(was)
        return torch.cat(out)

    return sample


def discriminator_scores(discriminator: nn.Module, images: Tensor, labels: Tensor | None = None,
                         batch_size: int = 256) -> np.ndarray:
    """``D(x)`` logits ``(N,)`` in eval mode (training flag restored)."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    device = next(iter(discriminator.parameters())).device
    was = discriminator.training
    discriminator.eval()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                x = images[s:s + batch_size].to(device)
                logits = discriminator(x) if labels is None else discriminator(x, labels[s:s + batch_size].to(device))
                out.append(logits.reshape(len(x), -1).mean(1).float().cpu())
    finally:
        discriminator.train(was)
    return torch.cat(out).numpy().astype(np.float64)


def logan_attack(discriminator: nn.Module, members: Tensor, nonmembers: Tensor, *,
                 member_labels: Tensor | None = None, nonmember_labels: Tensor | None = None) -> AttackResult:
    """LOGAN white-box attack (Hayes et al. 2019): score = the discriminator's logit."""
    s_mem = discriminator_scores(discriminator, members, member_labels)
    s_non = discriminator_scores(discriminator, nonmembers, nonmember_labels)
    return attack_result("logan", s_mem, s_non, details={"mean_member_logit": float(s_mem.mean()),
                                                         "mean_nonmember_logit": float(s_non.mean())})


def _nearest_sample_distance(images: Tensor, samples: Tensor, feature_fn: FeatureFn | None) -> Tensor:
    from fedsilo.tasks.synthesis.manifold import nearest_neighbours

    _, dist = nearest_neighbours(images, samples, feature_fn, k=1)
    return dist[:, 0]


def gan_leaks_blackbox(sampler: Sampler, members: Tensor, nonmembers: Tensor, *, num_samples: int = 2000,
                       seed: int = 0, feature_fn: FeatureFn | None = None,
                       reference: Sampler | None = None) -> AttackResult:
    """GAN-Leaks full black-box attack (Chen et al. 2020): score = ``-`` distance to the nearest of
    ``num_samples`` generated images (calibrated by a ``reference`` sampler's distance if given)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    samples = sampler(num_samples, torch.Generator().manual_seed(seed))
    d_mem = _nearest_sample_distance(members, samples.to(members.device), feature_fn)
    d_non = _nearest_sample_distance(nonmembers, samples.to(nonmembers.device), feature_fn)
    details = {"num_samples": num_samples, "member_distance": float(d_mem.mean()),
               "nonmember_distance": float(d_non.mean()), "calibrated": reference is not None}
    s_mem, s_non = -d_mem, -d_non
    if reference is not None:
        ref = reference(num_samples, torch.Generator().manual_seed(seed + 1))
        s_mem = s_mem + _nearest_sample_distance(members, ref.to(members.device), feature_fn)
        s_non = s_non + _nearest_sample_distance(nonmembers, ref.to(nonmembers.device), feature_fn)
    return attack_result("gan_leaks_blackbox", s_mem, s_non, details=details)


def gan_leaks_whitebox(generator: nn.Module, members: Tensor, nonmembers: Tensor, *,
                       reference: nn.Module | None = None, **kwargs: object) -> AttackResult:
    """GAN-Leaks white-box attack (Chen et al. 2020): score = ``-`` reconstruction error of the
    best latent code (:func:`~fedsilo.audit.attacks.inversion.invert_generator` arguments)."""
    result, _, _ = inversion_attack(generator, members, nonmembers, reference=reference, name="gan_leaks_whitebox",
                                    **kwargs)
    return result


def real_vs_synthetic_detector(real: Tensor, synthetic: Tensor, *, seed: int = 0, feature_fn: FeatureFn | None = None,
                               steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-3) -> AttackResult:
    """The FedGAN paper's detector, labelled as what it is: a **realism** test.

    A logistic-regression classifier (on standardised pixels, or ``feature_fn`` features) is
    trained on a random half of the real and of the synthetic images and scored on the other halves;
    ``auc`` / ``balanced_accuracy`` near 0.5 mean the synthetic images are hard to tell from
    real ones. Positives are *real* images, not members: this says nothing about membership.
    """
    if len(real) < 4 or len(synthetic) < 4:
        raise ValueError(f"real and synthetic must hold at least 4 images each, got {len(real)} and {len(synthetic)}")
    fr = feature_fn(real) if feature_fn is not None else real.flatten(1)
    fs = feature_fn(synthetic) if feature_fn is not None else synthetic.flatten(1)
    if fr.shape[1:] != fs.shape[1:]:
        raise ValueError(f"real and synthetic features differ in shape: {tuple(fr.shape)} and {tuple(fs.shape)}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([fr, fs]).detach().float().cpu()
    y = torch.cat([torch.ones(len(fr)), torch.zeros(len(fs))])
    test_mask = torch.zeros(len(x), dtype=torch.bool)  # half of each class held out for testing
    test_mask[torch.randperm(len(fr), generator=gen)[: len(fr) // 2]] = True
    test_mask[len(fr) + torch.randperm(len(fs), generator=gen)[: len(fs) // 2]] = True
    mean, std = x[~test_mask].mean(0), x[~test_mask].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    xt, yt = x[~test_mask], y[~test_mask]
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = (x[test_mask] @ w + b).numpy()
    labels = y[test_mask].numpy().astype(bool)
    accuracy = float(((scores > 0) == labels).mean())
    return attack_result("real_vs_synthetic", scores[labels], scores[~labels], kind="realism",
                         details={"accuracy": accuracy, "note": "realism test (FedGAN paper's detector), "
                                  "not a membership attack"})


__all__ = [
    "FeatureFn",
    "Sampler",
    "discriminator_scores",
    "gan_leaks_blackbox",
    "gan_leaks_whitebox",
    "generator_sampler",
    "logan_attack",
    "real_vs_synthetic_detector",
]
