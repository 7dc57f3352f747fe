"""An exponential moving average (EMA) of part of a model's weights, kept round by round.

GAN practice evaluates and releases a running average of the generator's weights rather than its
last iterate (Karras et al., "Progressive growing of GANs", ICLR 2018; Yazici et al., "The unusual
effectiveness of averaging in GAN training", ICLR 2019): the average sits nearer the centre of
the generator's oscillation around the equilibrium and keeps more of the modes it passes through.

fedsilo keeps the average where the released model lives, the coordinator (or the centralised
trainer), and updates it once per round from the round's global weights::

    ema_1 = w_1,        ema_t = decay * ema_{t-1} + (1 - decay) * w_t

over every floating-point entry whose key starts with ``prefix`` (weights and normalisation
statistics alike); integer entries (batch-norm counters) are copied from ``w_t``. The training
weights are never replaced: sites keep training the raw aggregate, and the average is a
post-processing of what the coordinator already holds (no extra traffic, no privacy cost, and it
works under secure aggregation, which reveals only the aggregate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """A per-round EMA of the state-dict entries under ``prefix`` (inactive when ``decay == 0``).

    Parameters
    ----------
    decay
        Weight of the previous average, in [0, 1); 0 switches the average off (:attr:`active` is
        False and the released weights are the raw ones).
    prefix
        Which entries are averaged (e.g. ``"generator."``); ``""`` = all of them.
    """

    def __init__(self, decay: float = 0.0, prefix: str = "") -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.prefix = float(decay), prefix
        #: the average (None until the first update), CPU tensors
        self.average: dict[str, torch.Tensor] | None = None
        self.updates = 0

    @property
    def active(self) -> bool:
        """Whether an average is kept at all."""
        return self.decay > 0.0

    def update(self, state: Mapping[str, torch.Tensor]) -> None:
        """Fold one round's global weights into the average (the first call copies them)."""
        if not self.active:
            return
        part = {k: v.detach().cpu() for k, v in state.items() if k.startswith(self.prefix)}
        if not part:
            raise ValueError(f"no state entry starts with {self.prefix!r}; keys: {sorted(state)[:5]}...")
        if self.average is None:
            self.average = {k: v.clone() for k, v in part.items()}
        else:
            if set(part) != set(self.average):
                raise ValueError(f"the averaged entries changed between rounds: {sorted(set(part) ^ set(self.average))}")
            for k, v in part.items():
                if v.is_floating_point():
                    self.average[k].mul_(self.decay).add_(v.to(self.average[k].dtype), alpha=1.0 - self.decay)
                else:
                    self.average[k] = v.clone()
        self.updates += 1

    def released(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with the averaged entries replaced by the average (``state`` itself, as a
        dict, when inactive or before the first update)."""
        out = dict(state)
        if self.average is not None:
            for k, v in self.average.items():
                out[k] = v.to(state[k].device, state[k].dtype).clone() if k in state else v.clone()
        return out

    def apply_to(self, model: nn.Module) -> nn.Module:
        """Load the average into ``model`` in place (nothing when there is none); returns ``model``."""
        if self.average is not None:
            model.load_state_dict(self.released(model.state_dict()), strict=True)
        return model

    def final(self, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """What a run's final file holds: ``model`` (the released weights) and, when an average
        replaced part of them, ``model_raw`` (the last raw global weights) and ``ema_decay``."""
        if self.average is None:
            return {"model": dict(state)}
        return {"model": self.released(state), "model_raw": dict(state), "ema_decay": self.decay}

    def state_dict(self) -> dict[str, Any]:
        """The average for a checkpoint (None entries when none is kept yet)."""
        return {"decay": self.decay, "prefix": self.prefix, "updates": self.updates,
                "average": None if self.average is None else {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s output; None (a checkpoint written without an average)
        restarts the average at the next update."""
        if state is None or state.get("average") is None:
            self.average, self.updates = None, 0
            return
        if state.get("prefix", self.prefix) != self.prefix:
            raise ValueError(f"the checkpoint averages entries under {state.get('prefix')!r}, this run under "
                             f"{self.prefix!r}")
        self.average = {k: v.detach().cpu().clone() for k, v in state["average"].items()}
        self.updates = int(state.get("updates", 0))
