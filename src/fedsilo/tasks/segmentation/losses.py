"""Dice + cross-entropy for partially labelled sites: the marginal loss.

A site that does not annotate an organ (CHAOS has no pancreas) labels that organ's voxels as
background. Training it to predict background there would teach the shared model to erase the
organ that other sites label. The marginal loss (Shi, Hu, Zhou, "Marginal loss and exclusion loss
for partially supervised multi-organ segmentation", Medical Image Analysis 70, 2021) merges the
probabilities of the unannotated classes into background, so the site's label "background" means
"background or any organ I do not annotate":

    p'_0 = p_0 + sum_{c unannotated} p_c,    p'_c = p_c (c annotated),

computed as a ``logsumexp`` of log-probabilities for stability. Cross-entropy is taken on ``p'``
and the Dice loss (MONAI :class:`~monai.losses.DiceLoss`) on ``p'`` over the annotated classes
only. Voxels labelled :data:`~fedsilo.data.labels.IGNORE_INDEX` are excluded from both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from fedsilo.data.labels import IGNORE_INDEX
from fedsilo.tasks.segmentation.metrics import as_annotated, check_target

__all__ = ["marginal_log_probs", "masked_dice_ce"]


def marginal_log_probs(logits: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Log of the marginal probabilities ``p'`` (see module docstring), ``-inf`` for unannotated classes.

    Parameters
    ----------
    logits
        ``(B, C, ...)``.
    annotated
        ``(B, C)`` bool with ``annotated[:, 0]`` True.

    Returns
    -------
    torch.Tensor
        ``(B, C, ...)``; ``exp`` of it sums to 1 over classes.
    """
    log_p = F.log_softmax(logits, dim=1)
    shape = annotated.shape + (1,) * (logits.ndim - 2)
    ann = annotated.reshape(shape)
    is_bg = torch.zeros_like(ann)
    is_bg[:, 0] = True
    merge = (~ann | is_bg).expand_as(log_p)
    bg = torch.logsumexp(log_p.masked_fill(~merge, float("-inf")), dim=1, keepdim=True)
    out = log_p.masked_fill(~ann.expand_as(log_p), float("-inf"))
    return torch.cat([bg, out[:, 1:]], dim=1)


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor | None = None, *,
                   ignore_index: int = IGNORE_INDEX, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                   include_background: bool = True, batch_dice: bool = True, smooth: float = 1e-5) -> torch.Tensor:
    """Dice + CE loss with unannotated classes marginalised into background and ignored voxels dropped.

    Parameters
    ----------
    logits
        ``(B, C, H, W)`` (or any number of spatial dims) raw scores.
    target
        ``(B, H, W)`` or ``(B, 1, H, W)`` integer labels in ``[0, C)`` or ``ignore_index``; a voxel
        may not carry a class its sample does not annotate.
    annotated
        ``(C,)`` or ``(B, C)`` bool, background True; ``None`` means all classes annotated (the
        loss is then ordinary Dice + CE over non-ignored voxels).
    ignore_index
        Label of voxels excluded from both terms.
    lambda_dice, lambda_ce
        Weights of the two terms (>= 0).
    include_background
        Whether the background's Dice enters the Dice term (MONAI's option; CE always includes it).
    batch_dice
        Soft Dice per class over the whole batch (MONAI ``batch=True``, nnU-Net's "batch Dice"),
        each class summed over the samples that annotate it; ``False``: per sample and class.
    smooth
        Numerator and denominator smoothing of the soft Dice.

    Returns
    -------
    torch.Tensor
        Scalar loss. CE is averaged over non-ignored voxels. The Dice term is averaged over the
        annotated classes (per sample when ``batch_dice=False``) that occur in the target; a class
        absent from the target would score a soft Dice near 0 whatever the prediction (a constant
        loss of ~1 with almost no gradient), so it is left to the CE term, which does penalise its
        false positives. The Dice term is 0 when no annotated class occurs (all voxels ignored).
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be shaped (B, C, *spatial), got {tuple(logits.shape)}")
    b, c = logits.shape[:2]
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != (b,) + logits.shape[2:]:
        raise ValueError(f"target must be shaped {(b,) + tuple(logits.shape[2:])} (or with a channel of 1), "
                         f"got {tuple(target.shape)}")
    if target.is_floating_point():
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")
    for name, val in (("lambda_dice", lambda_dice), ("lambda_ce", lambda_ce)):
        if not val >= 0:
            raise ValueError(f"{name} must be >= 0, got {val!r}")
    target = target.long()
    ann = as_annotated(annotated, b, c, logits.device)
    check_target(target, c, ignore_index, ann)

    valid = target != ignore_index
    labels = torch.where(valid, target, 0)
    log_pm = marginal_log_probs(logits, ann)

    if bool(valid.any()):
        ce = F.nll_loss(log_pm, torch.where(valid, target, ignore_index), ignore_index=ignore_index)
    else:
        ce = logits.sum() * 0.0

    mask = valid.unsqueeze(1).to(logits.dtype)
    probs = log_pm.exp() * mask
    onehot = F.one_hot(labels, c).movedim(-1, 1).to(logits.dtype) * mask
    spatial = tuple(range(2, logits.ndim))
    present = onehot.sum(dim=spatial) > 0  # (B, C)
    if batch_dice:
        weight = ann.to(logits.dtype).reshape(ann.shape + (1,) * len(spatial))
        probs, onehot = probs * weight, onehot * weight  # a class counts only where annotated
        present = (present & ann).any(dim=0)  # (C,)
    else:
        present = present & ann
    per_class = DiceLoss(reduction="none", smooth_nr=smooth, smooth_dr=smooth, batch=batch_dice)(probs, onehot)
    per_class = per_class.reshape(present.shape)
    use = present.clone()
    if not include_background:
        use[..., 0] = False
    dice = per_class[use].mean() if bool(use.any()) else logits.sum() * 0.0
    return lambda_dice * dice + lambda_ce * ce
