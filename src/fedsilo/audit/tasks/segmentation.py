"""Audits of the segmentation task: membership inference on the U-Net (slices of training
patients vs slices of patients it never trained on) and gradient inversion of a site's update."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsilo.audit.registry import AuditContext, AuditOutcome, register_audit
from fedsilo.audit.tasks.common import gradient_inversion_outcome, matched_membership
from fedsilo.data.labels import IGNORE_INDEX


def segmentation_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-slice cross-entropy ``(B,)`` of logits ``model(x)`` ``(B, K, H, W)`` against labels
    ``(B, H, W)``, averaged over the pixels that are not ``IGNORE_INDEX``."""
    target = y.long()
    pixel = F.cross_entropy(model(x), target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).flatten(1).sum(1).clamp_min(1)
    return pixel.flatten(1).sum(1) / valid


class FromSymmetric(nn.Module):
    """``model((x + 1) / 2)``: lets attacks that work on [-1, 1] images (inversion bounds, PSNR
    over a range of 2) attack a model that takes [0, 1] slices, with its parameters unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x + 1) / 2)


def organ_slices(slices: Any) -> np.ndarray:
    """Indices of the slices (of a ``SliceDataset``) whose label map shows at least one organ."""
    if not len(slices):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(slices.labels.flatten(1).max(1).values > 0)


def _members_and_nonmembers(ctx: AuditContext):
    from fedsilo.data.abdomen import SliceDataset

    data = ctx.task.federated_data()
    sites = data.sites if ctx.site is None else [data.sites[ctx.site]]
    members = SliceDataset.concat([s.train for s in sites])
    nonmembers = SliceDataset.concat([s.val for s in data.sites])
    source = "the sites' validation patients"
    if not len(nonmembers) and isinstance(data.test, dict):
        nonmembers = SliceDataset.concat(list(data.test.values()))
        source = "the held-out test patients"
    return members, nonmembers, source


@register_audit("segmentation", "membership")
def membership(ctx: AuditContext) -> AuditOutcome:
    """Loss-threshold, LiRA and RMIA membership inference on slices of training vs unseen patients."""
    members, nonmembers, source = _members_and_nonmembers(ctx)
    target_size = len(members)
    # one selection for both pools: otherwise the attack partly measures "this slice shows an organ"
    members, nonmembers = members.subset(organ_slices(members)), nonmembers.subset(organ_slices(nonmembers))
    outcome = matched_membership(ctx, members, nonmembers, members.modalities, nonmembers.modalities,
                                 segmentation_losses, target_size=target_size, matched_by="modality")
    outcome.notes.append(f"Slices with organs of training patients vs slices with organs of {source} (patient-level "
                         f"split: no patient is on both sides).")
    return outcome


@register_audit("segmentation", "gradient_inversion")
def gradient_inversion(ctx: AuditContext) -> AuditOutcome:
    """Gradient inversion of simulated updates on slices of the first site (label maps given)."""
    site = ctx.task.federated_data().sites[ctx.site or 0].train
    with_organs = organ_slices(site)
    n = min(len(with_organs), max(ctx.settings.inversion_batch_sizes))
    if n < 1:
        return AuditOutcome(notes=["Gradient inversion skipped: the site has no slice with an organ."])
    rng = np.random.default_rng(ctx.seed("inversion-batch"))
    x, y, _ = site.batch(torch.as_tensor(np.sort(rng.choice(with_organs, n, replace=False))))
    attacked = AuditContext(ctx.run, ctx.task, FromSymmetric(ctx.model), ctx.final, ctx.site, ctx.device, ctx.out_dir)
    outcome = gradient_inversion_outcome(attacked, x * 2 - 1, y, segmentation_losses, lr=ctx.cfg.train.lr,
                                         infer_labels=False)
    outcome.notes.append("The attacker is given the slices' label maps (a strong attacker: the update of a "
                         "segmentation model does not reveal them the way a classifier's head reveals labels).")
    return outcome
