"""Gradient inversion: reconstructing a site's training images from the model update it sends.

The attack of Geiping et al., "Inverting gradients — how easy is it to break privacy in
federated learning?", NeurIPS 2020: dummy images ``x'`` are optimised (Adam on signed
gradients, step decay, boxed to the image range) so that the update they would produce has the
same *direction* as the observed one — loss ``1 - cos(update(x'), update) + tv * TV(x')`` (total
variation as image prior). For several local steps the site's SGD is unrolled on the dummy batch
(Geiping et al. Sec. 5, "multiple local steps on the same batch"). Labels are inferred from the
sign of the last linear layer's bias gradient where the model has one (Zhao et al., iDLG 2020;
exact for one image, a heuristic for batches), otherwise given (a known-label attacker, e.g.
segmentation masks).

The attacked update is ``w_0 - w_T`` after ``local_steps`` full-batch SGD steps; with a
defence it is clipped to L2 norm ``clip`` and ``N(0, (noise * clip)^2)`` noise is added per
coordinate — client-level DP's treatment of an update, and DP-SGD's for a batch of one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call

from fedsilo.audit.attacks.metrics import mean_finite, psnr, save_figure, ssim

#: ``loss_fn(model, x, y) -> (B,)`` per-sample losses (averaged over the batch for an update).
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


class _Bound(nn.Module):
    """``module`` evaluated with the given parameter tensors (differentiable in them)."""

    def __init__(self, module: nn.Module, params: Mapping[str, Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "_target", module)
        object.__setattr__(self, "_params", dict(params))

    def forward(self, *args: Tensor) -> Tensor:
        return functional_call(self._target, self._params, args)


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _flat(tensors: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def client_update(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *, lr: float, local_steps: int = 1,
                  clip: float = 0.0, noise_multiplier: float = 0.0,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The update ``w_0 - w_T`` of ``local_steps`` full-batch SGD steps on ``(x, y)``.

    Parameters
    ----------
    model
        Global model (not modified: a copy is trained, in the model's current train/eval mode).
    loss_fn
        Per-sample losses; their mean is minimised.
    x, y
        The site's batch ``(B, C, H, W)`` and targets.
    lr, local_steps
        SGD learning rate and steps.
    clip
        L2 norm bound of the whole update (0 = no clipping).
    noise_multiplier
        Gaussian noise std over ``clip`` added to each coordinate (needs ``clip > 0``).
    generator
        Seeded generator of the noise.
    """
    if lr <= 0 or local_steps < 1:
        raise ValueError(f"lr must be > 0 and local_steps >= 1, got {lr} and {local_steps}")
    if clip < 0 or noise_multiplier < 0:
        raise ValueError(f"clip and noise_multiplier must be >= 0, got {clip} and {noise_multiplier}")
    if noise_multiplier > 0 and clip == 0:
        raise ValueError("noise_multiplier > 0 needs clip > 0 (the noise std is noise_multiplier * clip)")
    m = copy.deepcopy(model)
    before = _trainable(m)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr)
    for _ in range(local_steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(m, x, y).mean().backward()
        opt.step()
    update = {n: before[n] - p.detach() for n, p in m.named_parameters() if p.requires_grad}
    if clip:
        norm = float(torch.sqrt(sum(u.pow(2).sum() for u in update.values())))
        scale = min(1.0, clip / max(norm, 1e-12))
        update = {n: u * scale for n, u in update.items()}
    if noise_multiplier:
        update = {n: u + noise_multiplier * clip * torch.randn(u.shape, generator=generator).to(u) for n, u in update.items()}
    return update


def infer_labels(model: nn.Module, update: Mapping[str, Tensor], num_images: int) -> Tensor | None:
    """Labels from the last linear layer's bias update (iDLG): the classes with the most negative
    gradient (for cross-entropy ``p_k - 1[y = k]``; ``w_0 - w_1 = lr * gradient``), one per image, most confident first; None when the
    model has no such layer. ``(num_images,)`` int64 (classes repeat when ``num_images`` exceeds them)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    linear = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and mod.bias is not None]
    if not linear:
        return None
    key = f"{linear[-1]}.bias" if linear[-1] else "bias"
    if key not in update:
        return None
    order = torch.argsort(update[key].detach().cpu())
    return order.repeat(math.ceil(num_images / len(order)))[:num_images].long()


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation ``mean|dx| + mean|dy|`` of images ``(B, C, H, W)``."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def invert_update(model: nn.Module, loss_fn: LossFn, update: Mapping[str, Tensor], labels: Tensor,
                  shape: Sequence[int], *, lr: float, local_steps: int = 1, iterations: int = 300,
                  attack_lr: float = 0.1, tv_weight: float = 1e-2, seed: int = 0,
                  bounds: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Reconstruct the batch behind ``update`` (Geiping et al. 2020).

    Parameters
    ----------
    model
        The global model the site started from (not modified).
    loss_fn
        The site's per-sample loss.
    update
        Observed ``w_0 - w_T`` per trainable parameter name.
    labels
        Targets of the dummy batch (inferred or known), ``(B,)`` or ``(B, ...)``.
    shape
        ``(B, C, H, W)`` of the batch.
    lr, local_steps
        The site's SGD settings (unrolled on the dummy batch).
    iterations, attack_lr, tv_weight
        Adam iterations, step size and total-variation weight.
    seed
        Seed of the dummy initialisation.
    bounds
        Image range the dummy batch is clamped to.

    Returns
    -------
    Tensor
        ``(B, C, H, W)`` reconstruction.
    """
    if iterations < 1 or attack_lr <= 0 or tv_weight < 0:
        raise ValueError(f"iterations must be >= 1, attack_lr > 0 and tv_weight >= 0, got {iterations}, "
                         f"{attack_lr}, {tv_weight}")
    if len(shape) != 4 or labels.shape[0] != shape[0]:
        raise ValueError(f"shape must be (B, C, H, W) with B = len(labels) = {labels.shape[0]}, got {tuple(shape)}")
    m = copy.deepcopy(model)
    w0 = _trainable(m)
    for p in m.parameters():
        p.requires_grad_(False)
    names = [n for n in w0 if n in update]
    if not names:
        raise ValueError("update shares no parameter name with the model's trainable parameters")
    device = next(iter(w0.values())).device
    target = _flat({n: update[n].to(device) for n in names}, names)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=gen).to(device).clamp_(*bounds).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=attack_lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    labels = labels.to(device)
    for _ in range(iterations):
        params = {n: w.clone().requires_grad_(True) for n, w in w0.items()}
        current = dict(params)
        for _ in range(local_steps):
            loss = loss_fn(_Bound(m, current), x, labels).mean()
            grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=True)
            current = {**current, **{n: current[n] - lr * g for n, g in zip(names, grads, strict=True)}}
        simulated = _flat({n: params[n] - current[n] for n in names}, names)
        rec = 1 - nn.functional.cosine_similarity(simulated, target, dim=0, eps=1e-12)
        rec = rec + tv_weight * total_variation(x)
        opt.zero_grad(set_to_none=True)
        rec.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(*bounds)
    return x.detach()


