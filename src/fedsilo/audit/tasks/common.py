"""Audit pieces any task can reuse: reference models trained by the task itself, the membership
audit (loss, LiRA, RMIA) of a pool of members and non-members, and the gradient-inversion audit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fedsilo import progress
from fedsilo.audit.attacks.gradient_inversion import InversionTrial, attack_batch, inversion_grid
from fedsilo.audit.attacks.mia import LossFn, calibrated_attacks
from fedsilo.audit.registry import AuditContext, AuditOutcome
from fedsilo.rounds import StopTraining
from fedsilo.run.load import initial_weights


def train_reference_model(ctx: AuditContext, data: Any, seed: int) -> nn.Module:
    """A model of the run's task trained from scratch on ``data`` (any dataset the task trains on).

    It mimics the attacked model's training as seen by one of its samples: the task's own
    ``train`` (same optimiser, epochs, augmentation, and DP-SGD if the run used it) for
    ``audit.reference_rounds`` periods (default ``federation.rounds``), from a fresh
    initialisation seeded by ``seed``.
    """
    from fedsilo.tasks import TrainContext, make_task
    from fedsilo.training import train_site

    cfg = ctx.cfg
    ref_cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, seed=seed))
    task = make_task(ref_cfg)
    model = task.build_model()
    model.load_state_dict(initial_weights(task))
    state: dict[str, Any] = {}
    for rnd in range(1, (ctx.settings.reference_rounds or cfg.federation.rounds) + 1):
        try:
            train_site(task, model, data, TrainContext(round=rnd, site_index=0, site_name="reference", device=ctx.device,
                                                 site_state=state))
        except StopTraining:
            break  # a DP budget (privacy.max_epsilon) ends the reference's training as it ended the run's
    return model.to(ctx.device).eval()


def matched_indices(member_keys: np.ndarray, nonmember_keys: np.ndarray, limit: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Members and non-members to attack, with the same count of each key on both sides.

    A membership attack must see two pools that differ only in membership: if one side holds
    more of a grade or a modality, even an untrained model separates them (its loss depends on
    the label). Per key (grade, modality) both sides get ``min`` of the two counts, scaled down
    together when their sum exceeds ``limit`` per side.

    Parameters
    ----------
    member_keys, nonmember_keys
        ``(M,)`` and ``(N,)`` key of each candidate.
    limit
        At most this many per side.
    rng
        Draws which candidates of a key are taken.

    Returns
    -------
    members, nonmembers
        Sorted indices into the two candidate sets, of equal length.
    """
    member_keys, nonmember_keys = np.asarray(member_keys), np.asarray(nonmember_keys)
    keys = np.intersect1d(member_keys, nonmember_keys)
    counts = np.array([min((member_keys == k).sum(), (nonmember_keys == k).sum()) for k in keys], dtype=np.int64)
    if counts.sum() > limit:
        counts = np.floor(counts * (limit / counts.sum())).astype(np.int64)
    picks = [[rng.choice(np.flatnonzero(side == k), c, replace=False) for k, c in zip(keys, counts, strict=True)]
             for side in (member_keys, nonmember_keys)]
    members, nonmembers = (np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in picks)
    return members.astype(np.int64), nonmembers.astype(np.int64)


def matched_membership(ctx: AuditContext, members: Any, nonmembers: Any, member_keys: np.ndarray,
                       nonmember_keys: np.ndarray, loss_fn: LossFn, *, target_size: int,
                       matched_by: str) -> AuditOutcome:
    """Loss, LiRA and RMIA on members and non-members drawn with the same count per key.

    ``members`` and ``nonmembers`` are data sets of one kind (``concat``, ``subset``, ``batch``
    whose first two outputs are inputs and targets); the keys (grade, modality) come from
    ``matched_by`` (named in the notes); see :func:`matched_indices` and :func:`membership_outcome`.
    """
    mi, ni = matched_indices(member_keys, nonmember_keys, ctx.settings.max_samples,
                             np.random.default_rng(ctx.seed("membership-pool")))
    k = len(mi)
    if k < 2:
        return AuditOutcome(notes=[f"Membership inference skipped: {len(members)} members, {len(nonmembers)} "
                                   f"non-members, {k} of each {matched_by}-matched."])
    kind = type(members)
    pool = kind.concat([members.subset(mi), nonmembers.subset(ni)])
    x, y = pool.batch(torch.arange(len(pool)))[:2]
    is_member = np.r_[np.ones(k, dtype=bool), np.zeros(k, dtype=bool)]
    outcome = membership_outcome(ctx, pool, x, y, is_member, loss_fn, kind.subset, target_size=target_size)
    outcome.notes.append(f"Members and non-members hold the same count of each {matched_by}.")
    return outcome


