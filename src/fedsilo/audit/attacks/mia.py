"""Membership inference against a trained model: loss threshold, and attacks calibrated with
reference models (RMIA, LiRA).

- **Loss threshold** (Yeom et al., "Privacy risk in machine learning", CSF 2018): members have
  lower loss; score ``-loss``.
- **LiRA** (Carlini et al., "Membership inference attacks from first principles", S&P 2022):
  per-example Gaussians of the logit-scaled confidence ``phi = log(p / (1 - p))`` under reference
  models trained with (IN) and without (OUT) the example; score = the log likelihood ratio
  (online), or the one-sided OUT z-score when no IN models exist (offline). With few reference
  models the variance is pooled over examples ("fixed variance"), as the paper advises.
- **RMIA** (Zarifzadeh et al., "Low-cost high-power membership inference attacks", ICML 2024):
  likelihood ratio ``LR(x) = p(x | target) / p(x)`` with ``p(x)`` the mean over reference models
  (offline: OUT models only, rescaled by ``a``: ``p(x) = ((1 + a) p_OUT(x) + (1 - a)) / 2``);
  score(x) = the fraction of population samples z with ``LR(x) / LR(z) >= gamma``.

Every attack works on per-sample *losses*; ``p = exp(-loss)`` (for cross-entropy, the probability
of the true label). Any task plugs in with a per-sample loss function and a function that
trains a reference model on a subset of the attack pool.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedsilo.audit.attacks.metrics import AttackResult, attack_result

#: ``loss_fn(model, x, y) -> (B,)`` per-sample losses.
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
#: ``train_fn(indices into the pool, seed) -> trained model``.
TrainFn = Callable[[np.ndarray, int], nn.Module]


def cross_entropy_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy of a classifier: logits ``model(x)`` (B, K), labels ``y`` (B,)."""
    return nn.functional.cross_entropy(model(x), y, reduction="none")


