"""Model inversion of a generator: the latent code whose image is closest to a target image.

For each target image ``x`` the attacker minimises ``||G(z) - x||^2`` over ``z`` (Adam, several
random restarts, the best kept), as in the FedGAN paper's model-inversion experiment (Kamran et
al., PLOS ONE 2025) and the white-box attack of GAN-Leaks (Chen et al., CCS 2020). Reconstruction
quality (MSE, SSIM) on the sites' training images vs never-used images says whether the
generator memorised its members; :func:`inversion_attack` turns that into a membership attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedsilo.audit.attacks.metrics import AttackResult, attack_result, ssim


@dataclass
class InversionResult:
    """Best reconstruction per target.

    Attributes
    ----------
    latents
        ``(N, latent_dim)`` optimised codes.
    reconstructions
        ``(N, C, H, W)`` ``G(z)``.
    mse, ssim
        ``(N,)`` per-image mean squared error and SSIM against the targets.
    """

    latents: Tensor
    reconstructions: Tensor
    mse: Tensor
    ssim: Tensor


def _latent_dim(generator: nn.Module, latent_dim: int | None) -> int:
    dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"latent_dim must be a positive int (or the generator's latent_dim attribute), got {dim!r}")
    return dim


def invert_generator(generator: nn.Module, targets: Tensor, *, labels: Tensor | None = None,
                     latent_dim: int | None = None, steps: int = 200, lr: float = 0.05, restarts: int = 2,
                     latent_penalty: float = 0.0, seed: int = 0, batch_size: int = 256) -> InversionResult:
    """Optimise one latent code per target image so that ``G(z)`` matches it.

    Parameters
    ----------
    generator
        ``G(z)`` or ``G(z, labels)`` -> images ``(B, C, H, W)``; evaluated in eval mode (restored).
    targets
        ``(N, C, H, W)`` images in the generator's range.
    labels
        ``(N,)`` class labels for a conditional generator (the attacker is given them), else None.
    latent_dim
        Size of z (default: ``generator.latent_dim``).
    steps, lr
        Adam iterations and learning rate on z.
    restarts
        Random starts per target; the lowest-MSE result is kept.
    latent_penalty
        Weight of ``||z||^2 / latent_dim`` keeping z near the prior.
    seed
        Seed of the initial codes.
    """
    if targets.dim() != 4 or len(targets) == 0:
        raise ValueError(f"targets must be a non-empty batch (N, C, H, W), got shape {tuple(targets.shape)}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    if labels is not None and labels.shape != (len(targets),):
        raise ValueError(f"labels must have shape ({len(targets)},), got {tuple(labels.shape)}")
    dim = _latent_dim(generator, latent_dim)
    device = targets.device
    gen = torch.Generator().manual_seed(seed)
    was = generator.training
    generator.eval()
    params = [p.requires_grad for p in generator.parameters()]
    for p in generator.parameters():
        p.requires_grad_(False)
    best_z, best_x, best_mse = [], [], []
    try:
        for s in range(0, len(targets), batch_size):
            tgt = targets[s:s + batch_size].detach()
            lab = None if labels is None else labels[s:s + batch_size].to(device)
            top_mse = torch.full((len(tgt),), float("inf"), device=device)
            top_z = torch.zeros(len(tgt), dim, device=device)
            top_x = torch.zeros_like(tgt)
            for _ in range(restarts):
                z = torch.randn(len(tgt), dim, generator=gen).to(device).requires_grad_(True)
                opt = torch.optim.Adam([z], lr=lr)
                for _ in range(steps):
                    x = generator(z) if lab is None else generator(z, lab)
                    per = (x - tgt).pow(2).flatten(1).mean(1)
                    loss = per.sum() + latent_penalty * z.pow(2).mean(1).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    x = generator(z) if lab is None else generator(z, lab)
                    per = (x - tgt).pow(2).flatten(1).mean(1)
                    better = per < top_mse
                    top_mse = torch.where(better, per, top_mse)
                    top_z[better], top_x[better] = z.detach()[better], x[better]
            best_z.append(top_z)
            best_x.append(top_x)
            best_mse.append(top_mse)
    finally:
        for p, flag in zip(generator.parameters(), params, strict=True):
            p.requires_grad_(flag)
        generator.train(was)
    recon = torch.cat(best_x)
    return InversionResult(torch.cat(best_z), recon, torch.cat(best_mse), ssim(recon, targets.detach()))


def inversion_attack(generator: nn.Module, members: Tensor, nonmembers: Tensor, *,
                     member_labels: Tensor | None = None, nonmember_labels: Tensor | None = None,
                     reference: nn.Module | None = None, name: str = "inversion",
                     **kwargs: object) -> tuple[AttackResult, InversionResult, InversionResult]:
    """Membership by reconstruction error: score ``-MSE(G(z*), x)``; with a ``reference``
    generator (trained without the targets) the score is calibrated: ``MSE_ref - MSE_target``
    (Chen et al. 2020, Sec. 5.4). Extra keyword arguments go to :func:`invert_generator`."""
    mem = invert_generator(generator, members, labels=member_labels, **kwargs)  # type: ignore[arg-type]
    non = invert_generator(generator, nonmembers, labels=nonmember_labels, **kwargs)  # type: ignore[arg-type]
    s_mem, s_non = -mem.mse, -non.mse
    if reference is not None:
        s_mem = s_mem + invert_generator(reference, members, labels=member_labels, **kwargs).mse  # type: ignore[arg-type]
        s_non = s_non + invert_generator(reference, nonmembers, labels=nonmember_labels, **kwargs).mse  # type: ignore[arg-type]
    details = {"member_mse": float(mem.mse.mean()), "nonmember_mse": float(non.mse.mean()),
               "member_ssim": float(mem.ssim.mean()), "nonmember_ssim": float(non.ssim.mean()),
               "calibrated": reference is not None}
    return attack_result(name, s_mem, s_non, details=details), mem, non


__all__ = ["InversionResult", "inversion_attack", "invert_generator"]
