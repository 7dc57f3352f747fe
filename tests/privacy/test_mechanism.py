"""The DP-SGD mechanism that runs is the one the accountant describes.

Each test is a property of the mechanism, not a range check: one sample's effect on a step is
bounded by the clipping norm C (neighbouring data sets, every random source fixed), a sample's
clipped gradient never depends on the other samples of its batch, every step is taken (an empty
Poisson batch is noise alone), noise nobody else can regenerate, and refusal of what cannot be
made per-sample.
"""

from __future__ import annotations

import re

import pytest
import torch

from fedsilo.config import ConfigError
from fedsilo.deploy.certs import DeployError
from fedsilo.deploy.run import refuse_simulation_only
from fedsilo.run.load import initial_weights
from fedsilo.tasks import TrainContext, make_task
from fedsilo.training import SiteRound, private_submodule
from helpers import gan_config, phantom_classification_config, seg_config

DP = ("privacy.mode=sample", "privacy.noise_multiplier=1.0", "privacy.max_grad_norm=1.0",
      "privacy.reproducible_noise=true")


def _configs():
    """One private config per task, each site with 40 training samples or more and batches of 8."""
    return {
        "classification": phantom_classification_config(*DP, "train.batch_size=8"),
        "segmentation": seg_config(*DP, "train.batch_size=8"),
        "synthesis": gan_config(*DP, "data.val_fraction=0.0", "data.phantom.n_train=40", "partition.name=iid",
                                "federation.num_sites=1", "train.batch_size=8"),
    }


CONFIGS = _configs()


def _round(cfg, data, state: dict | None = None) -> SiteRound:
    task = make_task(cfg)
    model = task.build_model()
    model.load_state_dict(initial_weights(task))
    ctx = TrainContext(round=1, site_index=0, site_name="site-1", device=torch.device("cpu"),
                       site_state={} if state is None else state)
    round_ = SiteRound(task, model, data, ctx)
    # DP-SGD wraps exactly the part of the model the task declares private (a GAN's discriminator)
    assert round_.private.module._module is private_submodule(task, model)
    return round_


def _private_params(round_: SiteRound) -> list[torch.nn.Parameter]:
    return [p for p in round_.private.module.parameters() if p.requires_grad]


def _step(cfg, data, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One private step on the batch ``idx``: (per-sample gradient rows ``(rows, P)``, their
    clipped sum ``(P,)`` before noise)."""
    round_ = _round(cfg, data)
    round_.step(torch.tensor(idx, dtype=torch.long))
    params = _private_params(round_)
    rows = torch.cat([p.grad_sample.flatten(1) for p in params], 1)
    return rows, torch.cat([p.summed_grad.flatten() for p in params])


def _site(cfg):
    return make_task(cfg).site_data(0).train


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_one_sample_added_moves_the_clipped_sum_by_at_most_c(task):
    cfg = CONFIGS[task]
    data = _site(cfg)
    n = len(data)
    assert n >= 12
    smaller = data.subset(torch.arange(n - 1).numpy())  # the neighbour without the last sample
    batch = [0, 2, 5, 7, 9]
    _, without = _step(cfg, smaller, batch)
    _, with_one = _step(cfg, data, batch + [n - 1])
    moved = (with_one - without).norm().item()
    c = cfg.privacy.max_grad_norm
    # the added sample's clipped row, nothing else: the GAN's fakes do not depend on the real batch,
    # and segmentation draws each slice's augmentation slice after slice (the added one comes last)
    assert 0.05 * c < moved <= c * (1 + 1e-4)


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_a_samples_gradient_does_not_depend_on_its_batch_mates(task):
    cfg = CONFIGS[task]
    data = _site(cfg)
    rows_a, _ = _step(cfg, data, [0, 1, 2])
    rows_b, _ = _step(cfg, data, [0, 3, 4, 5])
    # row 0 is sample 0 in both batches (and for the GAN the fixed fakes come after the reals)
    torch.testing.assert_close(rows_a[0], rows_b[0], rtol=1e-4, atol=1e-6)
    if task == "synthesis":
        torch.testing.assert_close(rows_a[3:], rows_b[4:], rtol=1e-4, atol=1e-6)  # the same fakes


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_an_empty_poisson_batch_is_a_noise_step_that_the_accountant_counts(task):
    cfg = CONFIGS[task]
    state: dict = {}
    round_ = _round(cfg, _site(cfg), state)
    before = [p.detach().clone() for p in _private_params(round_)]
    round_.step(torch.zeros(0, dtype=torch.long))
    moved = [(p.detach() - b).norm().item() for p, b in zip(_private_params(round_), before, strict=True)]
    round_.finish()
    assert state["dp-steps"] == [1]  # one step taken and accounted
    assert sum(m > 0 for m in moved) == len(moved)  # every private parameter got its noise


def test_noise_is_secure_unless_reproducible_noise_is_asked_for():
    cfg = phantom_classification_config("privacy.mode=sample", "privacy.noise_multiplier=1.0", "train.batch_size=8")
    assert not cfg.privacy.reproducible_noise  # the default
    data = _site(cfg)

    def one_round(config) -> torch.Tensor:
        round_ = _round(config, data)
        for idx in round_.batches():
            round_.step(idx)
        round_.finish()
        return torch.cat([p.detach().flatten() for p in _private_params(round_)])

    assert not torch.equal(one_round(cfg), one_round(cfg))  # same config and seed, fresh noise
    seeded = phantom_classification_config("privacy.mode=sample", "privacy.noise_multiplier=1.0",
                                           "train.batch_size=8", "privacy.reproducible_noise=true")
    assert torch.equal(one_round(seeded), one_round(seeded))
    assert seeded.privacy.guarantee == "reproducible noise: simulation only, not a privacy guarantee"
    with pytest.raises(DeployError, match="privacy.reproducible_noise = true is for simulations only"):
        refuse_simulation_only(seeded)
    refuse_simulation_only(cfg)  # secure noise deploys


@pytest.mark.parametrize("method", ["gin+ipa", "fmaug"])
def test_augmentations_that_tie_slices_together_are_refused_under_sample_dp(method):
    with pytest.raises(ConfigError, match=re.escape(f"segmentation.method = '{method}' cannot be combined with "
                                          "privacy.mode = 'sample'")):
        seg_config("privacy.mode=sample", method=method)
    seg_config("privacy.mode=sample", "privacy.epsilon=inf", method=method)  # the non-private sweep point
    seg_config("privacy.mode=sample", method="gin")


def test_a_deployed_site_refuses_reproducible_noise(tmp_path, superlink_identity):
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from fedsilo.config import dumps
    from fedsilo.federation.client_app import site_job
    from fedsilo.federation.messages import CONFIG, CONFIG_TOML

    cfg = phantom_classification_config(*DP)  # (reproducible noise on)
    msg = Message(RecordDict({CONFIG: ConfigRecord({CONFIG_TOML: dumps(cfg)})}), dst_node_id=1, message_type="train")
    node = Context(run_id=1, node_id=1, node_config={"data-path": str(tmp_path)}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="this site refuses privacy.reproducible_noise = true"):
        site_job(msg, node)
