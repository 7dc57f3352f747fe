"""Training loops of the synthesis task: the DCGAN (local rounds, the reference GAN) and the small
DR-grade classifiers (the reference feature extractor, train-on-synthetic utility)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fedsilo.data.fundus import NUM_GRADES
from fedsilo.data.images import iterate_batches
from fedsilo.models.classifier import GradeCNN
from fedsilo.models.dcgan import sample_latent
from fedsilo.models.gan_losses import discriminator_loss, generator_loss
from fedsilo.tasks.synthesis.model import GANPair

#: A differentiable transform of images ``(B, C, H, W)`` applied before the discriminator (DiffAugment).
Augment = Callable[[torch.Tensor], torch.Tensor]


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


class PrivateFakes:
    """Fakes for DP-SGD steps: always ``m`` of them (``train.batch_size``, whatever the real batch
    and the site's size), grades uniform over the DR grades when conditional, drawn from a
    generator of their own, so that nothing about them depends on the site's real data.

    Parameters
    ----------
    pair
        The GAN whose generator draws them.
    m
        Fakes per draw (>= 1).
    conditional
        Whether the GAN is conditional on the grade.
    gen
        Generator of the latent codes and grades (not the one that draws Poisson batches).
    device
        Where the fakes live.
    """

    def __init__(self, pair: GANPair, m: int, conditional: bool, gen: torch.Generator,
                 device: torch.device) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.pair, self.m, self.conditional, self.gen, self.device = pair, m, conditional, gen, device

    def draw(self, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``m`` fakes ``(m, C, H, W)`` and their grades ``(m,)`` (None when unconditional); with
        ``grad`` the generator's graph is kept (its own step), else they are detached."""
        g = self.pair.generator
        y = (torch.randint(0, NUM_GRADES, (self.m,), generator=self.gen).to(self.device)
             if self.conditional else None)
        z = sample_latent(self.m, g.latent_dim, self.gen, self.device)
        with torch.enable_grad() if grad else torch.no_grad():
            return g(z, y), y


def discriminator_step_loss(pair: GANPair, discriminator: nn.Module, real: torch.Tensor, labels: torch.Tensor, *,
                            conditional: bool, real_target: float, gen: torch.Generator,
                            augment: Augment | None = None) -> torch.Tensor:
    """The discriminator's loss on a real batch ``(B, C, H, W)`` and as many fresh fakes (grades:
    the real batch's, shuffled). ``discriminator`` is ``pair.discriminator`` as the caller runs it;
    ``augment`` (DiffAugment) transforms the real and the fake images before it sees them."""
    g = pair.generator
    y_fake = fake_labels(labels, conditional, gen)
    with torch.no_grad():
        fake = g(sample_latent(len(real), g.latent_dim, gen, real.device), y_fake)
    if augment is not None:
        real, fake = augment(real), augment(fake)
    real_logits = discriminator(real, labels) if conditional else discriminator(real)
    fake_logits = discriminator(fake, y_fake) if conditional else discriminator(fake)
    return discriminator_loss(real_logits, fake_logits, real_target)


def generator_step_loss(pair: GANPair, generator: nn.Module, labels: torch.Tensor, *, conditional: bool,
                        gen: torch.Generator, augment: Augment | None = None) -> torch.Tensor:
    """The generator's non-saturating loss on ``len(labels)`` fresh fakes (grades: ``labels``
    shuffled), scored by ``pair.discriminator``. ``generator`` is ``pair.generator`` as the caller
    runs it; ``augment`` (DiffAugment) transforms the fakes differentiably before the discriminator."""
    y_fake = fake_labels(labels, conditional, gen)
    fake = generator(sample_latent(len(labels), pair.generator.latent_dim, gen, labels.device), y_fake)
    if augment is not None:
        fake = augment(fake)
    d = pair.discriminator
    return generator_loss(d(fake, y_fake) if conditional else d(fake))


def gan_step(pair: GANPair, real: torch.Tensor, labels: torch.Tensor, opt_d: torch.optim.Optimizer,
             opt_g: torch.optim.Optimizer, *, conditional: bool, real_target: float, d_steps: int,
             gen: torch.Generator) -> tuple[float, float]:
    """One generator step after ``d_steps`` discriminator steps on a real batch ``(B, C, H, W)``
    (the reference GAN's centralised training; sites train through :mod:`fedsilo.training`).

    Non-saturating BCE losses (Goodfellow et al. 2014; :mod:`fedsilo.models.gan_losses`).
    Returns (D loss, G loss).
    """
    d_loss = torch.zeros(())
    for _ in range(d_steps):
        d_loss = discriminator_step_loss(pair, pair.discriminator, real, labels, conditional=conditional,
                                         real_target=real_target, gen=gen)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
    g_loss = generator_step_loss(pair, pair.generator, labels, conditional=conditional, gen=gen)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
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