def match_reconstructions(reconstruction: Tensor, original: Tensor) -> Tensor:
    """Reorder ``reconstruction`` to pair each original with its closest reconstruction
    (Hungarian assignment on MSE); the batch order of a reconstruction is arbitrary."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(original.flatten(1).double(), reconstruction.flatten(1).double()).pow(2).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return reconstruction[torch.as_tensor(cols, device=reconstruction.device)]


@dataclass
class InversionTrial:
    """One attacked update: setting, reconstruction quality and images."""

    batch_size: int
    local_steps: int
    defence: str
    psnr: float
    ssim: float
    label_accuracy: float | None
    original: Tensor = field(repr=False)
    reconstruction: Tensor = field(repr=False)

    def row(self) -> dict[str, object]:
        return {"batch_size": self.batch_size, "local_steps": self.local_steps, "defence": self.defence,
                "psnr": self.psnr, "ssim": self.ssim, "label_accuracy": self.label_accuracy}


def attack_batch(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *, lr: float, local_steps: int = 1,
                 clip: float = 0.0, noise_multiplier: float = 0.0, infer: bool = True, seed: int = 0,
                 **kwargs: object) -> InversionTrial:
    """Simulate a site's update on ``(x, y)``, invert it and score the reconstruction.

    Labels are inferred when ``infer`` and the model allows it (else the true ``y`` is given).
    Extra keyword arguments go to :func:`invert_update`.
    """
    gen = torch.Generator().manual_seed(seed)
    update = client_update(model, loss_fn, x, y, lr=lr, local_steps=local_steps, clip=clip,
                           noise_multiplier=noise_multiplier, generator=gen)
    labels = infer_labels(model, update, len(x)) if infer else None
    label_acc = None
    if labels is not None:
        label_acc = float((torch.sort(labels.cpu()).values == torch.sort(y.cpu()).values).float().mean())
    else:
        labels = y
    recon = invert_update(model, loss_fn, update, labels, tuple(x.shape), lr=lr, local_steps=local_steps,
                          seed=seed + 1, **kwargs)  # type: ignore[arg-type]
    recon = match_reconstructions(recon, x)
    defence = "none" if not clip else f"clip {clip:g}" + (f" + noise {noise_multiplier:g}" if noise_multiplier else "")
    return InversionTrial(len(x), local_steps, defence, mean_finite(psnr(recon, x)), float(ssim(recon, x).mean()),
                          label_acc, x.detach().cpu(), recon.detach().cpu())


def inversion_grid(trials: Sequence[InversionTrial], path: str | Path, max_images: int = 8) -> Path:
    """PNG: for each trial a row of originals and a row of reconstructions (at most ``max_images``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsilo.tasks.synthesis.grids import sample_grid

    if not trials:
        raise ValueError("trials must hold at least one InversionTrial, got 0")
    fig, axes = plt.subplots(len(trials), 1, figsize=(1.2 * max_images + 1, 2.6 * len(trials)), squeeze=False)
    for ax, t in zip(axes[:, 0], trials, strict=True):
        k = min(max_images, t.batch_size)
        grid = sample_grid(torch.cat([t.original[:k], t.reconstruction[:k].clamp(-1, 1)]), nrow=k)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)
        ax.set_title(f"B={t.batch_size}, {t.local_steps} step(s), {t.defence}: PSNR {t.psnr:.1f} dB, "
                     f"SSIM {t.ssim:.2f} (top: original)", fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


__all__ = [
    "InversionTrial",
    "attack_batch",
    "client_update",
    "infer_labels",
    "inversion_grid",
    "invert_update",
    "match_reconstructions",
    "total_variation",
]