def membership_outcome(ctx: AuditContext, pool: Any, x: Tensor, y: Tensor, is_member: np.ndarray,
                       loss_fn: LossFn, subset: Callable[[Any, np.ndarray], Any], *,
                       target_size: int) -> AuditOutcome:
    """Loss, LiRA and RMIA on a pool; reference models train on ``subset(pool, indices)``.

    ``target_size`` is the number of training samples of the attacked model. Each reference model
    trains on half the pool; when that is fewer, a reference model fits its samples more tightly
    than the target fits its own, which understates the calibrated attacks: LiRA's and RMIA's
    results are then labelled lower bounds (``details["bound"]`` in ``audit.json`` and a note).
    """
    trained = 0

    def train_fn(idx: np.ndarray, seed: int) -> nn.Module:
        nonlocal trained
        model = train_reference_model(ctx, subset(pool, idx), seed)
        trained += 1
        progress.current().step("audit: reference models", trained, ctx.settings.reference_models)
        return model

    results = calibrated_attacks(ctx.model, x.to(ctx.device), y.to(ctx.device), is_member, train_fn,
                                 num_models=ctx.settings.reference_models, seed=ctx.seed("reference-models"),
                                 loss_fn=loss_fn)
    summary: dict[str, float] = {}
    for r in results:
        summary[f"{r.name}_auc"] = r.auc
        summary[f"{r.name}_tpr_at_1%_fpr"] = r.tpr_at_1pct_fpr
    n = int(is_member.sum())
    reference_size = len(is_member) // 2
    bound = ""
    if ctx.settings.reference_models and reference_size < target_size:
        bound = (f"lower bound: each reference model trains on {reference_size} samples, the attacked model on "
                 f"{target_size}, which understates a calibrated attacker")
        for r in results:
            if r.name != "loss":
                r.details.update(bound=bound, reference_train_size=reference_size, target_train_size=target_size)
    notes = [f"Membership: {n} members (training images) vs {len(is_member) - n} non-members (never trained on); "
             f"{ctx.settings.reference_models} reference models, each trained by the task on a random half of "
             f"the pool (LiRA online with pooled variance, RMIA online)."]
    if bound:
        notes.append(f"LiRA and RMIA are a {bound}.")
    return AuditOutcome(attacks=results, summary=summary, notes=notes)


def gradient_inversion_outcome(ctx: AuditContext, x: Tensor, y: Tensor, loss_fn: LossFn, *, lr: float,
                               infer_labels: bool) -> AuditOutcome:
    """Geiping et al.'s attack on simulated client updates of ``ctx.model`` for every batch size
    and local-step count in ``[audit]``, without and with clipping + noise; table, grid, summary."""
    s = ctx.settings
    model = ctx.model
    was = model.training
    model.train()  # a site computes its update in training mode (batch statistics) ...
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()  # ... but dropout is off: no unseeded randomness in the simulated update
    trials: list[InversionTrial] = []
    total = 2 * len(s.inversion_local_steps) * sum(b <= len(x) for b in s.inversion_batch_sizes)
    try:
        for b in s.inversion_batch_sizes:
            if b > len(x):
                continue
            for steps in s.inversion_local_steps:
                for clip, noise in ((0.0, 0.0), (s.inversion_clip, s.inversion_noise)):
                    trials.append(attack_batch(model, loss_fn, x[:b].to(ctx.device), y[:b].to(ctx.device), lr=lr,
                                               local_steps=steps, clip=clip, noise_multiplier=noise,
                                               infer=infer_labels, seed=ctx.seed(f"gi-{b}-{steps}"),
                                               iterations=s.inversion_iterations, tv_weight=s.inversion_tv))
                    progress.current().step("audit: gradient inversion", len(trials), total,
                                            f"batch {b}, {steps} step(s), {trials[-1].defence}")
    finally:
        model.train(was)
    if not trials:
        return AuditOutcome(notes=["Gradient inversion skipped: no batch size fits the site's data."])
    path = inversion_grid(trials, ctx.artifact("gradient_inversion.png"))
    rows = [[t.batch_size, t.local_steps, t.defence, t.psnr, t.ssim,
             "given" if t.label_accuracy is None else t.label_accuracy] for t in trials]
    first = trials[0]
    summary = {"gi_psnr": first.psnr, "gi_ssim": first.ssim}
    dp = [t for t in trials if t.defence != "none" and t.batch_size == first.batch_size
          and t.local_steps == first.local_steps]
    if dp:
        summary["gi_psnr_dp"] = dp[0].psnr
    notes = [f"Gradient inversion (Geiping et al. 2020): updates simulated as full-batch SGD at lr {lr:g} from the "
             f"final model on site images; 'clip C + noise s' = update clipped to L2 norm C plus N(0, (s C)^2) "
             f"noise. PSNR over [-1, 1] images (inf capped at 100 dB)."]
    return AuditOutcome(tables={"Gradient inversion": (["batch", "local steps", "defence", "PSNR (dB)", "SSIM",
                                                        "label acc."], rows)},
                        summary=summary, files=[str(path.relative_to(ctx.run.path))], notes=notes)
