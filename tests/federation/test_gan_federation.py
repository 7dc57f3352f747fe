"""FedGAN federation-level options: optimiser state kept at the sites, a site's own discriminator
(or its normalisation layers), and a server optimiser per network (gan.federation, train.keep_optimizer_state)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from fedsilo.config import ConfigError
from fedsilo.config.federation_schema import StrategySection
from fedsilo.federation.grids import SubsetGrid
from fedsilo.federation.inprocess import InProcessGrid
from fedsilo.federation.server_app import FederatedRounds
from fedsilo.federation.server_opt import PerPartServerOpt, part_optimiser
from fedsilo.federation.site_memory import (
    KEPT_ARRAYS,
    SIMULATED_DIR_KEY,
    SITE_STATE_DIR_KEY,
    SiteMemory,
    simulated_dir_hint,
)
from fedsilo.federation.strategies import build_strategy, load_strategy_state, strategy_state
from fedsilo.models.norms import norm_state_keys
from fedsilo.run.start import resume_run, start_run
from fedsilo.tasks import make_task
from fedsilo.training import OPTIMIZERS
from helpers import gan_config, train_reply

NODES = [1001, 1002]


def _site_states(run_path, site: str) -> dict[int, dict]:
    """The state files a simulated site kept in the run folder, by round."""
    folders = list((run_path / "site-state" / site).iterdir())
    assert len(folders) == 1  # one run key
    return {int(p.stem.split("-")[1]): torch.load(p, weights_only=True) for p in folders[0].glob("round-*.pt")}


# -- site memory -------------------------------------------------------------------------------


def _context(**node) -> Context:
    return Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})


def test_site_memory_loads_the_latest_earlier_round_and_keeps_two_files(tmp_path):
    memory = SiteMemory(_context(), "study-abc", tmp_path)
    assert memory.load(5) == {}
    for rnd in (1, 2, 4):
        memory.save(rnd, {"x": torch.tensor([float(rnd)])})
    assert sorted(p.name for p in (tmp_path / "study-abc").iterdir()) == ["round-00002.pt", "round-00004.pt"]
    assert memory.load(5)["x"].item() == 4.0  # from memory (Context.state)
    # a new Flower run (a resume): empty context, same folder
    fresh = SiteMemory(_context(), "study-abc", tmp_path)
    assert fresh.load(5)["x"].item() == 4.0
    assert fresh.load(4)["x"].item() == 2.0  # a round rerun after a resume loads what came before it
    assert fresh.load(2) == {}  # round 1's file is gone (only the two latest are kept)
    assert SiteMemory(_context(), "other-run", tmp_path).load(5) == {}
    assert (tmp_path / "study-abc" / "round-00004.pt").stat().st_mode & 0o077 == 0  # the site's own


def test_a_deployed_site_never_writes_where_the_coordinator_says(tmp_path):
    hint = simulated_dir_hint(tmp_path / "run", True)
    assert hint == {SIMULATED_DIR_KEY: str(tmp_path / "run" / "site-state")}
    assert simulated_dir_hint(tmp_path, False) == {}
    simulated = SiteMemory.for_site(_context(**{"partition-id": 0}), hint, "cfg", "s", "site-1")
    assert simulated.folder.parent == tmp_path / "run" / "site-state" / "site-1"
    deployed = SiteMemory.for_site(_context(**{"data-path": "/x"}), hint, "cfg", "s", "site-1")
    assert deployed.folder is None
    own = SiteMemory.for_site(_context(**{"data-path": "/x", SITE_STATE_DIR_KEY: str(tmp_path / "own")}), hint,
                              "cfg", "s", "site-1")
    assert own.folder.parent == tmp_path / "own"
    # the run key changes with the config, so another run's state is never loaded
    other = SiteMemory.for_site(_context(**{"data-path": "/x"}), hint, "cfg2", "s", "site-1")
    assert other.run_key != deployed.run_key and deployed.run_key.startswith("s-")


# -- config ----------------------------------------------------------------------------------


def test_defaults_keep_the_fedgan_protocol():
    task = make_task(gan_config())
    assert task.site_kept_keys() == frozenset() and task.server_optimisers() == {}
    assert not task.cfg.train.keep_optimizer_state


def test_bad_gan_federation_configs_are_rejected():
    with pytest.raises(ConfigError, match="server_opt_d must be 'none' with gan.federation.discriminator = 'local'"):
        gan_config("gan.federation.discriminator=local", "gan.federation.server_opt_d=fedadam")
    with pytest.raises(ConfigError, match="need federation.strategy.name in fedavg, fedprox, fedbn .* 'fedmedian'"):
        gan_config("gan.federation.server_opt_g=fedavgm", "federation.strategy.name=fedmedian")
    with pytest.raises(ConfigError, match="server_lr_g"):
        gan_config("gan.federation.server_lr_g=0")
    with pytest.raises(ValueError, match="server optimiser must be one of fedadam, fedavgm, got 'sgd'"):
        part_optimiser("sgd", 0.1, StrategySection())
    with pytest.raises(ValueError, match="server learning rate must be > 0, got -1"):
        part_optimiser("fedadam", -1, StrategySection())


def test_site_kept_keys_follow_the_discriminator_option():
    task = make_task(gan_config("gan.federation.discriminator=local"))
    d_keys = {f"discriminator.{k}" for k in task.build_model().discriminator.state_dict()}
    assert task.site_kept_keys() == d_keys
    norm = make_task(gan_config("gan.federation.discriminator=local_norm")).site_kept_keys()
    assert norm == {f"discriminator.{k}" for k in norm_state_keys(task.build_model().discriminator)}
    assert norm and norm < d_keys


# -- server optimiser per network ------------------------------------------------------------


def _record(g: float, g_buffer: float, d: float) -> ArrayRecord:
    return ArrayRecord({"generator.w": Array(np.array([g], np.float32)),
                        "generator.bn.running_mean": Array(np.array([g_buffer], np.float32)),
                        "discriminator.w": Array(np.array([d], np.float32))})


def _per_part(**kw) -> PerPartServerOpt:
    cfg = StrategySection(beta_1=0.9, beta_2=0.99, tau=1e-3, server_momentum=0.5)
    return PerPartServerOpt(build_strategy(StrategySection(name="fedavg"), 2),
                            {"generator.": ("fedadam", 0.1), "discriminator.": ("fedavgm", 0.5)},
                            {"generator.w", "discriminator.w"}, cfg)


def _round(strategy, rnd: int, current: ArrayRecord, site_values: list[tuple[float, float, float]]) -> ArrayRecord:
    grid = SubsetGrid(InProcessGrid(client_app=None, node_configs=[{"partition-id": i} for i in range(2)]), NODES)
    list(strategy.configure_train(rnd, current, ConfigRecord(), grid))
    out, _ = strategy.aggregate_train(rnd, [train_reply(node, _record(*v), n) for node, v, n in
                                            zip(NODES, site_values, (1, 3))])
    return out


@pytest.mark.usefixtures("superlink_identity")
def test_per_network_server_optimisers_match_a_hand_computation():
    b1, b2, tau, eta_g, eta_d, mom = 0.9, 0.99, 1e-3, 0.1, 0.5, 0.5
    strategy = _per_part()
    # round 1 from g = d = 0: the sites' example-weighted means (weights 1, 3) are g 2.5, d -1.5
    w1 = _round(strategy, 1, _record(0.0, 0.0, 0.0), [(1.0, 4.0, 0.0), (3.0, 8.0, -2.0)])
    dg1 = 2.5
    m, v = (1 - b1) * dg1, (1 - b2) * dg1**2
    g1 = 0 + eta_g * np.sqrt(1 - b2**2) / (1 - b1**2) * m / (np.sqrt(v) + tau)  # Flower's bias correction
    pd1 = 0 - (-1.5)  # FedAvgM: pseudo-gradient = current - mean
    d1 = 0 - eta_d * pd1
    assert w1["generator.w"].numpy()[0] == pytest.approx(g1, rel=1e-6)
    assert w1["discriminator.w"].numpy()[0] == pytest.approx(d1, rel=1e-6)
    assert w1["generator.bn.running_mean"].numpy()[0] == pytest.approx(7.0)  # a buffer takes the mean
    assert w1["generator.w"].numpy().dtype == np.float32
    # round 2 continues the moments; a strategy restored from a checkpoint does the same
    saved = strategy_state(strategy)
    sites2 = [(g1 + 1.0, 0.0, d1 + 1.0), (g1 + 1.0, 0.0, d1 + 1.0)]
    w2 = _round(strategy, 2, w1, sites2)
    m2, v2 = b1 * m + (1 - b1) * 1.0, b2 * v + (1 - b2) * 1.0
    g2 = np.float32(g1) + eta_g * np.sqrt(1 - b2**3) / (1 - b1**3) * m2 / (np.sqrt(v2) + tau)
    d2 = np.float32(d1) - eta_d * (mom * pd1 + (-1.0))
    assert w2["generator.w"].numpy()[0] == pytest.approx(g2, rel=1e-5)
    assert w2["discriminator.w"].numpy()[0] == pytest.approx(d2, rel=1e-5)
    restored = _per_part()
    load_strategy_state(restored, saved)
    again = _round(restored, 2, w1, sites2)
    assert all(np.array_equal(again[k].numpy(), w2[k].numpy()) for k in w2.keys())


# -- end to end --------------------------------------------------------------------------------


def test_sites_keep_their_optimiser_state_across_rounds_and_never_send_it(tmp_path):
    run = start_run(gan_config("train.keep_optimizer_state=true", "federation.eval_every=5"), tmp_path / "run")
    steps = run.cfg.train.local_steps
    for site in ("site-1", "site-2"):
        states = _site_states(run.path, site)
        assert sorted(states) == [1, 2]
        for rnd, state in states.items():
            d_opt, g_opt = state[OPTIMIZERS]  # the discriminator's phase, then the generator's
            assert d_opt["state"][0]["step"].item() == rnd * steps  # Adam's step count continues
            assert g_opt["state"][0]["step"].item() == rnd * steps
        # round 2's moments continue from round 1's (a fresh Adam would have its step count reset)
        assert not torch.equal(states[1][OPTIMIZERS][1]["state"][0]["exp_avg"],
                               states[2][OPTIMIZERS][1]["state"][0]["exp_avg"])
    ckpt = run.load_checkpoint()
    assert ckpt["executor"]["site_state"] == {}  # nothing of it reached the coordinator
    fresh = start_run(gan_config("federation.eval_every=5"), tmp_path / "fresh")
    assert not (fresh.path / "site-state").exists()


def test_a_site_keeps_its_own_discriminator_and_only_the_generator_is_averaged(tmp_path):
    run = start_run(gan_config("gan.federation.discriminator=local", "federation.eval_every=5"), tmp_path / "run")
    final = torch.load(run.final_path, weights_only=False)["model"]
    init = make_task(run.cfg).initial_state()
    d_keys = [k for k in final if k.startswith("discriminator.") and final[k].is_floating_point()]
    for k in d_keys:  # the coordinator only ever saw the discriminator it sent
        torch.testing.assert_close(final[k], init[k], rtol=0, atol=1e-6, msg=k)
    assert any(not torch.equal(final[k], init[k]) for k in final if k.startswith("generator."))
    own = {site: _site_states(run.path, site)[2][KEPT_ARRAYS] for site in ("site-1", "site-2")}
    assert set(own["site-1"]) == {k for k in final if k.startswith("discriminator.")}
    assert any(not torch.equal(own["site-1"][k], init[k]) for k in d_keys)  # it trained at the site
    assert any(not torch.equal(own["site-1"][k], own["site-2"][k]) for k in d_keys)  # each its own
    # a site evaluates with its own discriminator
    task = make_task(run.cfg)
    model = task.build_model()
    model.load_state_dict({**final, **own["site-2"]})
    expected = task.evaluate_site(model, task.site_data(1).val, torch.device("cpu"))
    logged = [r for r in run.read_metrics() if r["scope"] == "site-2" and r["round"] == 2 and "val_d_real" in r]
    assert logged and logged[0]["val_d_real"] == pytest.approx(expected["d_real"], rel=1e-5)
    # the run's discriminator is the untrained one it started from: the audit skips LOGAN and says why
    from fedsilo.audit.registry import run_audit

    report = run_audit(run.path, overrides=["audit.max_samples=20", "audit.gan_samples=40", "audit.latent_steps=2",
                                            "audit.max_targets=2"])
    assert "logan" not in report["attacks"] and "gan_leaks_blackbox" in report["attacks"]
    assert any(n.startswith("LOGAN skipped: gan.federation.discriminator = 'local'") for n in report["notes"])


def test_local_discriminator_norms_and_a_server_optimiser_per_network(tmp_path):
    run = start_run(gan_config("gan.federation.discriminator=local_norm", "gan.federation.server_opt_g=fedadam",
                               "gan.federation.server_opt_d=fedavgm", "federation.rounds=1",
                               "federation.eval_every=5"), tmp_path / "run")
    final = torch.load(run.final_path, weights_only=False)["model"]
    task = make_task(run.cfg)
    init, norms = task.initial_state(), task.site_kept_keys()
    for k in norms:
        if final[k].is_floating_point():
            torch.testing.assert_close(final[k], init[k], rtol=0, atol=1e-6, msg=k)
    shared = [k for k in final if k.startswith("discriminator.") and k not in norms]
    assert shared and all(not torch.equal(final[k], init[k]) for k in shared)
    state = run.load_checkpoint()["executor"]["strategy"]
    assert {"opt_generator", "opt_discriminator"} <= set(state)  # the moments are checkpointed


def test_resume_equals_an_uninterrupted_run_with_site_kept_state(tmp_path, monkeypatch):
    """Sites keep optimiser state and their discriminator; the run fails after the sites trained
    round 2 but before its checkpoint, and the resumed run still ends bit for bit where an
    uninterrupted one does (weights, and what each site kept)."""
    cfg = gan_config("federation.rounds=3", "federation.eval_every=3", "train.keep_optimizer_state=true",
                     "gan.federation.discriminator=local", "gan.federation.server_opt_g=fedavgm")
    whole = start_run(cfg, tmp_path / "whole")
    train_round = FederatedRounds.train_round

    def failing(self, rnd):
        rows = train_round(self, rnd)
        if rnd == 2:
            raise RuntimeError("coordinator lost after the sites trained round 2")
        return rows

    monkeypatch.setattr(FederatedRounds, "train_round", failing)
    with pytest.raises(RuntimeError, match="coordinator lost"):
        start_run(cfg, tmp_path / "part")
    assert sorted(_site_states(tmp_path / "part", "site-1")) == [1, 2]  # the sites are a round ahead
    monkeypatch.setattr(FederatedRounds, "train_round", train_round)
    resumed = resume_run(tmp_path / "part")
    a = torch.load(whole.final_path, weights_only=False)["model"]
    b = torch.load(resumed.final_path, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for site in ("site-1", "site-2"):
        x, y = _site_states(whole.path, site)[3], _site_states(resumed.path, site)[3]
        for k in x[KEPT_ARRAYS]:
            assert torch.equal(x[KEPT_ARRAYS][k], y[KEPT_ARRAYS][k]), k
        for ox, oy in zip(x[OPTIMIZERS], y[OPTIMIZERS], strict=True):
            for i in ox["state"]:
                assert all(torch.equal(ox["state"][i][n], oy["state"][i][n]) for n in ox["state"][i])


def test_the_centralised_reference_keeps_its_optimiser_state_in_its_checkpoint(tmp_path):
    run = start_run(gan_config("train.keep_optimizer_state=true", "federation.eval_every=5", mode="centralised"),
                    tmp_path / "run")
    carry = run.load_checkpoint()["executor"]["carry"]
    steps = run.cfg.train.local_steps * run.cfg.federation.num_sites  # the pooled round's steps
    assert [opt["state"][0]["step"].item() for opt in carry[OPTIMIZERS]] == [2 * steps, 2 * steps]


def test_site_kept_state_and_a_server_optimiser_run_under_secure_aggregation(tmp_path):
    """The kept discriminator goes back unchanged (a zero update in the masked sum) and the
    generator's server step acts on the secure mean: as without secure aggregation, within
    SecAgg+'s quantisation error."""
    options = ("federation.rounds=1", "federation.eval_every=5", "train.keep_optimizer_state=true",
               "gan.federation.discriminator=local", "gan.federation.server_opt_g=fedavgm")
    plain = torch.load(start_run(gan_config(*options), tmp_path / "plain").final_path, weights_only=False)["model"]
    cfg = gan_config(*options, "federation.secure_aggregation=true")
    secure = start_run(cfg, tmp_path / "secure")
    masked = torch.load(secure.final_path, weights_only=False)["model"]
    s = cfg.federation.secagg
    bound = cfg.federation.num_sites * 2 * s.clipping_range / s.quantization_range
    init = make_task(cfg).initial_state()
    for k, a in plain.items():
        if a.is_floating_point():
            assert (a.double() - masked[k].double()).abs().max().item() <= bound + 1e-6, k
            if k.startswith("discriminator."):
                assert (masked[k].double() - init[k].double()).abs().max().item() <= bound + 1e-6, k
    assert sorted(_site_states(secure.path, "site-1")) == [1]


