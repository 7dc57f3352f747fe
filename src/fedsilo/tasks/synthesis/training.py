"""Training loops of the synthesis task: the DCGAN (local rounds, the reference GAN) and the small
DR-grade classifiers (the reference feature extractor, train-on-synthetic utility)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fedsilo.data.images import iterate_batches
from fedsilo.models.classifier import GradeCNN
from fedsilo.models.dcgan import sample_latent
from fedsilo.models.gan_losses import discriminator_loss, generator_loss
from fedsilo.tasks.synthesis.model import GANPair


def adam(params: Iterable[nn.Parameter], lr: float, beta1: float) -> torch.optim.Adam:
    """Adam with DCGAN's betas ``(beta1, 0.999)``."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))


def fake_labels(real_labels: torch.Tensor, conditional: bool, gen: torch.Generator) -> torch.Tensor | None:
    """Grades for generated images: the real batch's grades in a random order (the site's own grade
    mix), or None for an unconditional GAN."""
    if not conditional:
        return None
    perm = torch.randperm(len(real_labels), generator=gen).to(real_labels.device)
    return real_labels[perm]


def gan_step(pair: GANPair, real: torch.Tensor, labels: torch.Tensor, opt_d: torch.optim.Optimizer,
             opt_g: torch.optim.Optimizer, *, conditional: bool, real_target: float, d_steps: int,
             gen: torch.Generator, extra_d: Callable[[], torch.Tensor | float] = lambda: 0.0,
             extra_g: Callable[[], torch.Tensor | float] = lambda: 0.0) -> tuple[float, float]:
    """One generator step after ``d_steps`` discriminator steps on a real batch ``(B, C, H, W)``.

    Non-saturating BCE losses (Goodfellow et al. 2014; :mod:`fedsilo.models.gan_losses`);
    ``extra_d``/``extra_g`` add terms such as FedProx's proximal pull. Returns (D loss, G loss).
    """
    g, d = pair.generator, pair.discriminator
    b, device = len(real), real.device
    y_real = labels if conditional else None
    d_loss = torch.zeros(())
    for _ in range(d_steps):
        y_fake = fake_labels(labels, conditional, gen)
        with torch.no_grad():
            fake = g(sample_latent(b, g.latent_dim, gen, device), y_fake)
        real_logits = d(real, y_real) if conditional else d(real)
        fake_logits = d(fake, y_fake) if conditional else d(fake)
        d_loss = discriminator_loss(real_logits, fake_logits, real_target)
        opt_d.zero_grad(set_to_none=True)
        (d_loss + extra_d()).backward()
        opt_d.step()
    y_fake = fake_labels(labels, conditional, gen)
    fake = g(sample_latent(b, g.latent_dim, gen, device), y_fake)
    g_loss = generator_loss(d(fake, y_fake) if conditional else d(fake))
    opt_g.zero_grad(set_to_none=True)
    (g_loss + extra_g()).backward()
    opt_g.step()
    return float(d_loss.detach()), float(g_loss.detach())


def train_classifier(model: GradeCNN, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
                     gen: torch.Generator, lr: float = 1e-3) -> GradeCNN:
    """Train a grade classifier on images ``(N, C, H, W)`` in [-1, 1] and grades ``(N,)`` with Adam,
    cross-entropy and random horizontal flips; returns it in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in iterate_batches(len(x), batch_size, generator=gen, shuffle=True):
            xb, yb = x[idx], y[idx]
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(xb.device)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()
