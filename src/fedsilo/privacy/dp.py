"""Sample-level differential privacy at a site: DP-SGD with Opacus.

DP-SGD (Abadi et al., "Deep learning with differential privacy", CCS 2016) clips every
per-sample gradient to L2 norm ``C`` (``privacy.max_grad_norm``), sums, adds
``N(0, (sigma C)^2)`` noise and averages over the expected batch size; batches are drawn by
Poisson sampling (each sample independently with rate ``q``), which is what the accountant
assumes. fedsilo uses Opacus' :class:`~opacus.PrivacyEngine` for all of it; this module adds
what federation needs around it:

- a **plan** per site and round (:func:`plan_sample_dp`): ``q = 1 / batches per epoch`` (Opacus'
  convention), ``sigma`` either given or calibrated so that the site's epsilon after
  ``federation.rounds`` rounds is ``privacy.epsilon``, and delta (default ``min(1e-5, 1/n)``);
- the **accountant** travels as site state (``TrainContext.site_state``): the server stores it,
  checkpoints it and sends it back, so resume and later rounds continue the same budget;
- **budgets**: a round that would take the site above ``privacy.max_epsilon`` is refused
  (:class:`~fedsilo.privacy.accounting.PrivacyBudgetExhausted`), and after each round the site
  tells the server (site-state key ``site-done``) when it cannot afford another one, so the
  server stops sampling it and ends the run cleanly when no site is left;
- **DP-compatible models** (:func:`make_dp_compatible`): BatchNorm -> GroupNorm and no in-place
  activations, applied in the model *definition* (``Task.build_model``) so the server and every
  site agree on the state-dict keys;
- **GANs**: only the discriminator sees real images, so only it is made private (its training
  phase; see :mod:`fedsilo.training`); the generator is trained from the private discriminator's
  outputs and is private by post-processing (Xie et al., "Differentially private GAN",
  arXiv:1802.06739; Torkzadehmahani et al., CVPR-W 2019).

Noise and Poisson sampling draw from ``torch.Generator`` s the caller passes in. The training
loop seeds them from ``os.urandom`` at the site (:func:`fedsilo.seeding.private_generator`), so no
other party can regenerate the noise; with ``privacy.reproducible_noise = true`` (simulations
only) they are seeded from the experiment seed and a private run repeats exactly. Opacus'
``secure_mode`` (``torchcsprng``) is not packaged for this torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedsilo.config.privacy_schema import PrivacySection
from fedsilo.privacy.accounting import Accountant, PrivacyBudgetExhausted, default_delta, noise_for
from fedsilo.rounds import SITE_DONE

logger = logging.getLogger(__name__)

#: Prefix of the accountant's keys in the site state.
STATE_PREFIX = "dp"
_WARNED: set[str] = set()


# --------------------------------------------------------------------------------------------
# DP-compatible models
# --------------------------------------------------------------------------------------------


def make_dp_compatible(model: nn.Module, name: str = "model") -> nn.Module:
    """A copy of ``model`` Opacus can compute per-sample gradients for, or ``model`` itself.

    BatchNorm mixes the samples of a batch (no per-sample gradient exists); Opacus'
    ``ModuleValidator.fix`` replaces it by GroupNorm (``min(32, C)`` groups), which changes the
    state-dict keys (no running statistics), so every party must build the same converted model.
    In-place activations are switched off (Opacus' backward hooks forbid modifying their views).
    A warning names what was replaced (once per process and model).

    Raises
    ------
    ValueError
        When layers remain that Opacus cannot make private.
    """
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    changed: list[str] = []
    if errors:
        changed = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})
        model = ModuleValidator.fix(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    remaining = ModuleValidator.validate(model, strict=False)
    if remaining:
        raise ValueError(f"{name} has layers DP-SGD cannot train even after conversion: {remaining}")
    if changed and name not in _WARNED:
        _WARNED.add(name)
        logger.warning("DP-SGD: %s uses %s, which mixes samples; replaced by GroupNorm for every party "
                       "(state-dict keys change: no running statistics)", name, ", ".join(changed))
    return model


# --------------------------------------------------------------------------------------------
# Planning a site's DP-SGD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleDPPlan:
    """DP-SGD settings of one site.

    Attributes
    ----------
    noise_multiplier
        sigma: noise std over ``max_grad_norm``.
    max_grad_norm
        Per-sample clipping norm C.
    sample_rate
        Poisson rate q = 1 / batches per epoch.
    batch_size
        Expected batch size (``int(n q)``, the DP-SGD average's denominator).
    steps_per_round
        Optimiser steps (compositions) per round.
    delta
        Target delta.
    accountant
        ``"rdp"`` or ``"prv"``.
    max_epsilon
        Hard budget (0 = none).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    batch_size: int
    steps_per_round: int
    delta: float
    accountant: str
    max_epsilon: float = 0.0


def plan_sample_dp(privacy: PrivacySection, n: int, batch_size: int, steps_per_round: int, rounds: int) -> SampleDPPlan | None:
    """The plan for a site with ``n`` training samples, or None when sample-level DP is off.

    Parameters
    ----------
    privacy
        The ``[privacy]`` config section.
    n
        Training samples at the site.
    batch_size
        Configured batch size (the expected size of a Poisson batch).
    steps_per_round
        Optimiser steps per round.
    rounds
        Rounds of the run (the calibration horizon for a target epsilon; a site sampled in fewer
        rounds ends below the target).
    """
    if privacy.mode != "sample" or math.isinf(privacy.epsilon):
        return None
    if n < 1:
        raise ValueError(f"n must be >= 1 for DP-SGD, got {n}")
    if batch_size < 1 or steps_per_round < 1 or rounds < 1:
        raise ValueError(f"batch_size, steps_per_round and rounds must be >= 1, got {batch_size}, "
                         f"{steps_per_round}, {rounds}")
    q = 1.0 / math.ceil(n / batch_size)
    delta = privacy.delta or default_delta(n)
    if privacy.epsilon:
        sigma = noise_for(privacy.epsilon, q, rounds * steps_per_round, delta, privacy.accountant)
    else:
        sigma = privacy.noise_multiplier
    return SampleDPPlan(sigma, privacy.max_grad_norm, q, max(1, int(n * q)), steps_per_round, delta,
                        privacy.accountant, privacy.max_epsilon)


# --------------------------------------------------------------------------------------------
# Private training
# --------------------------------------------------------------------------------------------


class PrivateTrainer:
    """A module, optimiser and Poisson index loader made private by Opacus' ``PrivacyEngine``.

    The loader yields index tensors ``(B,)`` into the site's data (B varies, possibly 0): the
    task turns them into batches (``data.batch(idx, device)``). Use :meth:`step` instead of
    ``optimizer.step()`` to add data-independent gradient terms (FedProx) after the noise, and
    :meth:`close` (or the context manager) to remove Opacus' hooks from the model.

    Parameters
    ----------
    module, optimizer
        The model (trained in place) and its optimiser.
    n
        Samples in the data the indices address.
    plan
        The site's :class:`SampleDPPlan`.
    accountant
        The site's accountant; Opacus' hook composes every step into it.
    batch_generator, noise_generator
        Seeded generators for Poisson sampling (a CPU generator) and for the Gaussian noise
        (on the module's device: Opacus draws the noise there).
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, n: int, plan: SampleDPPlan,
                 accountant: Accountant, *, batch_generator: torch.Generator,
                 noise_generator: torch.Generator) -> None:
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        if accountant.mechanism != plan.accountant:
            raise ValueError(f"accountant mechanism {accountant.mechanism!r} differs from the plan's "
                             f"{plan.accountant!r}")
        self.plan = plan
        self.accountant = accountant
        with warnings.catch_warnings():
            # "Secure RNG turned off": noise comes from the noise_generator we pass (seeded from
            # os.urandom unless privacy.reproducible_noise); see the module docstring.
            warnings.simplefilter("ignore", UserWarning)
            self.engine = PrivacyEngine(accountant=plan.accountant)
        self.engine.accountant = accountant.opacus()
        loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=math.ceil(n * plan.sample_rate),
                            generator=batch_generator)
        if len(loader) != round(1 / plan.sample_rate):
            raise ValueError(f"plan.sample_rate {plan.sample_rate} does not match n = {n}: expected "
                             f"1 / {len(loader)}")
        self.module, self.optimizer, self.loader = self.engine.make_private(
            module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm, poisson_sampling=True, noise_generator=noise_generator,
        )

    def batches(self, steps: int | None = None) -> Iterator[torch.Tensor]:
        """Poisson-sampled index batches, ``steps`` of them (default: the plan's steps per round)."""
        steps = self.plan.steps_per_round if steps is None else steps
        done = 0
        while done < steps:
            for (idx,) in self.loader:
                yield idx.long()
                done += 1
                if done == steps:
                    return

    def step(self, extra_grad: Callable[[], None] | None = None,
             extra_rows: list[torch.Tensor] | None = None) -> None:
        """Clip, noise and apply one DP-SGD step; ``extra_grad`` may add data-independent terms
        to ``p.grad`` after the noise (post-processing, e.g. FedProx's ``mu (w - w_global)``);
        ``extra_rows`` (one ``(k, *p.shape)`` tensor per parameter, in :attr:`optimizer`'s order)
        are further per-sample gradients, clipped and summed like the others (audit canaries)."""
        if extra_rows is not None:
            for p, rows in zip(self.optimizer.params, extra_rows, strict=True):
                p.grad_sample = torch.cat([p.grad_sample, rows.to(p.grad_sample.dtype)])
        if self.optimizer.pre_step():
            if extra_grad is not None:
                extra_grad()
            self.optimizer.original_optimizer.step()

    def noise_step(self, extra_grad: Callable[[], None] | None = None,
                   extra_rows: list[torch.Tensor] | None = None) -> None:
        """The DP-SGD step of an empty Poisson batch: no sample, so the clipped sum is zero and
        the update is the noise alone; composed into the accountant like any other step (which
        counts every step, empty or not)."""
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.step(extra_grad, extra_rows)

    @contextlib.contextmanager
    def no_grad_sample(self) -> Iterator[None]:
        """Forward/backward passes that must not record per-sample gradients (the generator step
        of a GAN through a private discriminator)."""
        self.module.disable_hooks()
        try:
            yield
        finally:
            self.module.enable_hooks()

    def close(self) -> None:
        """Take Opacus' accounting back into :attr:`accountant`; remove hooks and per-sample state."""
        self.accountant.sync_from(self.engine.accountant)
        self.optimizer.zero_grad(set_to_none=True)
        self.module._close()

    def __enter__(self) -> PrivateTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SiteDP:
    """Sample-level DP of one site for one round: plan, budget check, accountant in site state.

    Typical use (the training loop, :mod:`fedsilo.training`, does this for every task)::

        dp = SiteDP.begin(cfg.privacy, n=len(data), batch_size=..., steps_per_round=...,
                          rounds=cfg.federation.rounds, site_state=ctx.site_state)
        if dp is not None:
            with dp.make_private(model, opt, batch_generator=g1, noise_generator=g2) as pt:
                for idx in pt.batches():
                    ...; loss.backward(); pt.step()   # pt.noise_step() for an empty batch
            metrics.update(dp.finish())
    """

    def __init__(self, plan: SampleDPPlan, accountant: Accountant, site_state: MutableMapping[str, Any]) -> None:
        self.plan = plan
        self.accountant = accountant
        self.site_state = site_state
        self.n: int | None = None

    @classmethod
    def begin(cls, privacy: PrivacySection, *, n: int, batch_size: int, steps_per_round: int, rounds: int,
              site_state: MutableMapping[str, Any]) -> SiteDP | None:
        """Plan this round; None when sample-level DP is off.

        Raises
        ------
        PrivacyBudgetExhausted
            When this round would take the site's epsilon above ``privacy.max_epsilon``.
        """
        plan = plan_sample_dp(privacy, n, batch_size, steps_per_round, rounds)
        if plan is None:
            return None
        accountant = Accountant.from_state(site_state, STATE_PREFIX, plan.accountant)
        if plan.max_epsilon:
            eps = accountant.projected_epsilon(plan.delta, plan.noise_multiplier, plan.sample_rate,
                                               plan.steps_per_round)
            if eps > plan.max_epsilon:
                raise PrivacyBudgetExhausted(
                    f"another round would take this site's epsilon to {eps:.3f} > privacy.max_epsilon = "
                    f"{plan.max_epsilon} (delta {plan.delta:g})"
                )
        site = cls(plan, accountant, site_state)
        site.n = n
        return site

    def make_private(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
                     batch_generator: torch.Generator, noise_generator: torch.Generator) -> PrivateTrainer:
        """Wrap ``module`` and ``optimizer`` for this round (see :class:`PrivateTrainer`)."""
        if self.n is None:
            raise ValueError("SiteDP.make_private needs a SiteDP made by SiteDP.begin")
        return PrivateTrainer(module, optimizer, self.n, self.plan, self.accountant,
                              batch_generator=batch_generator, noise_generator=noise_generator)

    def finish(self) -> dict[str, float]:
        """Store the accountant (and ``site-done`` when no further round fits the budget) in the
        site state; return this round's metrics ``train_epsilon``, ``train_delta``,
        ``train_noise_multiplier``."""
        plan = self.plan
        self.site_state.update(self.accountant.state(STATE_PREFIX))
        eps = self.accountant.epsilon(plan.delta)
        if plan.max_epsilon:
            nxt = self.accountant.projected_epsilon(plan.delta, plan.noise_multiplier, plan.sample_rate,
                                                    plan.steps_per_round)
            if nxt > plan.max_epsilon:
                self.site_state[SITE_DONE] = (f"privacy budget: epsilon {eps:.3f} spent, another round would "
                                              f"reach {nxt:.3f} > max_epsilon {plan.max_epsilon}")
                logger.info("Site privacy budget reached (epsilon %.3f of %.3f)", eps, plan.max_epsilon)
        return {"train_epsilon": eps, "train_delta": plan.delta, "train_noise_multiplier": plan.noise_multiplier}


__all__ = [
    "PrivateTrainer",
    "SampleDPPlan",
    "SiteDP",
    "make_dp_compatible",
    "plan_sample_dp",
]
