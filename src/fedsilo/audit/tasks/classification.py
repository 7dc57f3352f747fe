"""Audits of the classification task: membership inference on the grading model and gradient
inversion of a site's update."""

from __future__ import annotations

import numpy as np
import torch

from fedsilo.audit.attacks.mia import cross_entropy_losses
from fedsilo.audit.registry import AuditContext, AuditOutcome, register_audit
from fedsilo.audit.tasks.common import gradient_inversion_outcome, matched_membership
from fedsilo.data.images import ImageDataset


def _members_and_nonmembers(ctx: AuditContext) -> tuple[ImageDataset, ImageDataset, str]:
    """Training images of the attacked model, and same-distribution images it never trained on:
    the global test split and every site's validation split (sites evaluate on them, never train)."""
    data = ctx.task.federated_data()
    sites = data.sites if ctx.site is None else [data.sites[ctx.site]]
    members = ImageDataset.concat([s.train for s in sites])
    held_out = [s.val for s in data.sites if len(s.val)]
    source = "the sites' validation splits"
    if data.test is not None and len(data.test):
        held_out.insert(0, data.test)
        source = "the global test split and the sites' validation splits"
    if not held_out:
        return members, members.subset(np.zeros(0, dtype=np.int64)), "nowhere (no held-out images)"
    return members, ImageDataset.concat(held_out), source


@register_audit("classification", "membership")
def membership(ctx: AuditContext) -> AuditOutcome:
    """Loss-threshold, LiRA and RMIA membership inference on the attacked classifier."""
    members, nonmembers, source = _members_and_nonmembers(ctx)
    outcome = matched_membership(ctx, members, nonmembers, members.labels, nonmembers.labels, cross_entropy_losses,
                                 target_size=len(members), matched_by="grade")
    outcome.notes.append(f"Non-members are drawn from {source}.")
    return outcome


@register_audit("classification", "gradient_inversion")
def gradient_inversion(ctx: AuditContext) -> AuditOutcome:
    """Gradient inversion of simulated updates at the first site (labels inferred from the head)."""
    data = ctx.task.federated_data()
    site = data.sites[ctx.site or 0].train
    n = min(len(site), max(ctx.settings.inversion_batch_sizes))
    rng = np.random.default_rng(ctx.seed("inversion-batch"))
    x, y = site.batch(torch.as_tensor(np.sort(rng.choice(len(site), n, replace=False))))
    return gradient_inversion_outcome(ctx, x, y, cross_entropy_losses, lr=ctx.cfg.train.lr, infer_labels=True)
