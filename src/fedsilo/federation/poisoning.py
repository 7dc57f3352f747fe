"""Model-poisoning attacks for robustness studies ONLY (benchmarks and tests).

A site whose node config holds ``attack = "<name>"`` replaces its honest update by a poisoned
one after local training. This is an explicit hook to measure how aggregation strategies and
update validation cope with a malicious or broken site (``benchmarks/poisoning.py``); a real
deployment never sets it (``fedsilo deploy supernode`` does not pass it).

- ``signflip10``: the update is negated and scaled by 10: ``w = g - 10 (w_honest - g)`` for the
  global weights ``g`` (a standard sign-flipping attack, e.g. Allen-Zhu et al., "Byzantine-
  resilient non-convex SGD", ICLR 2021; Karimireddy et al., ICML 2021).
- ``nan``: every floating-point array is NaN (a crashed or corrupted site).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch

logger = logging.getLogger(__name__)

NODE_CONFIG_KEY = "attack"


def _signflip(scale: float) -> Callable[[dict[str, torch.Tensor], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    def attack(trained: dict[str, torch.Tensor], start: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (start[k] - scale * (v - start[k])).to(v.dtype) if v.is_floating_point() else v
                for k, v in trained.items()}

    return attack


def _nan(trained: dict[str, torch.Tensor], start: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in trained.items()}


ATTACKS: dict[str, Callable[[dict[str, torch.Tensor], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "signflip10": _signflip(10.0),
    "nan": _nan,
}


def poison(name: str, trained: dict[str, torch.Tensor], start: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The poisoned state dict for attack ``name`` from the honest ``trained`` state and the round's ``start``.

    Raises
    ------
    ValueError
        Unknown attack name.
    """
    if name not in ATTACKS:
        raise ValueError(f"node config attack must be one of {', '.join(sorted(ATTACKS))}, got {name!r}")
    return ATTACKS[name](trained, start)
