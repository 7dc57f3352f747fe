"""The one site-training loop (fedsilo.training): phases, DP-SGD, FedProx, empty batches."""

from __future__ import annotations

import torch

from fedsilo.tasks import TrainContext, make_task
from fedsilo.training import SiteRound, train_site
from helpers import gan_config


def _gan_cfg(*overrides: str):
    """One site of 40 phantom images, DP-SGD with noise multiplier 1 (3 steps a round)."""
    return gan_config("data.val_fraction=0.0", "data.phantom.n_train=40", "partition.name=iid",
                      "federation.num_sites=1", "train.batch_size=8", "privacy.mode=sample",
                      "privacy.noise_multiplier=1.0", *overrides)


def _ctx(state: dict | None = None) -> TrainContext:
    return TrainContext(round=1, site_index=0, site_name="site-1", device=torch.device("cpu"),
                        site_state={} if state is None else state)


def test_private_gan_round_trains_the_discriminator_privately_and_the_generator_from_it():
    task = make_task(_gan_cfg())
    model = task.build_model()
    data = task.site_data(0).train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state: dict = {}
    round_ = SiteRound(task, model, data, _ctx(state))
    assert round_.private.module._module is model.discriminator
    for idx in round_.batches():
        round_.step(idx)
        # the generator's phase ran through D with per-sample gradients off: D's per-sample
        # gradients are still those of its own (private) step, one row per real image and fake
        rows = len(idx) + task.cfg.train.batch_size
        assert all(p.grad_sample.shape[0] == rows for p in model.discriminator.parameters())
    result = round_.finish()
    assert state["dp-steps"] == [3] and result.metrics["train_epsilon"] > 0
    assert set(result.metrics) >= {"train_d_loss", "train_g_loss"}
    after = model.state_dict()
    for part in ("generator.", "discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part


def test_train_site_is_seeded_by_round_and_site():
    task = make_task(_gan_cfg("privacy.mode=none"))
    data = task.site_data(0).train
    a, b, c = (task.build_model() for _ in range(3))
    train_site(task, a, data, _ctx())
    train_site(task, b, data, _ctx())
    train_site(task, c, data, TrainContext(round=2, site_index=0, site_name="site-1", device=torch.device("cpu")))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
