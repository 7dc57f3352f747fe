"""Privacy accounting: epsilon of the (Poisson-)subsampled Gaussian mechanism, noise calibration,
and a serialisable accountant that can travel as fedsilo site state and live in checkpoints.

Two independent implementations are wrapped, so every number can be cross-checked:

- Opacus' accountants (the ones DP-SGD uses at the sites): ``"rdp"`` — Rényi DP of the sampled
  Gaussian mechanism (Mironov, CSF 2017; Mironov, Talwar & Zhang, arXiv:1908.10530), and
  ``"prv"`` — numerical composition of privacy loss random variables (Gopi, Lee & Wutschitz,
  NeurIPS 2021), tighter than RDP;
- Google's ``dp_accounting`` (``"rdp"`` and ``"pld"``, privacy loss distributions; Koskela et
  al. AISTATS 2020, Doroshenko et al. PoPETs 2022), used in tests as the reference.

The same mechanism describes both levels of DP fedsilo offers:

- sample level (DP-SGD, Abadi et al., CCS 2016): noise multiplier ``sigma``, sampling rate
  ``q = 1 / batches per epoch`` and one composition per optimiser step;
- client level (DP-FedAvg, McMahan et al., ICLR 2018): ``q = sites sampled / sites`` and one
  composition per round. fedsilo samples a fixed number of sites without replacement; accounting
  it as Poisson sampling with the same rate is the usual approximation (as in McMahan et al.).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedsilo.rounds import StopTraining

logger = logging.getLogger(__name__)

MECHANISMS = ("rdp", "prv")
REFERENCE_METHODS = ("rdp", "pld")
#: Keys of an accountant's state inside a site-state ConfigRecord (``<prefix>-<name>``).
STATE_FIELDS = ("mechanism", "noise", "rate", "steps")


class PrivacyBudgetExhausted(StopTraining):
    """The next private release would spend more than the allowed epsilon."""


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_mechanism(mechanism: str) -> None:
    if mechanism not in MECHANISMS:
        raise ValueError(f"accountant must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")


def _check_event(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def default_delta(n: int) -> float:
    """``min(1e-5, 1/n)``: the conventional delta, never above one over the data set size.

    Parameters
    ----------
    n
        Number of protected units: a site's training samples (sample level) or the number of
        sites (client level).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return min(1e-5, 1.0 / n)


# --------------------------------------------------------------------------------------------
# One-shot functions
# --------------------------------------------------------------------------------------------


def _opacus(mechanism: str, history: Sequence[tuple[float, float, int]]):
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=mechanism)
    acc.history = [(float(z), float(q), int(t)) for z, q, t in history if t > 0]
    return acc


def _epsilon_of(history: Sequence[tuple[float, float, int]], delta: float, mechanism: str) -> float:
    steps = [(z, q, t) for z, q, t in history if t > 0]
    if not steps:
        return 0.0
    import warnings

    with warnings.catch_warnings():
        # Opacus warns when the optimal RDP order is at the end of its grid (large epsilons) and
        # its PRV takes log(1 - q), which is -inf without subsampling (q = 1; the result is finite).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_opacus(mechanism, steps).get_epsilon(delta=delta))


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                accountant: str = "rdp") -> float:
    """Epsilon after ``steps`` compositions of the Poisson-subsampled Gaussian mechanism.

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation over the clipping norm (sensitivity), ``sigma > 0``.
    sample_rate
        Probability ``q`` that a unit (sample or site) takes part in one step, in (0, 1].
    steps
        Number of compositions (optimiser steps, or rounds).
    delta
        Target delta in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus).

    Examples
    --------
    The DP-SGD MNIST setting of Abadi et al. (sigma 1.1, batch 256 of 60 000, 60 epochs):

    >>> round(epsilon_for(1.1, 256 / 60000, 14100, 1e-5), 3)
    2.6
    """
    _check_event(noise_multiplier, sample_rate, steps)
    _check_delta(delta)
    _check_mechanism(accountant)
    return _epsilon_of([(noise_multiplier, sample_rate, steps)], delta, accountant)