def sample_losses(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = cross_entropy_losses,
                  batch_size: int = 256) -> np.ndarray:
    """Per-sample losses ``(N,)`` of ``model`` in eval mode on ``x`` (N, ...) with targets ``y`` (N, ...).

    The model is evaluated on a copy in eval mode (its training flag is left unchanged) on the
    device of its parameters; ``x`` and ``y`` are moved there batch by batch.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(iter(model.parameters())).device
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                out.append(loss_fn(model, x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def loss_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> AttackResult:
    """Loss-threshold attack (Yeom et al. 2018): score ``-loss``."""
    return attack_result("loss", -np.asarray(member_losses), -np.asarray(nonmember_losses),
                         details={"mean_member_loss": float(np.mean(member_losses)),
                                  "mean_nonmember_loss": float(np.mean(nonmember_losses))})


# --------------------------------------------------------------------------------------------
# Reference models
# --------------------------------------------------------------------------------------------


def balanced_in_mask(num_models: int, pool_size: int, rng: np.random.Generator) -> np.ndarray:
    """``(K, P)`` bool: each example IN exactly ``K // 2`` reference models, each model holding
    about half of the pool (Carlini et al.'s shadow-model split)."""
    if num_models < 1 or pool_size < 2:
        raise ValueError(f"num_models must be >= 1 and pool_size >= 2, got {num_models} and {pool_size}")
    if num_models == 1:
        mask = np.zeros((1, pool_size), dtype=bool)
        mask[0, rng.permutation(pool_size)[: pool_size // 2]] = True
        return mask
    keep = rng.uniform(size=(num_models, pool_size)).argsort(0) < num_models // 2
    return keep


def reference_losses(train_fn: TrainFn, x: Tensor, y: Tensor, num_models: int, seed: int,
                     loss_fn: LossFn = cross_entropy_losses, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Train ``num_models`` reference models on balanced halves of the pool and score the pool.

    Returns
    -------
    losses, in_mask
        ``(K, P)`` per-sample losses of each reference model, and which examples it trained on.
    """
    rng = np.random.default_rng(seed)
    mask = balanced_in_mask(num_models, len(x), rng)
    losses = np.stack([sample_losses(train_fn(np.flatnonzero(mask[k]), seed + k), x, y, loss_fn, batch_size)
                       for k in range(num_models)])
    return losses, mask


def _check_reference(target: np.ndarray, ref: np.ndarray, in_mask: np.ndarray | None) -> None:
    if ref.ndim != 2 or ref.shape[1] != target.shape[0]:
        raise ValueError(f"reference losses must have shape (K, {target.shape[0]}), got {ref.shape}")
    if in_mask is not None and in_mask.shape != ref.shape:
        raise ValueError(f"in_mask must have shape {ref.shape}, got {in_mask.shape}")


def _logit_confidence(losses: np.ndarray) -> np.ndarray:
    """``phi = log(p / (1 - p))`` with ``p = exp(-loss)``, computed stably."""
    loss = np.maximum(np.asarray(losses, dtype=np.float64), 1e-12)
    return -loss - np.log(-np.expm1(-loss))


def lira_scores(target_losses: np.ndarray, ref_losses: np.ndarray, in_mask: np.ndarray | None = None) -> np.ndarray:
    """LiRA scores ``(P,)`` (Carlini et al. 2022), fixed-variance Gaussians.

    Online (an IN and an OUT reference model for every example): ``log N(phi; mu_in, s_in) -
    log N(phi; mu_out, s_out)``; otherwise offline: ``(phi - mu_out) / s_out``.
    """
    target = np.asarray(target_losses, dtype=np.float64)
    ref = np.asarray(ref_losses, dtype=np.float64)
    _check_reference(target, ref, in_mask)
    phi, ref_phi = _logit_confidence(target), _logit_confidence(ref)
    out_mask = ~in_mask if in_mask is not None else np.ones_like(ref, dtype=bool)
    if not out_mask.any(0).all():
        raise ValueError("every example needs at least one OUT reference model for LiRA")

    def stats(mask: np.ndarray) -> tuple[np.ndarray, float]:
        count = mask.sum(0)
        mu = np.where(mask, ref_phi, 0).sum(0) / np.maximum(count, 1)
        resid = np.where(mask, ref_phi - mu, 0.0)
        var = float((resid**2).sum() / max(int(count.sum()) - 1, 1))
        return mu, max(var, 1e-6) ** 0.5

    mu_out, s_out = stats(out_mask)
    if in_mask is not None and in_mask.any(0).all():
        mu_in, s_in = stats(in_mask)
        log_in = -0.5 * ((phi - mu_in) / s_in) ** 2 - np.log(s_in)
        log_out = -0.5 * ((phi - mu_out) / s_out) ** 2 - np.log(s_out)
        return log_in - log_out
    return (phi - mu_out) / s_out


def rmia_scores(target_losses: np.ndarray, ref_losses: np.ndarray, in_mask: np.ndarray | None = None, *,
                population: np.ndarray | None = None, gamma: float = 1.0, offline_a: float = 0.3) -> np.ndarray:
    """RMIA scores ``(P,)`` (Zarifzadeh et al. 2024).

    Parameters
    ----------
    target_losses
        ``(P,)`` losses of the attacked model on the targets.
    ref_losses
        ``(K, P)`` losses of the reference models on the targets.
    in_mask
        ``(K, P)`` which targets each reference model trained on; None = offline (all OUT).
    population
        Indices of the targets used as population samples z (default: all targets). With one
        z set for every target, the score is monotone in ``LR(x)``, so the ROC does not depend
        on which z are chosen; the z comparison makes the score a calibrated fraction.
    gamma
        Likelihood-ratio threshold (>= 1).
    offline_a
        Offline scaling ``a`` of ``p_OUT`` (used when no IN model exists for an example).
    """
    target = np.asarray(target_losses, dtype=np.float64)
    ref = np.asarray(ref_losses, dtype=np.float64)
    _check_reference(target, ref, in_mask)
    if gamma < 1.0:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if not 0.0 <= offline_a <= 1.0:
        raise ValueError(f"offline_a must be in [0, 1], got {offline_a}")
    p_target, p_ref = np.exp(-target), np.exp(-ref)
    online = in_mask is not None and in_mask.any(0).all() and (~in_mask).any(0).all()
    if online:
        p_x = p_ref.mean(0)
    else:
        out = ~in_mask if in_mask is not None else np.ones_like(ref, dtype=bool)
        p_out = np.where(out, p_ref, 0).sum(0) / np.maximum(out.sum(0), 1)
        p_x = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
    ratio = p_target / np.maximum(p_x, 1e-300)
    z = ratio if population is None else ratio[np.asarray(population)]
    if z.size == 0:
        raise ValueError("population must hold at least one sample")
    z_sorted = np.sort(z)
    # fraction of z with ratio(x) / ratio(z) >= gamma  <=>  ratio(z) <= ratio(x) / gamma
    return np.searchsorted(z_sorted, ratio / gamma, side="right") / z.size


def calibrated_attacks(target: nn.Module, x: Tensor, y: Tensor, is_member: np.ndarray, train_fn: TrainFn, *,
                       num_models: int, seed: int, loss_fn: LossFn = cross_entropy_losses,
                       batch_size: int = 256) -> list[AttackResult]:
    """Loss, LiRA and RMIA on one attack pool (members and non-members together).

    Parameters
    ----------
    target
        The attacked model.
    x, y
        The pool ``(P, ...)``: members and non-members.
    is_member
        ``(P,)`` bool ground truth (used only to score the attacks).
    train_fn
        Trains a fresh reference model on pool indices (the task's own training, so any task can
        plug in); called ``num_models`` times.
    num_models
        Reference models (0 = loss attack only).
    """
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.shape != (len(x),):
        raise ValueError(f"is_member must have shape ({len(x)},), got {is_member.shape}")
    if is_member.all() or not is_member.any():
        raise ValueError("the pool must hold both members and non-members")
    losses = sample_losses(target, x, y, loss_fn, batch_size)
    results = [loss_attack(losses[is_member], losses[~is_member])]
    if num_models < 1:
        return results
    ref, mask = reference_losses(train_fn, x, y, num_models, seed, loss_fn, batch_size)
    details = {"reference_models": num_models, "mean_reference_loss": float(ref.mean())}
    for name, scores in (("lira", lira_scores(losses, ref, mask)), ("rmia", rmia_scores(losses, ref, mask))):
        results.append(attack_result(name, scores[is_member], scores[~is_member], details=dict(details)))
    return results


__all__ = [
    "LossFn",
    "TrainFn",
    "balanced_in_mask",
    "calibrated_attacks",
    "cross_entropy_losses",
    "lira_scores",
    "loss_attack",
    "reference_losses",
    "rmia_scores",
    "sample_losses",
]
