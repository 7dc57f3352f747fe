"""Sample-level DP-SGD at a site: DP-compatible models, plans, clipping, budgets, GAN discriminators."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from fedsilo.config import config_from_dict
from fedsilo.models.classifier import GradeCNN
from fedsilo.privacy.accounting import Accountant, PrivacyBudgetExhausted, epsilon_for
from fedsilo.privacy.dp import (
    PrivateTrainer,
    SampleDPPlan,
    SiteDP,
    make_dp_compatible,
    plan_sample_dp,
)
from fedsilo.rounds import SITE_DONE


def _privacy(**kw):
    return config_from_dict({"privacy": {"mode": "sample", **kw}}).privacy


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_batchnorm_becomes_groupnorm_with_a_warning_and_inplace_ops_are_switched_off(caplog):
    model = GradeCNN(3, 5, width=4, depth=2, norm="batch")
    with caplog.at_level(logging.WARNING):
        fixed = make_dp_compatible(model, "toy-cnn-test")
    assert "BatchNorm2d" in caplog.text and "GroupNorm" in caplog.text
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    assert not any("running_mean" in k for k in fixed.state_dict())  # keys change: every party must convert
    assert not any(getattr(m, "inplace", False) for m in fixed.modules())
    already = GradeCNN(3, 5, width=4, depth=2, norm="group")
    assert make_dp_compatible(already) is already


def test_unfixable_model_raises(monkeypatch):
    from opacus.validators import ModuleValidator

    monkeypatch.setattr(ModuleValidator, "fix", staticmethod(lambda m, **kw: m))
    with pytest.raises(ValueError, match="toy has layers DP-SGD cannot train even after conversion"):
        make_dp_compatible(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), "toy")


def test_plan_uses_opacus_sample_rate_and_calibrates_noise_for_the_whole_run():
    plan = plan_sample_dp(_privacy(noise_multiplier=1.3), n=100, batch_size=30, steps_per_round=8, rounds=5)
    # 100 samples in batches of 30 -> 4 batches per epoch -> q = 1/4, expected batch 25, delta min(1e-5, 1/100)
    assert (plan.sample_rate, plan.batch_size, plan.delta, plan.noise_multiplier) == (0.25, 25, 1e-5, 1.3)
    target = plan_sample_dp(_privacy(epsilon=4.0), n=100, batch_size=30, steps_per_round=8, rounds=5)
    eps = epsilon_for(target.noise_multiplier, 0.25, 40, 1e-5)
    assert 4.0 - 0.01 <= eps <= 4.0
    assert plan_sample_dp(_privacy(epsilon=float("inf")), 100, 30, 8, 5) is None  # inf = no DP
    assert plan_sample_dp(config_from_dict({}).privacy, 100, 30, 8, 5) is None
    with pytest.raises(ValueError, match="n must be >= 1 for DP-SGD, got 0"):
        plan_sample_dp(_privacy(), 0, 30, 8, 5)
    with pytest.raises(ValueError, match="must be >= 1, got 30, 0, 5"):
        plan_sample_dp(_privacy(), 100, 30, 0, 5)


def test_dp_sgd_step_clips_each_sample_and_composes_into_the_accountant():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(20, 4) * 10, torch.randn(20, 1)
    plan = SampleDPPlan(noise_multiplier=1e-6, max_grad_norm=1e-3, sample_rate=0.5, batch_size=10,
                        steps_per_round=3, delta=1e-5, accountant="rdp")
    acc = Accountant("rdp", [(1.0, 0.5, 2)])
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with PrivateTrainer(model, opt, 20, plan, acc, batch_generator=_gen(1), noise_generator=_gen(2)) as pt:
        sizes = []
        for idx in pt.batches():
            sizes.append(len(idx))
            pt.optimizer.zero_grad(set_to_none=True)
            nn.functional.mse_loss(pt.module(x[idx]), y[idx]).backward()
            pt.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # each step moves w by at most lr * C * |B| / E[B] (clipped per-sample gradients, tiny noise)
    assert (after - before).norm() <= sum(1e-3 * s / 10 for s in sizes) + 1e-5
    assert (after - before).norm() > 0
    assert len(sizes) == 3
    assert type(pt.loader.batch_sampler).__name__ == "UniformWithReplacementSampler"  # Poisson sampling
    assert acc.history == [(1.0, 0.5, 2), (1e-6, 0.5, 3)]  # Opacus' hook composed 3 steps after the old ones
    assert not hasattr(model, "_module") and all(not hasattr(p, "grad_sample") or p.grad_sample is None
                                                 for p in model.parameters())


def test_plan_and_loader_must_agree():
    plan = SampleDPPlan(1.0, 1.0, 0.5, 10, 1, 1e-5, "rdp")
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="does not match n = 10"):  # q = 0.3 is not 1 / batches per epoch
        PrivateTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), 10, SampleDPPlan(1.0, 1.0, 0.3, 3, 1, 1e-5, "rdp"), Accountant(),
                       batch_generator=_gen(0), noise_generator=_gen(1))
    with pytest.raises(ValueError, match="accountant mechanism 'prv' differs from the plan's 'rdp'"):
        PrivateTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), 20, plan, Accountant("prv"),
                       batch_generator=_gen(0), noise_generator=_gen(1))


def test_site_dp_keeps_the_accountant_in_site_state_and_flags_an_exhausted_budget():
    privacy = _privacy(noise_multiplier=1.0, max_epsilon=0.0)
    state: dict = {}
    for _ in range(2):
        dp = SiteDP.begin(privacy, n=40, batch_size=10, steps_per_round=4, rounds=3, site_state=state)
        model = nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with dp.make_private(model, opt, batch_generator=_gen(0), noise_generator=_gen(1)) as pt:
            for idx in pt.batches():
                pt.optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(pt.module(torch.ones(len(idx), 3)), torch.zeros(len(idx), dtype=torch.long)).backward()
                pt.step()
        metrics = dp.finish()
    assert state["dp-steps"] == [8] and state["dp-rate"] == [0.25]
    assert metrics["train_epsilon"] == pytest.approx(epsilon_for(1.0, 0.25, 8, 1e-5))
    assert SITE_DONE not in state
    # a budget between three and four rounds: round 3 may run; afterwards the site is flagged and refuses
    cap = (epsilon_for(1.0, 0.25, 12, 1e-5) + epsilon_for(1.0, 0.25, 16, 1e-5)) / 2
    capped = _privacy(noise_multiplier=1.0, max_epsilon=cap)
    dp = SiteDP.begin(capped, n=40, batch_size=10, steps_per_round=4, rounds=3, site_state=state)
    dp.accountant.step(1.0, 0.25, 4)  # what Opacus' hook does during the round's 4 steps
    assert dp.finish()["train_epsilon"] <= cap
    assert "privacy budget" in state[SITE_DONE]
    with pytest.raises(PrivacyBudgetExhausted, match="another round would take this site's epsilon"):
        SiteDP.begin(capped, n=40, batch_size=10, steps_per_round=4, rounds=3, site_state=state)


def test_site_dp_without_begin_cannot_make_private():
    plan = SampleDPPlan(1.0, 1.0, 0.5, 10, 1, 1e-5, "rdp")
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="needs a SiteDP made by SiteDP.begin"):
        SiteDP(plan, Accountant(), {}).make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                                   batch_generator=_gen(0), noise_generator=_gen(1))
