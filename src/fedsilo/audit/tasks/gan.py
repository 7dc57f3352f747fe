"""The GAN audit every generative task can run: LOGAN, GAN-Leaks (black- and white-box), model
inversion, distance to closest record and the FedGAN paper's real-vs-synthetic detector.

A task's plug-in picks its generator, discriminator, members and non-members and calls
:func:`gan_outcome`; e.g. for the synthesis task (``fedsilo/privacy/audits/synthesis.py``)::

    @register_audit("synthesis", "gan")
    def gan(ctx):
        members, nonmembers = ...  # sites' training images, never-used images, (N, C, H, W) in [-1, 1]
        return gan_outcome(ctx, ctx.model.generator, ctx.model.discriminator, members, nonmembers)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedsilo import progress
from fedsilo.audit.attacks.dcr import dcr_grid, dcr_result, distance_to_closest_record
from fedsilo.audit.attacks.gan_mia import (
    Sampler,
    gan_leaks_blackbox,
    generator_sampler,
    logan_attack,
    real_vs_synthetic_detector,
)
from fedsilo.audit.attacks.inversion import inversion_attack
from fedsilo.audit.registry import AuditContext, AuditOutcome


def _subsample(x: Tensor, labels: Tensor | None, k: int, rng: np.random.Generator) -> tuple[Tensor, Tensor | None]:
    if len(x) <= k:
        return x, labels
    idx = torch.as_tensor(np.sort(rng.choice(len(x), k, replace=False)))
    return x[idx], None if labels is None else labels[idx]


def _reconstruction_grid(targets: Tensor, recon: Tensor, path, n: int = 8):
    import matplotlib.image

    from fedsilo.tasks.synthesis.grids import sample_grid

    k = min(n, len(targets))
    grid = sample_grid(torch.cat([targets[:k].cpu(), recon[:k].cpu().clamp(-1, 1)]), nrow=k)
    matplotlib.image.imsave(path, grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
                            cmap="gray" if grid.shape[-1] == 1 else None)
    return path


def gan_outcome(ctx: AuditContext, generator: nn.Module, discriminator: nn.Module | None, members: Tensor,
                nonmembers: Tensor, *, member_labels: Tensor | None = None, nonmember_labels: Tensor | None = None,
                sampler: Sampler | None = None, feature_fn: Callable[[Tensor], Tensor] | None = None) -> AuditOutcome:
    """Run the GAN attacks on one generator (and its discriminator) against members/non-members.

    Parameters
    ----------
    ctx
        The audit context (settings: ``gan_samples``, ``latent_steps``, ``latent_restarts``,
        ``max_targets``, ``max_samples``).
    generator, discriminator
        The trained networks (``discriminator`` None skips LOGAN).
    members, nonmembers
        ``(N, C, H, W)`` images in [-1, 1]: the sites' training images and never-used images.
    member_labels, nonmember_labels
        Class labels for conditional networks, else None.
    sampler
        Draws synthetic images (default: z ~ N(0, I), uniform labels; see ``generator_sampler``).
    feature_fn
        Feature space for the distance attacks (default: pixels).
    """
    s = ctx.settings
    rng = np.random.default_rng(ctx.seed("gan-targets"))
    k = min(s.max_samples, len(members), len(nonmembers))
    mem, mem_y = _subsample(members, member_labels, k, rng)
    non, non_y = _subsample(nonmembers, nonmember_labels, k, rng)
    mem, non = mem.to(ctx.device), non.to(ctx.device)
    sampler = sampler or generator_sampler(generator)
    attacks = []
    stages = 4 + (discriminator is not None)

    def done(what: str) -> None:
        progress.current().step("audit: GAN attacks", len(attacks), stages, what)

    if discriminator is not None:
        attacks.append(logan_attack(discriminator, mem, non, member_labels=mem_y, nonmember_labels=non_y))
        done("LOGAN (discriminator)")
    attacks.append(gan_leaks_blackbox(sampler, mem, non, num_samples=s.gan_samples, seed=ctx.seed("gan-samples"),
                                      feature_fn=feature_fn))
    done("GAN-Leaks black-box")
    t = min(s.max_targets, k)
    white, inv_mem, inv_non = inversion_attack(
        generator, mem[:t], non[:t], member_labels=None if mem_y is None else mem_y[:t],
        nonmember_labels=None if non_y is None else non_y[:t], name="gan_leaks_whitebox",
        steps=s.latent_steps, restarts=s.latent_restarts, seed=ctx.seed("latent"))
    attacks.append(white)
    done("GAN-Leaks white-box (latent inversion)")
    synthetic = sampler(s.gan_samples, torch.Generator().manual_seed(ctx.seed("dcr-samples"))).to(ctx.device)
    dcr = distance_to_closest_record(synthetic, mem, non, seed=ctx.seed("dcr"), feature_fn=feature_fn)
    attacks.append(dcr_result(dcr))
    done("distance to closest record")
    fake, _ = _subsample(synthetic, None, len(mem), rng)
    attacks.append(real_vs_synthetic_detector(mem.cpu(), fake.cpu(), seed=ctx.seed("realism"), feature_fn=feature_fn))
    done("real-vs-synthetic detector")
    files = [dcr_grid(synthetic, mem, non, dcr, ctx.artifact("dcr_nearest.png")),
             _reconstruction_grid(mem[:t], inv_mem.reconstructions, ctx.artifact("inversion_members.png")),
             _reconstruction_grid(non[:t], inv_non.reconstructions, ctx.artifact("inversion_nonmembers.png"))]
    ds = dcr.summary()
    tables = {
        "Model inversion (latent optimisation)": (
            ["targets", "n", "MSE", "SSIM"],
            [["members", t, float(inv_mem.mse.mean()), float(inv_mem.ssim.mean())],
             ["non-members", t, float(inv_non.mse.mean()), float(inv_non.ssim.mean())]]),
        "Distance to closest record": (
            ["synthetic", "reference per side", "share closer to train", "d_train p5", "d_holdout p5",
             "d_train median", "d_holdout median"],
            [[ds["n_synthetic"], ds["n_reference"], ds["share_closer_to_train"], ds["d_train_p5"],
              ds["d_holdout_p5"], ds["d_train_median"], ds["d_holdout_median"]]]),
    }
    summary = {f"{r.name}_auc": r.auc for r in attacks}
    summary.update({"dcr_share_closer_to_train": ds["share_closer_to_train"],
                    "realism_accuracy": float(attacks[-1].details["accuracy"]),
                    "inversion_mse_members": float(inv_mem.mse.mean()),
                    "inversion_mse_nonmembers": float(inv_non.mse.mean())})
    notes = [f"GAN attacks on {len(mem)} members vs {len(non)} non-members ({t} each for latent optimisation, "
             f"{s.latent_steps} Adam steps x {s.latent_restarts} starts); {s.gan_samples} generated images.",
             "real_vs_synthetic is the FedGAN paper's detector: a realism test (0.5 = indistinguishable), "
             "not a membership attack."]
    return AuditOutcome(attacks=attacks, tables=tables, summary=summary,
                        files=[str(f.relative_to(ctx.run.path)) for f in files], notes=notes)
