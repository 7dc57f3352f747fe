"""Secure aggregation (Flower's SecAgg+): the coordinator holds only masked updates and their
weighted mean, which equals plain FedAvg's within the quantisation error; a site lost mid-round is
recovered from its neighbours' shares; strategies that need individual updates are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedsilo.config import ConfigError
from fedsilo.federation import client_app as real
from fedsilo.federation.inprocess import InProcessGrid, run_on_grid
from fedsilo.report import write_run_files
from fedsilo.run.app import make_server_app
from fedsilo.run.folder import RunDir
from fedsilo.run.start import start_run
from helpers import gan_config, phantom_classification_config, seg_config

SECURE = "federation.secure_aggregation=true"
CONFIGS = {
    "classification": lambda *o: phantom_classification_config("federation.rounds=1", *o),
    "segmentation": lambda *o: seg_config("federation.rounds=1", "segmentation.hd95=false", *o),
    "synthesis": lambda *o: gan_config("federation.rounds=1", "federation.eval_every=5", *o),
}


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run.final_path, weights_only=False)["model"]


def _bound(cfg, sites: int) -> float:
    """SecAgg+'s rounding error of the mean update per coordinate: at most one quantisation step
    2c / Q per site, over the sum of the weight shares (>= 1: the largest site's share is 1)."""
    s = cfg.federation.secagg
    return sites * 2 * s.clipping_range / s.quantization_range


def _assert_close(plain, secure, bound):
    for k, a in plain.items():
        if a.is_floating_point():
            diff = (a.double() - secure[k].double()).abs().max().item()
            assert diff <= bound + 1e-6 * max(1.0, a.abs().max().item()), (k, diff, bound)
        else:  # integer buffers (BatchNorm's step counter) are not summed: they keep the initial value
            assert secure[k].eq(0).all(), k


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_the_secure_mean_is_fedavgs_within_the_quantisation_error(task, tmp_path):
    plain = start_run(CONFIGS[task](), tmp_path / "plain")
    cfg = CONFIGS[task](SECURE)
    secure = start_run(cfg, tmp_path / "secure")
    _assert_close(_weights(plain), _weights(secure), _bound(cfg, cfg.federation.num_sites))
    rows = [r for r in secure.read_metrics() if r["scope"] != "global" and "secagg_clipped" in r]
    assert rows and all(r["secagg_clipped"] == 0.0 for r in rows)  # nothing was clipped: the bound holds
    if task == "classification":
        write_run_files(secure.path)
        write_run_files(plain.path)
        assert "the coordinator saw only masked updates and their weighted mean" in (secure.path / "MODEL_CARD.md").read_text()
        assert "the coordinator saw only masked updates" in (secure.path / "report.html").read_text()
        assert "received each site's model update in the clear" in (plain.path / "MODEL_CARD.md").read_text()


def _dropping_app(node: int, stage: str):
    """The real ClientApp, but ``node`` fails every message of the SecAgg+ ``stage`` (and, outside
    secure aggregation, every training message): a site lost mid-round."""

    def app(msg: Message, context: Context) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if msg.metadata.dst_node_id == node and msg.metadata.message_type == "train":
            if configs is None or configs.get(Key.STAGE) == stage:
                raise ConnectionError("site lost")
        return real.app(msg, context)

    return app


def test_a_site_lost_mid_round_is_unmasked_from_its_neighbours_shares(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 5} for i in range(5)]
    five = ("federation.num_sites=5", "data.phantom.n_train=100", "federation.rounds=1")
    results = {}
    for name, extra in (("plain", ()), ("secure", (SECURE,))):
        cfg = phantom_classification_config(*five, *extra)
        run = RunDir.create(tmp_path / name, cfg, "local")
        # the third site (node 1002) trains, but is gone before it sends its masked update
        run_on_grid(make_server_app(run.path), InProcessGrid(_dropping_app(1002, Stage.COLLECT_MASKED_VECTORS), nodes))
        results[name] = run
        rows = [r for r in run.read_metrics() if r["scope"] == "global" and "sites_aggregated" in r]
        assert [r["sites_aggregated"] for r in rows] == [4]
    cfg = phantom_classification_config(*five, SECURE)
    # FedAvg over the 4 survivors, within the rounding error
    _assert_close(_weights(results["plain"]), _weights(results["secure"]), _bound(cfg, 4))


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "centeredclip"])
def test_strategies_that_need_each_update_are_refused(strategy):
    with pytest.raises(ConfigError, match=rf"federation.strategy.name = '{strategy}' cannot run with "
                                          r"federation.secure_aggregation = true: it needs each site's update"):
        phantom_classification_config(SECURE, f"federation.strategy.name={strategy}")
    with pytest.raises(ConfigError, match="privacy.mode = 'client' with federation.secure_aggregation = true is "
                                          "distributed DP: .* needs privacy.clipping = 'fixed' and "
                                          "privacy.clipping_side = 'client'"):
        phantom_classification_config(SECURE, "privacy.mode=client")
    for ok in ("fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm"):
        phantom_classification_config(SECURE, f"federation.strategy.name={ok}")