@pytest.mark.slow
def test_simulated_sites_on_ray_keep_their_state_as_the_local_engine_does(tmp_path):
    cfg = gan_config("federation.eval_every=5", "train.keep_optimizer_state=true",
                     "gan.federation.discriminator=local")
    local = start_run(cfg, tmp_path / "local", "local")
    sim = start_run(cfg, tmp_path / "sim", "simulation")
    a = torch.load(local.final_path, weights_only=False)["model"]
    b = torch.load(sim.final_path, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    x, y = _site_states(local.path, "site-2")[2], _site_states(sim.path, "site-2")[2]
    assert all(torch.equal(x[KEPT_ARRAYS][k], y[KEPT_ARRAYS][k]) for k in x[KEPT_ARRAYS])
    assert x[OPTIMIZERS][1]["state"][0]["step"].item() == 2 * cfg.train.local_steps


def test_privacy_modes_compose_with_the_federation_options(tmp_path):
    # sample-level DP: the private discriminator's optimiser (its moments are post-processing of
    # noised gradients) continues at its site as the generator's does
    dp = start_run(gan_config("privacy.mode=sample", "privacy.noise_multiplier=1.0", "federation.eval_every=5",
                              "train.keep_optimizer_state=true", "gan.federation.discriminator=local"),
                   tmp_path / "sample")
    steps = dp.cfg.train.local_steps
    state = _site_states(dp.path, "site-1")[2]
    assert [o["state"][0]["step"].item() for o in state[OPTIMIZERS]] == [2 * steps, 2 * steps]
    eps = {r["round"]: r["train_epsilon"] for r in dp.read_metrics() if r["scope"] == "site-1" and "train_epsilon" in r}
    assert 0 < eps[1] < eps[2]  # the site's accountant goes on composing across rounds
    # client-level DP: the server step acts on the noised mean (the DP wrapper sits inside it)
    # (group norm: the mechanism noises every float array, and a noised batch-norm variance can turn negative)
    client = start_run(gan_config("privacy.mode=client", "privacy.noise_multiplier=0.1", "privacy.clipping_norm=1.0",
                                  "gan.norm=group",
                                  "federation.rounds=1", "federation.eval_every=5",
                                  "gan.federation.server_opt_g=fedadam"), tmp_path / "client")
    strategy = client.load_checkpoint()["executor"]["strategy"]
    assert "opt_generator" in strategy and "history" in strategy["base"]["__strategy__"]  # over the DP wrapper
    assert any("privacy_epsilon" in r for r in client.read_metrics())