@functools.lru_cache(maxsize=256)
def noise_for(target_epsilon: float, sample_rate: float, steps: int, delta: float,
              accountant: str = "rdp", tolerance: float = 0.01) -> float:
    """Smallest noise multiplier (to ``tolerance`` in epsilon) whose epsilon after ``steps`` is
    at most ``target_epsilon`` (Opacus' ``get_noise_multiplier`` binary search).

    Raises
    ------
    ValueError
        For invalid arguments, and when no noise below 1e6 reaches ``target_epsilon``.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    _check_event(1.0, sample_rate, steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1 to calibrate noise, got {steps}")
    _check_delta(delta)
    _check_mechanism(accountant)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    lo, hi = 0.0, 1.0
    while _epsilon_of([(hi, sample_rate, steps)], delta, accountant) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(
                f"target_epsilon {target_epsilon} cannot be reached with noise_multiplier <= 1e6 "
                f"(sample_rate {sample_rate}, {steps} steps, delta {delta})"
            )
    eps_hi = _epsilon_of([(hi, sample_rate, steps)], delta, accountant)
    while target_epsilon - eps_hi > tolerance and hi - lo > 1e-6:
        mid = (lo + hi) / 2
        eps = _epsilon_of([(mid, sample_rate, steps)], delta, accountant)
        if eps <= target_epsilon:
            hi, eps_hi = mid, eps
        else:
            lo = mid
    return hi


def reference_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                      method: str = "rdp") -> float:
    """The same epsilon computed by Google's ``dp_accounting`` (``"rdp"`` or ``"pld"``): an
    independent implementation to cross-check :func:`epsilon_for` against."""
    _check_event(noise_multiplier, sample_rate, steps)
    return reference_epsilon_history([(noise_multiplier, sample_rate, steps)], delta, method)


def reference_epsilon_history(history: Sequence[tuple[float, float, int]], delta: float,
                              method: str = "rdp") -> float:
    """:func:`reference_epsilon` of a whole ``[(noise, rate, steps), ...]`` history."""
    import dp_accounting
    from dp_accounting import pld, rdp

    _check_delta(delta)
    if method not in REFERENCE_METHODS:
        raise ValueError(f"method must be one of {', '.join(REFERENCE_METHODS)}, got {method!r}")
    acc = rdp.RdpAccountant() if method == "rdp" else pld.PLDAccountant()
    for z, q, t in history:
        if t <= 0:
            continue
        event: Any = dp_accounting.GaussianDpEvent(z)
        if q < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        acc.compose(dp_accounting.SelfComposedDpEvent(event, int(t)))
    return float(acc.get_epsilon(delta))


def client_level_epsilon(noise_multiplier: float, sites_per_round: int, num_sites: int, rounds: int,
                         delta: float, accountant: str = "rdp") -> float:
    """Epsilon of DP-FedAvg (McMahan et al., ICLR 2018) after ``rounds`` rounds in which
    ``sites_per_round`` of ``num_sites`` sites are sampled (rate ``sites_per_round / num_sites``)."""
    if not 1 <= sites_per_round <= num_sites:
        raise ValueError(f"sites_per_round must be in [1, num_sites={num_sites}], got {sites_per_round}")
    return epsilon_for(noise_multiplier, sites_per_round / num_sites, rounds, delta, accountant)


# --------------------------------------------------------------------------------------------
# A serialisable accountant
# --------------------------------------------------------------------------------------------


class Accountant:
    """An accountant whose whole state is its history of ``(noise, rate, steps)`` entries.

    The history is what Opacus' accountants keep; storing it (not derived numbers) means a
    resumed run, or a site receiving its state back from the server, continues the exact
    composition. :meth:`state` is a flat dict of scalars and lists of scalars, so it fits in a
    Flower ConfigRecord (fedsilo site state) and in checkpoints.

    Parameters
    ----------
    mechanism
        ``"rdp"`` or ``"prv"``.
    history
        Previous ``(noise_multiplier, sample_rate, steps)`` entries.
    """

    def __init__(self, mechanism: str = "rdp", history: Sequence[tuple[float, float, int]] = ()) -> None:
        _check_mechanism(mechanism)
        self.mechanism = mechanism
        self.history: list[tuple[float, float, int]] = []
        for z, q, t in history:
            self.step(z, q, t)

    def __len__(self) -> int:
        """Total number of compositions."""
        return sum(t for _, _, t in self.history)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Compose ``steps`` more releases (merged into the last entry when identical)."""
        _check_event(noise_multiplier, sample_rate, steps)
        if steps == 0:
            return
        z, q = float(noise_multiplier), float(sample_rate)
        if self.history and self.history[-1][:2] == (z, q):
            self.history[-1] = (z, q, self.history[-1][2] + steps)
        else:
            self.history.append((z, q, int(steps)))

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any release)."""
        _check_delta(delta)
        return _epsilon_of(self.history, delta, self.mechanism)

    def projected_epsilon(self, delta: float, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Epsilon after ``steps`` more releases (the accountant itself is not changed)."""
        _check_delta(delta)
        trial = Accountant(self.mechanism, self.history)
        trial.step(noise_multiplier, sample_rate, steps)
        return trial.epsilon(delta)

    def opacus(self):
        """An Opacus accountant (``IAccountant``) holding this history; Opacus' optimiser hook
        appends to it, and :meth:`sync_from` reads it back."""
        return _opacus(self.mechanism, self.history)

    def sync_from(self, opacus_accountant: Any) -> None:
        """Take over the history of an Opacus accountant (after DP-SGD steps)."""
        self.history = []
        for z, q, t in opacus_accountant.history:
            self.step(float(z), float(q), int(t))

    # -- serialisation -------------------------------------------------------------------------

    def state(self, prefix: str = "dp") -> dict[str, str | list[float] | list[int]]:
        """ConfigRecord-compatible state: ``{prefix-mechanism, prefix-noise, prefix-rate, prefix-steps}``."""
        return {
            f"{prefix}-mechanism": self.mechanism,
            f"{prefix}-noise": [z for z, _, _ in self.history],
            f"{prefix}-rate": [q for _, q, _ in self.history],
            f"{prefix}-steps": [t for _, _, t in self.history],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], prefix: str = "dp", mechanism: str = "rdp") -> Accountant:
        """Rebuild from :meth:`state` output; an empty state gives a fresh ``mechanism`` accountant.

        Raises
        ------
        ValueError
            When the state is partial or its lists differ in length, or its mechanism differs
            from ``mechanism`` (a budget cannot be continued under another accountant).
        """
        keys = [f"{prefix}-{k}" for k in STATE_FIELDS]
        present = [k in state for k in keys]
        if not any(present):
            return cls(mechanism)
        if not all(present):
            missing = [k for k, p in zip(keys, present, strict=True) if not p]
            raise ValueError(f"accountant state is incomplete: missing {missing}")
        stored = str(state[keys[0]])
        if stored != mechanism:
            raise ValueError(
                f"accountant state was kept by the {stored!r} accountant, but {mechanism!r} was requested; "
                f"a privacy budget cannot change accountant mid-run"
            )
        noise, rate, steps = (list(state[k]) for k in keys[1:])
        if not len(noise) == len(rate) == len(steps):
            raise ValueError(
                f"accountant state lists must have equal lengths, got {len(noise)}, {len(rate)}, {len(steps)}"
            )
        return cls(stored, list(zip(noise, rate, [int(t) for t in steps], strict=True)))


__all__ = [
    "Accountant",
    "MECHANISMS",
    "PrivacyBudgetExhausted",
    "client_level_epsilon",
    "default_delta",
    "epsilon_for",
    "noise_for",
    "reference_epsilon",
    "reference_epsilon_history",
]
