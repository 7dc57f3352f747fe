"""An empirical lower bound on epsilon from one training run (Steinke, Nasr and Jagielski,
"Privacy Auditing with One (1) Training Run", NeurIPS 2023).

``m`` canaries are each put into the training data with probability 1/2 by a coin only the
auditor knows. After training, the auditor guesses in or out for ``r`` of them (abstaining on
the rest) and is right ``v`` times. If training was (epsilon, delta)-DP, the number of correct
guesses is, up to a delta term, no more likely to be large than for ``r`` independent guesses
that are each right with probability ``e^eps / (1 + e^eps)`` (randomised response). So an
observed ``v`` that would be improbable under epsilon refutes epsilon: the largest refuted
epsilon is a lower bound, at the chosen confidence, on the epsilon the mechanism really has.

A sound mechanism keeps the bound at or below its accountant's epsilon; a broken one (noise
off, or a sensitivity larger than assumed) can push it above. The bound is a *lower* bound:
a low value does not prove privacy, since the canaries and guesses may just be weak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability of ``>= v`` correct guesses out of ``r`` under (epsilon, delta)-DP.

    Steinke et al.'s Theorem 5.2: the randomised-response tail ``P[Binomial(r, q) >= v]`` with
    ``q = e^eps / (1 + e^eps)``, plus ``2 m delta`` times the largest average mass
    ``P[v - i <= Binomial(r, q) < v] / i`` over ``i = 1..v`` (what delta lets the mechanism move).

    Raises
    ------
    ValueError
        Unless ``0 <= v <= r <= m``, ``epsilon >= 0`` and ``0 <= delta <= 1``.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not epsilon >= 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    if not delta or not v:
        return min(tail, 1.0)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95,
                        tolerance: float = 1e-4) -> float:
    """The largest epsilon that ``v`` correct guesses out of ``r`` refute at ``confidence``.

    Returns 0 when even epsilon = 0 is not refuted. The p-value grows with epsilon, so the bound
    is found by bisection on [0, 50].
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    low, high = 0.0, 50.0
    if p_value(m, r, v, high, delta) < alpha:
        return high
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if p_value(m, r, v, mid, delta) < alpha:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class CanaryAudit:
    """The outcome of :func:`audit_canaries`.

    Attributes
    ----------
    epsilon_lower_bound
        Largest epsilon refuted at ``confidence`` (Bonferroni-corrected over the guess counts tried).
    guesses, correct
        ``r`` and ``v`` of the guess count that gave the bound.
    canaries
        ``m``.
    confidence, delta
        Of the bound.
    """

    epsilon_lower_bound: float
    guesses: int
    correct: int
    canaries: int
    confidence: float
    delta: float


def audit_canaries(scores: Sequence[float], included: Sequence[bool], delta: float, *,
                   confidence: float = 0.95, fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.5)) -> CanaryAudit:
    """Guess in for the highest scores and out for the lowest; the best bound over a few guess counts.

    Parameters
    ----------
    scores
        ``(m,)`` the auditor's membership score of each canary (higher = more likely trained on),
        computed without looking at ``included``.
    included
        ``(m,)`` the secret coins.
    delta
        The run's delta.
    confidence
        Of the bound; each of the ``len(fractions)`` guess counts is tested at
        ``1 - (1 - confidence) / len(fractions)`` (Bonferroni), so the best of them holds at
        ``confidence``.
    fractions
        Share of the canaries guessed, half in (top scores), half out (bottom scores).
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1 or len(s) < 2:
        raise ValueError(f"scores and included must be 1-D of the same length >= 2, got {s.shape} and {inc.shape}")
    m = len(s)
    order = np.argsort(-s, kind="stable")
    each = 1.0 - (1.0 - confidence) / len(fractions)
    best = CanaryAudit(0.0, 0, 0, m, confidence, delta)
    for f in fractions:
        half = max(1, int(round(f * m / 2)))
        if 2 * half > m:
            continue
        correct = int(inc[order[:half]].sum() + (~inc[order[m - half:]]).sum())
        eps = epsilon_lower_bound(m, 2 * half, correct, delta, each)
        if eps > best.epsilon_lower_bound:
            best = CanaryAudit(eps, 2 * half, correct, m, confidence, delta)
    return best


__all__ = ["CanaryAudit", "audit_canaries", "epsilon_lower_bound", "p_value"]
