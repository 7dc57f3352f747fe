"""Fused evaluation (federation.fused_evaluation): the sites' validation of round r's aggregate
rides on round r+1's training messages, with the numbers of a separate evaluation exchange."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord

from fedsilo.federation.fused_eval import fused_evaluation_on, take_validation
from fedsilo.federation.messages import METRICS, VALIDATION
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run
from helpers import arrays, train_reply

SAMPLE_DP = ("privacy.mode=sample", "privacy.noise_multiplier=1.0", "train.local_epochs=1",
             "privacy.reproducible_noise=true")


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _val(rows):
    """Validation rows (per site and the weighted global one), in a canonical order."""
    return sorted((r for r in rows if any(k.startswith("val_") for k in r)), key=lambda r: (r["round"], r["scope"]))


def _canonical(rows):
    """Every row without its timings, in a canonical order (fusing changes the lines' order only)."""
    out = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]
    return sorted(out, key=lambda r: (r["round"], r["scope"], sorted(r)))


def _weights(path):
    return torch.load(path / "final.pt", weights_only=False)["model"]


def _pending(path):
    return torch.load(path / "checkpoints" / "latest.pt", weights_only=False)["executor"]["pending_evaluation"]


def test_the_setting_is_on_in_a_deployment_by_default_and_never_with_secure_aggregation(tiny_cfg):
    assert fused_evaluation_on(tiny_cfg(), deployed=True) is True
    assert fused_evaluation_on(tiny_cfg(), deployed=False) is False
    assert fused_evaluation_on(tiny_cfg("federation.fused_evaluation=on"), deployed=False) is True
    assert fused_evaluation_on(tiny_cfg("federation.fused_evaluation=off"), deployed=True) is False
    assert fused_evaluation_on(tiny_cfg("federation.fused_evaluation=on", "federation.secure_aggregation=true"),
                               deployed=True) is False


def test_the_validation_record_is_taken_out_of_a_training_reply(superlink_identity):
    reply = train_reply(7, arrays(w=np.zeros(2)), n=5)
    reply.content[VALIDATION] = MetricRecord({"num-examples": 3, "val_kappa": 0.25})
    record = take_validation(reply)
    assert dict(record) == {"num-examples": 3, "val_kappa": 0.25}
    # what the strategy then aggregates: the training metrics alone
    assert list(reply.content.metric_records) == [METRICS] and isinstance(reply.content.array_records["arrays"],
                                                                          ArrayRecord)
    assert take_validation(reply) is None


@pytest.mark.parametrize("extra", [(), ("federation.num_sites=3", "federation.fraction_train=0.5"),
                                   ("federation.strategy.name=fedbn",),
                                   ("privacy.mode=client", "privacy.noise_multiplier=0.3",
                                    "privacy.reproducible_noise=true")],
                         ids=["all-sampled", "some-not-sampled", "fedbn", "client-dp"])
def test_fused_and_separate_evaluation_log_the_same_numbers_and_train_the_same_weights(tiny_cfg, tmp_path, extra):
    base = ("federation.rounds=3", *extra)
    fused = start_run(tiny_cfg(*base, "federation.fused_evaluation=on"), tmp_path / "fused")
    plain = start_run(tiny_cfg(*base, "federation.fused_evaluation=off"), tmp_path / "plain")
    a, b = _rows(fused.path), _rows(plain.path)
    sites = fused.cfg.federation.num_sites
    assert len(_val(a)) == 3 * (sites + 1)  # every site and the global row, rounds 1-3
    assert _val(a) == _val(b)
    assert _canonical(a) == _canonical(b)
    x, y = _weights(fused.path), _weights(plain.path)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    # it did fuse: round 1's validation rows were written after round 1's test row (with round 2's
    # training), and the file stays in round order
    test_1 = next(i for i, r in enumerate(a) if r["round"] == 1 and "test_kappa" in r)
    val_1 = next(i for i, r in enumerate(a) if r["round"] == 1 and "val_kappa" in r)
    assert val_1 > test_1 and [r["round"] for r in a] == sorted(r["round"] for r in a)
    plain_val_1 = next(i for i, r in enumerate(b) if r["round"] == 1 and "val_kappa" in r)
    plain_test_1 = next(i for i, r in enumerate(b) if r["round"] == 1 and "test_kappa" in r)
    assert plain_val_1 < plain_test_1


def test_a_resumed_fused_run_scores_the_pending_round_once(tiny_cfg, tmp_path):
    cfg = tiny_cfg("federation.rounds=3", "federation.fused_evaluation=on")
    full = start_run(cfg, tmp_path / "full")

    def stop_after_1(rnd):
        if rnd == 1:
            raise RunInterrupted("stopped for the test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, tmp_path / "cut", on_round_end=stop_after_1)
    cut = tmp_path / "cut"
    assert _pending(cut) == 1 and not any("val_kappa" in r for r in _rows(cut) if r["round"] == 1)
    # a crash after round 2's exchange logged round 1's validation but before round 2's checkpoint
    with (cut / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"round": 1, "scope": "site-1", "val_kappa": 0.5}) + "\n")
        fh.write(json.dumps({"round": 2, "scope": "site-1", "train_loss": 1.0}) + "\n")
    resume_run(cut)
    assert _canonical(_rows(cut)) == _canonical(_rows(full.path))
    x, y = _weights(cut), _weights(full.path)
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert _pending(cut) is None  # the last round is scored by its own exchange


@pytest.mark.parametrize("every", [1, 2])
def test_a_run_stopping_early_still_scores_its_last_round_at_the_sites(tiny_cfg, tmp_path, every):
    # (eval_every = 2: round 1 is evaluated only because the run stops after it)
    probe = start_run(tiny_cfg(*SAMPLE_DP, "federation.rounds=1"), tmp_path / "probe")
    eps = max(r["train_epsilon"] for r in _rows(probe.path) if "train_epsilon" in r)
    settings = (*SAMPLE_DP, "federation.rounds=3", f"federation.eval_every={every}",
                f"privacy.max_epsilon={eps * 1.2}")  # one round fits, two do not: round 2 never starts
    fused = start_run(tiny_cfg(*settings, "federation.fused_evaluation=on"), tmp_path / "fused")
    plain = start_run(tiny_cfg(*settings, "federation.fused_evaluation=off"), tmp_path / "plain")
    a, b = _rows(fused.path), _rows(plain.path)
    assert any(r.get("stopped_early") for r in a) and max(r["round"] for r in a) == 1
    assert len(_val(a)) == 3 and _val(a) == _val(b)  # site-1, site-2 and global, of round 1
