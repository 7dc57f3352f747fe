"""DP in real runs: sample-level DP-SGD in the classification task, client-level DP-FedAvg, budgets, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType

from fedsilo.config import ConfigError
from fedsilo.federation.client_dp import (
    build_dp_wrapper,
    clamp_norm_variances,
    client_clipping_mod,
    client_dp_noise,
)
from fedsilo.federation.messages import ARRAYS, CONFIG, METRICS
from fedsilo.privacy.accounting import epsilon_for
from fedsilo.rounds import FederationError
from fedsilo.run.folder import RunDirError
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run

SAMPLE_DP = ("privacy.mode=sample", "privacy.noise_multiplier=1.0", "train.local_epochs=1")


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _site_eps(rows, site, rnd):
    return [r["train_epsilon"] for r in rows if r["scope"] == site and r["round"] == rnd and "train_epsilon" in r][0]


def test_dp_training_reports_each_sites_epsilon_and_its_accountant_matches_opacus(tiny_cfg, tmp_path):
    run = start_run(tiny_cfg(*SAMPLE_DP), tmp_path / "run")
    rows = _rows(run.path)
    final = torch.load(run.path / "final.pt", weights_only=False)
    for site in ("site-1", "site-2"):
        e1, e2 = _site_eps(rows, site, 1), _site_eps(rows, site, 2)
        assert 0 < e1 < e2
        state = final["site_state"][site]
        # the site's accountant: 2 rounds of ceil(n/8) Poisson steps at q = 1/ceil(n/8)
        (q,), (steps,) = state["dp-rate"], state["dp-steps"]
        assert steps == 2 * round(1 / q)
        assert e2 == pytest.approx(epsilon_for(1.0, q, steps, 1e-5))
    assert not any("running_mean" in k for k in final["model"])  # BatchNorm -> GroupNorm everywhere


def test_target_epsilon_is_reached_after_the_last_round(tiny_cfg, tmp_path):
    run = start_run(tiny_cfg("privacy.mode=sample", "privacy.epsilon=3", "train.local_epochs=1"), tmp_path / "run")
    rows = _rows(run.path)
    for site in ("site-1", "site-2"):
        assert 3.0 - 0.02 <= _site_eps(rows, site, 2) <= 3.0


@pytest.mark.parametrize("reproducible", [True, False])
def test_resume_keeps_the_privacy_budget_and_repeats_only_with_reproducible_noise(tiny_cfg, tmp_path, reproducible):
    cfg = tiny_cfg(*SAMPLE_DP, "federation.rounds=3", f"privacy.reproducible_noise={str(reproducible).lower()}")
    start_run(cfg, tmp_path / "full")

    def stop(rnd):
        if rnd == 1:
            raise RunInterrupted("test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, tmp_path / "cut", on_round_end=stop)
    resume_run(tmp_path / "cut")
    full, cut = _rows(tmp_path / "full"), _rows(tmp_path / "cut")
    assert _site_eps(cut, "site-1", 3) == _site_eps(full, "site-1", 3)  # the budget continues either way
    a = torch.load(tmp_path / "full/final.pt", weights_only=False)
    b = torch.load(tmp_path / "cut/final.pt", weights_only=False)
    assert a["site_state"] == b["site_state"]
    same = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert same is reproducible  # secure noise is fresh in every run: no two runs share it


def test_max_epsilon_stops_the_run_cleanly_when_no_site_can_afford_another_round(tiny_cfg, tmp_path):
    probe = start_run(tiny_cfg(*SAMPLE_DP, "federation.rounds=1"), tmp_path / "probe")
    one_round = max(_site_eps(_rows(probe.path), s, 1) for s in ("site-1", "site-2"))
    cap = one_round * 1.2  # one round fits, two do not
    run = start_run(tiny_cfg(*SAMPLE_DP, "federation.rounds=4", f"privacy.max_epsilon={cap}"), tmp_path / "run")
    rows = _rows(run.path)
    assert max(r["round"] for r in rows) == 1
    stop = [r for r in rows if r.get("stopped_early")]
    assert len(stop) == 1 and "privacy budget" in stop[0]["stop_reason"] and "site-1" in stop[0]["stop_reason"]
    final = torch.load(run.path / "final.pt", weights_only=False)
    assert final["round"] == 1 and "min_sites" in final["stopped_early"]
    assert all(_site_eps(rows, s, 1) <= cap for s in ("site-1", "site-2"))
    with pytest.raises(RunDirError, match="stopped early after round 1"):
        resume_run(run.path)


def test_centralised_dp_keeps_its_accountant_between_rounds(tiny_cfg, tmp_path):
    run = start_run(tiny_cfg(*SAMPLE_DP, "experiment.mode=centralised"), tmp_path / "run")
    eps = [r["train_epsilon"] for r in _rows(run.path) if "train_epsilon" in r]
    assert len(eps) == 2 and 0 < eps[0] < eps[1]


def test_client_level_dp_reports_epsilon_over_rounds(tiny_cfg, tmp_path):
    cfg = tiny_cfg("privacy.mode=client", "privacy.noise_multiplier=2.0", "privacy.clipping_norm=0.5",
                   "federation.rounds=3")
    run = start_run(cfg, tmp_path / "run")
    eps = [r["privacy_epsilon"] for r in _rows(run.path) if "privacy_epsilon" in r]
    # all (2 of 2) sites every round: the unsampled Gaussian composed over rounds, delta = 1e-5
    assert eps == pytest.approx([epsilon_for(2.0, 1.0, t, 1e-5) for t in (1, 2, 3)])
    state = torch.load(run.path / "checkpoints/latest.pt", weights_only=False)["executor"]["strategy"]
    assert state["history"] == [(2.0, 1.0, 3)]  # the accountant is checkpointed with the strategy


def test_noised_batchnorm_variances_are_clamped_at_zero_and_nothing_else_changes():
    record = ArrayRecord({"bn.running_var": Array(np.array([-0.5, 0.2], dtype=np.float32)),
                          "bn.weight": Array(np.array([-1.0, 2.0], dtype=np.float32))})
    out = clamp_norm_variances(record)
    np.testing.assert_array_equal(out["bn.running_var"].numpy(), np.array([0.0, 0.2], dtype=np.float32))
    np.testing.assert_array_equal(out["bn.weight"].numpy(), np.array([-1.0, 2.0], dtype=np.float32))


def test_client_level_dp_on_a_batchnorm_model_releases_valid_variances(tiny_cfg, tmp_path):
    # noise sigma C / m = 20 on variances near 1: without the clamp about half of them are negative
    # and the model's outputs NaN (the bug a batch-norm FedGAN under client-level DP hit)
    cfg = tiny_cfg("privacy.mode=client", "privacy.noise_multiplier=40.0", "privacy.clipping_norm=1.0",
                   "privacy.reproducible_noise=true", "federation.rounds=1")
    run = start_run(cfg, tmp_path / "run")
    final = torch.load(run.path / "final.pt", weights_only=False)
    state = final.get("model", final) if isinstance(final, dict) else final
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert variances, "the tiny classifier has batch norm"
    flat = torch.cat([v.flatten() for v in variances])
    assert bool((flat >= 0).all()) and bool((flat == 0).any())  # clamped, not merely lucky
    assert all(np.isfinite(r["test_loss"]) for r in _rows(run.path) if "test_loss" in r)


def test_client_level_budget_stops_the_run(tiny_cfg, tmp_path):
    cap = (epsilon_for(2.0, 1.0, 2, 1e-5) + epsilon_for(2.0, 1.0, 3, 1e-5)) / 2
    cfg = tiny_cfg("privacy.mode=client", "privacy.noise_multiplier=2.0", "federation.rounds=5",
                   "privacy.clipping_side=client", f"privacy.max_epsilon={cap}")
    run = start_run(cfg, tmp_path / "run")
    rows = _rows(run.path)
    assert max(r["round"] for r in rows) == 2
    assert any("client-level epsilon" in str(r.get("stop_reason")) for r in rows)
    assert any("norm_bit" in r for r in rows)  # sites clipped their own updates


def _train_message(norm: float | None) -> Message:
    arrays = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32)), "n": Array(np.array([3], dtype=np.int64))})
    config = ConfigRecord({"server-round": 1, **({"clipping_norm": norm} if norm is not None else {})})
    content = RecordDict({ARRAYS: arrays, CONFIG: config, "site-state": ConfigRecord({"dp-mechanism": "rdp"})})
    return Message(content, dst_node_id=1, message_type=MessageType.TRAIN)


def _site(msg: Message, context: Context) -> Message:
    arrays = ArrayRecord({"w": Array(np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32)),
                          "n": Array(np.array([5], dtype=np.int64))})
    return Message(RecordDict({ARRAYS: arrays, METRICS: MetricRecord({"num-examples": 10})}), reply_to=msg)


def test_client_side_clipping_mod_clips_the_update_and_keeps_dtypes():
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    msg = _train_message(1.0)
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.node_id = 0
    msg.metadata.__dict__["_message_id"] = "m1"
    reply = client_clipping_mod(msg, ctx, _site)
    w = reply.content.array_records[ARRAYS]["w"].numpy()
    n = reply.content.array_records[ARRAYS]["n"].numpy()
    # update (3, 4, 0, 0, n: +2) has norm sqrt(29); scaled to norm 1
    scale = 1.0 / np.sqrt(29.0)
    np.testing.assert_allclose(w, np.array([3, 4, 0, 0]) * scale, rtol=1e-6)
    assert w.dtype == np.float32 and n.dtype == np.int64 and n[0] == 3  # 3 + 2 * 0.19 rounds to 3
    assert reply.content.metric_records[METRICS]["norm_bit"] == 1
    untouched = client_clipping_mod(_train_message(None), ctx, _site)  # no clipping_norm: inactive
    assert untouched.content.array_records[ARRAYS]["w"].numpy()[1] == 4.0


def test_client_level_dp_config_errors(tiny_cfg):
    with pytest.raises(ConfigError, match="must be one of fedavg, fedprox with privacy.mode = 'client'"):
        tiny_cfg("privacy.mode=client", "federation.strategy.name=fedmedian")
    with pytest.raises(ConfigError, match="local_norm must be false with privacy.mode = 'client'"):
        tiny_cfg("privacy.mode=client", "federation.strategy.local_norm=true")
    privacy = tiny_cfg("privacy.mode=client", "privacy.clipping=adaptive").privacy
    from flwr.serverapp.strategy import FedAvg

    with pytest.raises(ValueError, match=r"clipped_count_stddev > noise_multiplier / 2 = 0.5"):
        build_dp_wrapper(FedAvg(), privacy, 1.0, 3)
    with pytest.raises(ValueError, match=r"sites_per_round must be in \[1, 3\], got 4"):
        client_dp_noise(privacy, 3, 4, 10)


def _ledger_nodes(tmp_path, cap: float = 0.0) -> list[dict]:
    return [{"partition-id": i, "num-partitions": 2, "privacy-ledger": str(tmp_path / f"ledger-{i}"),
             **({"max-epsilon": cap} if cap else {})} for i in range(2)]


def _run_on_ledgers(cfg, out, nodes):
    from fedsilo.federation import client_app
    from fedsilo.federation.inprocess import InProcessGrid, run_on_grid
    from fedsilo.run.app import make_server_app
    from fedsilo.run.folder import RunDir

    run = RunDir.create(out, cfg, "local")
    run_on_grid(make_server_app(run.path), InProcessGrid(client_app.app, nodes))
    return run


def test_a_coordinator_that_resets_the_history_meets_the_sites_ledger(tiny_cfg, tmp_path):
    probe = start_run(tiny_cfg(*SAMPLE_DP, "federation.rounds=2"), tmp_path / "probe")
    two_rounds = max(_site_eps(_rows(probe.path), s, 2) for s in ("site-1", "site-2"))
    cfg = tiny_cfg(*SAMPLE_DP, "federation.rounds=2", f"privacy.max_epsilon={two_rounds * 1.1}")
    first = _run_on_ledgers(cfg, tmp_path / "first", _ledger_nodes(tmp_path))
    assert torch.load(first.final_path, weights_only=False)["round"] == 2
    ledger = json.loads((tmp_path / "ledger-0" / "tiny.json").read_text())
    assert sum(ledger["dp-steps"]) == sum(torch.load(first.final_path, weights_only=False)["site_state"]["site-1"]["dp-steps"])
    # the same study again from epsilon 0: the sites know better and refuse the round
    with pytest.raises(FederationError, match=r"rejected: site-1: site reported an error: PrivacyBudgetExhausted: "
                                              r"another round would take this site's epsilon to"):
        _run_on_ledgers(cfg, tmp_path / "again", _ledger_nodes(tmp_path))


def test_a_sites_own_cap_holds_whatever_the_config_says(tiny_cfg, tmp_path):
    probe = start_run(tiny_cfg(*SAMPLE_DP, "federation.rounds=1"), tmp_path / "probe")
    one_round = max(_site_eps(_rows(probe.path), s, 1) for s in ("site-1", "site-2"))
    cfg = tiny_cfg(*SAMPLE_DP, "federation.rounds=3")  # no privacy.max_epsilon
    run = _run_on_ledgers(cfg, tmp_path / "run", _ledger_nodes(tmp_path, cap=one_round * 1.1))
    final = torch.load(run.final_path, weights_only=False)
    assert final["round"] == 1 and final["stopped_early"]
    assert all(_site_eps(_rows(run.path), s, 1) <= one_round * 1.1 for s in ("site-1", "site-2"))
