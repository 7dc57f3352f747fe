"""The FedGAN model/training options end to end: the coordinator's generator EMA (evaluated,
checkpointed, resumed, and what `fedsilo sample` and `export` use), DiffAugment in site training,
spectral normalisation's refusal under DP, and a small DP discriminator warm-started from CT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsilo.config import ConfigError
from fedsilo.privacy.accounting import epsilon_for
from fedsilo.report.summary import final_rows
from fedsilo.run.load import initial_weights, load_trained
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run
from fedsilo.tasks import make_task
from helpers import gan_config, pretrain_config

EMA = ("gan.ema_decay=0.5", "federation.rounds=3", "federation.eval_every=1", "eval.keep_models=true")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    return start_run(gan_config(*EMA), tmp_path_factory.mktemp("ema") / "run")


def _generator(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("generator.")}


def test_the_coordinator_averages_the_aggregated_generators_per_round(ema_run):
    final = torch.load(ema_run.final_path, weights_only=False)
    raw = [torch.load(ema_run.round_model_path(r), weights_only=False)["model_raw"] for r in (1, 2, 3)]
    assert final["ema_decay"] == 0.5
    for k, v in _generator(final["model"]).items():
        if v.is_floating_point():  # ema_1 = G_1, ema_t = 0.5 ema_{t-1} + 0.5 G_t
            expected = 0.25 * raw[0][k].double() + 0.25 * raw[1][k].double() + 0.5 * raw[2][k].double()
            torch.testing.assert_close(v.double(), expected, rtol=1e-5, atol=1e-7, msg=k)
        else:
            assert torch.equal(v, raw[2][k])
    assert any(not torch.equal(v, raw[2][k]) for k, v in _generator(final["model"]).items())
    # the discriminator is released as trained; the raw generator stays in final.pt
    for k, v in final["model"].items():
        if k.startswith("discriminator."):
            assert torch.equal(v, final["model_raw"][k])
    assert all(torch.equal(v, raw[2][k]) for k, v in final["model_raw"].items())


def test_evaluation_scores_the_ema_generator(ema_run):
    trained = load_trained(ema_run.path)
    task, test = trained.task, trained.task.test_data()
    logged = final_rows(ema_run)["global"]["test_fd"]
    assert task.evaluate(trained.model, test, trained.device)["fd"] == pytest.approx(logged, rel=1e-6)
    raw = task.build_model()
    raw.load_state_dict(torch.load(ema_run.final_path, weights_only=False)["model_raw"])
    assert task.evaluate(raw, test, trained.device)["fd"] != pytest.approx(logged, rel=1e-6)


def test_sample_and_export_use_the_ema_generator(ema_run, tmp_path):
    from fedsilo.data.sources.medmnist import load_medmnist
    from fedsilo.inference.export import export_run
    from fedsilo.inference.sample import sample_run, to_uint8

    final = torch.load(ema_run.final_path, weights_only=False)
    task = make_task(ema_run.cfg)
    models = {}
    for which in ("model", "model_raw"):
        models[which] = task.build_model()
        models[which].load_state_dict(final[which])
        models[which].eval()
    out = sample_run(ema_run.path, 6, tmp_path / "syn", seed=4)
    got = load_medmnist(out / "synthetic.npz", "train").images
    for which, same in (("model", True), ("model_raw", False)):
        images = task.generate(models[which], 6, None, 4, torch.device("cpu"))[0]
        assert np.array_equal(to_uint8(images), got) is same, which
    assert "ema_decay = 0.5" in (out / "provenance.json").read_text()
    path = export_run(ema_run.path, "torchscript", tmp_path / "export")
    code = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exported = torch.jit.load(str(path))(code)
        torch.testing.assert_close(exported, models["model"].generator(code))
        assert not torch.allclose(exported, models["model_raw"].generator(code), atol=1e-4)


def test_resume_continues_the_ema_bit_for_bit(ema_run, tmp_path):
    def stop(rnd: int) -> None:
        if rnd == 1:
            raise RunInterrupted("test")

    with pytest.raises(RunInterrupted):
        start_run(gan_config(*EMA), tmp_path / "part", on_round_end=stop)
    resumed = torch.load(resume_run(tmp_path / "part").final_path, weights_only=False)
    whole = torch.load(ema_run.final_path, weights_only=False)
    for which in ("model", "model_raw"):
        assert whole[which].keys() == resumed[which].keys()
        assert all(torch.equal(whole[which][k], resumed[which][k]) for k in whole[which]), which


def test_centralised_runs_keep_the_same_ema(tmp_path):
    run = start_run(gan_config("gan.ema_decay=0.9", "federation.rounds=2", "federation.eval_every=5",
                               mode="centralised"), tmp_path / "central")
    final = torch.load(run.final_path, weights_only=False)
    assert final["ema_decay"] == 0.9 and final["mode"] == "centralised"
    g = _generator(final["model"])
    assert any(not torch.equal(v, final["model_raw"][k]) for k, v in g.items())


def test_diffaugment_and_spectral_norm_change_training_and_default_keeps_it(tmp_path):
    one = ("federation.rounds=1", "federation.eval_every=5")
    base = torch.load(start_run(gan_config(*one), tmp_path / "base").final_path, weights_only=False)["model"]
    again = torch.load(start_run(gan_config(*one, "gan.diffaugment=[]"), tmp_path / "again").final_path,
                       weights_only=False)["model"]
    assert all(torch.equal(base[k], again[k]) for k in base)  # the defaults change nothing
    aug = start_run(gan_config(*one, 'gan.diffaugment=["color", "translation", "cutout"]', "gan.spectral_norm=true",
                               "gan.norm=none"), tmp_path / "aug")
    state = torch.load(aug.final_path, weights_only=False)["model"]
    assert "discriminator.stem.0.parametrizations.weight.original" in state
    assert not torch.equal(state["generator.head.0.weight"], base["generator.head.0.weight"])
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_gan_option_configs_are_checked():
    with pytest.raises(ConfigError, match="gan.spectral_norm cannot be combined with privacy.mode = 'sample'"):
        gan_config("gan.spectral_norm=true", "privacy.mode=sample", "privacy.noise_multiplier=1.0")
    with pytest.raises(ConfigError, match="gan.d_blocks must be <= 1 at 28 px"):
        gan_config("gan.d_blocks=2")
    with pytest.raises(ConfigError, match="gan.diffaugment"):
        gan_config('gan.diffaugment=["colour"]')
    with pytest.raises(ConfigError, match="gan.diffaugment lists a policy twice"):
        gan_config('gan.diffaugment=["cutout", "cutout"]')
    with pytest.raises(ConfigError, match="gan.ema_decay"):
        gan_config("gan.ema_decay=1.0")


def test_a_small_dp_discriminator_starts_from_ct_pretraining(tmp_path):
    pre = start_run(pretrain_config(), tmp_path / "pretrain")
    src = torch.load(pre.final_path, weights_only=False)["model"]
    dp = ("privacy.mode=sample", "privacy.noise_multiplier=1.0", "federation.rounds=1", "federation.eval_every=5")
    cfg = gan_config(f"gan.pretrained={pre.path}", *dp, "gan.d_blocks=0", "gan.diffaugment=[\"translation\"]")
    initial = initial_weights(make_task(cfg))
    # BatchNorm -> GroupNorm for DP-SGD; the stem still comes from CT (grey -> colour: replicated / 3)
    assert not any(k.startswith("discriminator.") and "running_mean" in k for k in initial)
    for c in range(3):
        torch.testing.assert_close(initial["discriminator.stem.0.weight"][:, c], src["discriminator.stem.0.weight"][:, 0] / 3)
    torch.testing.assert_close(initial["generator.blocks.0.0.weight"], src["generator.blocks.0.0.weight"])
    run = start_run(cfg, tmp_path / "dp")
    # the site's epsilon is its accountant's: one round of local_steps x d_steps Poisson-sampled D steps
    state = torch.load(run.final_path, weights_only=False)["site_state"]["site-1"]
    (q,), (steps,) = state["dp-rate"], state["dp-steps"]
    assert steps == cfg.train.local_steps * cfg.gan.d_steps
    n = len(make_task(cfg).site_data(0).train)  # Poisson rate: one expected batch of the site's images
    assert q == 1 / math.ceil(n / cfg.train.batch_size)
    row = final_rows(run)["site-1"]  # delta 0 in the config: min(1e-5, 1 / the site's images)
    assert row["train_delta"] == 1e-5
    assert row["train_epsilon"] == pytest.approx(epsilon_for(1.0, q, steps, row["train_delta"]))
    d = load_trained(run.path).model.discriminator
    assert len(d.blocks) == 0 and sum(p.numel() for p in d.parameters()) < 3000


def test_reference_networks_ignore_the_discriminator_options_under_study():
    """Runs that differ only in spectral norm or depth are scored by the same reference discriminator."""
    plain = make_task(gan_config("gan.norm=none")).make_pair().discriminator.state_dict()
    task = make_task(gan_config("gan.norm=none", "gan.spectral_norm=true", "gan.d_blocks=0"))
    ref = task.make_pair(reference=True).discriminator.state_dict()
    assert ref.keys() == plain.keys() and all(torch.equal(ref[k], plain[k]) for k in ref)
    assert "stem.0.parametrizations.weight.original" in task.make_pair().discriminator.state_dict()