def test_what_the_coordinator_holds_of_one_site_inverts_to_noise():
    """Gradient inversion (Geiping et al. 2020) of one site's one-image update: the plain update
    gives the image back; the same update as SecAgg+ sends it (quantised, plus the site's own mask;
    its pairwise masks would add more) gives nothing better than a random image."""
    import os

    from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition, parameters_mod
    from flwr.common.secure_aggregation.quantization import dequantize, quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from torch import nn

    from fedsilo.audit.attacks.gradient_inversion import client_update, invert_update
    from fedsilo.audit.attacks.metrics import psnr
    from fedsilo.audit.attacks.mia import cross_entropy_losses

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    x, y = (torch.sin(2 * xx) * torch.cos(3 * yy))[None, None], torch.tensor([3])
    update = client_update(model, cross_entropy_losses, x, y, lr=0.1)
    kw = {"lr": 0.1, "iterations": 300, "tv_weight": 1e-3}
    plain = invert_update(model, cross_entropy_losses, update, y, x.shape, **kw)
    quantised = quantize([u.numpy() for u in update.values()], 1.0, 2**22)
    mask = pseudo_rand_gen(os.urandom(32), 2**32, [q.shape for q in quantised])
    masked = parameters_mod(parameters_addition(quantised, mask), 2**32)
    seen = {k: torch.from_numpy(np.asarray(a)).float()
            for k, a in zip(update, dequantize(masked, 1.0, 2**22), strict=True)}
    secure = invert_update(model, cross_entropy_losses, seen, y, x.shape, **kw)
    chance = max(float(psnr(torch.rand(x.shape, generator=torch.Generator().manual_seed(s)) * 2 - 1, x))
                 for s in range(5))  # random images: the noise level
    assert float(psnr(plain, x)) > 30.0
    assert float(psnr(secure, x)) < chance + 3.0, (float(psnr(secure, x)), chance)


DISTRIBUTED = (SECURE, "privacy.mode=client", "privacy.clipping_side=client", "privacy.clipping_norm=0.5")


def test_distributed_dp_puts_the_whole_noise_in_the_sum_and_accounts_for_it(tmp_path):
    """Each of the m = 3 sites adds N(0, sigma^2 C^2 / m): the coordinator's mean update carries
    noise of std sigma C / m per weight (nobody ever saw it without), and the accountant composes
    sigma for the round."""
    from fedsilo.privacy.accounting import epsilon_for

    noisy = start_run(phantom_classification_config(*DISTRIBUTED, "federation.rounds=1", "privacy.noise_multiplier=1.0"),
                      tmp_path / "noisy")
    quiet = start_run(phantom_classification_config(*DISTRIBUTED, "federation.rounds=1",
                                                    "privacy.noise_multiplier=0.000001"), tmp_path / "quiet")
    a, b = _weights(noisy), _weights(quiet)
    diff = torch.cat([(a[k].double() - b[k].double()).flatten() for k in a if a[k].is_floating_point()])
    expected = 1.0 * 0.5 / 3
    # 309 weights: the std is measured to about 4%; 0.2 is 5 standard errors
    assert diff.numel() > 300 and abs(diff.std().item() / expected - 1) < 0.2, (diff.std().item(), expected)
    eps = [r["privacy_epsilon"] for r in noisy.read_metrics() if "privacy_epsilon" in r]
    assert eps == pytest.approx([epsilon_for(1.0, 1.0, 1, 1e-5)])


def test_distributed_dp_accounts_for_the_noise_a_lost_site_took_with_it(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 5} for i in range(5)]
    cfg = phantom_classification_config(*DISTRIBUTED, "federation.num_sites=5", "data.phantom.n_train=100",
                                        "federation.rounds=1", "privacy.noise_multiplier=1.0")
    run = RunDir.create(tmp_path / "run", cfg, "local")
    run_on_grid(make_server_app(run.path), InProcessGrid(_dropping_app(1002, Stage.COLLECT_MASKED_VECTORS), nodes))
    state = torch.load(run.checkpoint_path, weights_only=False)["executor"]["strategy"]
    # 4 of 5 noise shares in the sum: sigma sqrt(4/5), all 5 sites sampled (rate 1)
    assert state["history"] == [(pytest.approx(0.8 ** 0.5), 1.0, 1)]


def test_the_record_names_fedsilo_spells_out_are_flowers():
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE

    from fedsilo.federation.secure import SECAGG_CONFIGS, SECAGG_STATE

    assert (SECAGG_CONFIGS, SECAGG_STATE) == (RECORD_KEY_CONFIGS, RECORD_KEY_STATE)
