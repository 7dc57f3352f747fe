"""One site cannot steer the aggregate: num-examples is bounded by setup, update norms optionally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsilo.config import ConfigError
from fedsilo.federation import client_app as real
from fedsilo.federation.inprocess import run_inprocess
from fedsilo.federation.messages import ARRAYS, METRICS, NUM_EXAMPLES
from fedsilo.federation.validation import check_train_reply, describe_template, norm_rejections, update_norm
from fedsilo.run.app import make_server_app
from fedsilo.run.folder import RunDir
from helpers import arrays

TEMPLATE = describe_template({"w": np.zeros((2, 3), np.float32), "n": np.zeros((), np.int64)})
#: 5 sites; site-2 (partition 1) sends sign-flipped x10 weights, site-4 (partition 3) NaNs
ATTACKED = {1: {"attack": "signflip10"}, 3: {"attack": "nan"}}
HONEST_ONLY = {1: {"attack": "nan"}, 3: {"attack": "nan"}}


def _reply(n):
    ins = Message(RecordDict(), dst_node_id=1, message_type="train")
    good = arrays(w=np.ones((2, 3), np.float32), n=np.array(3, np.int64))
    return Message(RecordDict({ARRAYS: good, METRICS: MetricRecord({NUM_EXAMPLES: n})}), reply_to=ins)


@pytest.mark.usefixtures("superlink_identity")
def test_num_examples_above_the_setup_count_is_refused():
    assert check_train_reply(_reply(40), TEMPLATE, max_examples=40) is None
    assert check_train_reply(_reply(10**9), TEMPLATE) is None  # no bound given: any positive count
    assert check_train_reply(_reply(10**9), TEMPLATE, max_examples=40) == (
        "reply claims num-examples = 1000000000, more than the 40 training examples the site reported at setup")


def test_update_norm_is_the_l2_norm_of_the_float_arrays_difference():
    start = arrays(w=np.array([[1, 1, 1], [0, 0, 0]], np.float32), n=np.array(3, np.int64))
    trained = arrays(w=np.array([[4, 5, 1], [0, 0, 12]], np.float32), n=np.array(900, np.int64))
    assert update_norm(trained, start) == pytest.approx(13.0)  # sqrt(9 + 16 + 144); the int buffer is not counted
    assert update_norm(start, start) == 0.0


def test_norm_rejections_absolute_and_relative_to_the_median():
    assert norm_rejections([1.0, 2.0, 2.5], max_norm=2.0) == [
        None, None, "update norm 2.5 exceeds federation.validation.max_update_norm = 2"]
    # median of (1.0, 1.2, 0.9, 10.0) = 1.1: only the x10 update is beyond 3 x 1.1
    assert norm_rejections([1.0, 1.2, 0.9, 10.0], factor=3.0) == [None, None, None, (
        "update norm 10 exceeds 3 x the round's median update norm 1.1 "
        "(federation.validation.max_update_norm_factor)")]
    assert norm_rejections([1.0, 1.2, 0.9, 10.0]) == [None] * 4  # both off
    assert norm_rejections([3.0, 3.3], factor=1.0) == [None, "update norm 3.3 exceeds 1 x the round's median update "
                                                        "norm 3.15 (federation.validation.max_update_norm_factor)"]
    with pytest.raises(ValueError, match="must be >= 0"):
        norm_rejections([1.0], max_norm=-1.0)


@pytest.mark.parametrize(("overrides", "message"), [
    (["federation.validation.max_update_norm_factor=0.5"], "max_update_norm_factor must be 0 \\(off\\) or >= 1"),
    (["federation.secure_aggregation=true", "federation.validation.max_update_norm=5"],
     "cannot run with federation.secure_aggregation = true.*federation.secagg.clipping_range"),
    (["privacy.mode=client", "privacy.epsilon=5", "federation.validation.max_update_norm_factor=3"],
     "max_update_norm_factor must be 0 with privacy.mode = 'client'"),
])
def test_norm_bounds_refused_where_they_cannot_work(tiny_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(*overrides)


def test_absolute_norm_bound_is_allowed_with_client_dp(tiny_cfg):
    cfg = tiny_cfg("privacy.mode=client", "privacy.epsilon=5", "federation.validation.max_update_norm=5")
    assert cfg.federation.validation.max_update_norm == 5.0


# -- end to end, in the local engine -----------------------------------------------------------


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _model(path):
    return torch.load(path / "final.pt", weights_only=False)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(cfg, path, client=real.app, sites=5, extra=None):
    run = RunDir.create(path, cfg, "local")
    run_inprocess(make_server_app(run.path), client, sites, node_extra=extra)
    return _rows(run.path), _model(run.path)


def _overclaiming_client(pid_claim):
    """The real ClientApp, but partition ``pid_claim[0]`` claims ``pid_claim[1]`` training examples."""
    app = ClientApp()
    pid, claim = pid_claim

    @app.query("site_info")
    def info(msg: Message, context: Context) -> Message:
        return real.site_info(msg, context)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = real.train(msg, context)
        if int(context.node_config["partition-id"]) == pid:
            reply.content.metric_records[METRICS][NUM_EXAMPLES] = claim
        return reply

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return real.evaluate(msg, context)

    return app


def test_a_site_claiming_a_billion_examples_is_refused_and_the_round_goes_on(tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg("federation.num_sites=3", "federation.min_sites=2")
    rows, model = _run(cfg, tmp_path / "claim", _overclaiming_client((0, 10**9)), sites=3)
    n1 = next(s["num_train"] for s in RunDir.open(tmp_path / "claim").read_sites() if s["name"] == "site-1")
    assert 20 <= n1 <= 50  # 150 images, 3 sites, a fifth held out
    refused = [r for r in rows if r.get("rejected")]
    assert [(r["round"], r["scope"]) for r in refused] == [(1, "site-1"), (2, "site-1")]
    assert refused[0]["reason"] == (f"reply claims num-examples = 1000000000, more than the {n1} training examples "
                                    f"the site reported at setup")
    assert all((r["sites_aggregated"], r["sites_rejected"]) == (2, 1) for r in rows if "sites_aggregated" in r)
    assert "update from site-1 rejected: reply claims num-examples = 1000000000" in caplog.text
    # the aggregate is FedAvg over the other two sites, exactly as when site-1's update is dropped as NaN
    _, dropped = _run(cfg, tmp_path / "nan", sites=3, extra={0: {"attack": "nan"}})
    assert _same(model, dropped)
    # an honest claim (its true count) changes nothing
    _, honest = _run(cfg, tmp_path / "true", _overclaiming_client((0, n1)), sites=3)
    _, plain = _run(cfg, tmp_path / "plain", sites=3)
    assert _same(honest, plain)


def _five(tiny_cfg, strategy, *overrides):
    return tiny_cfg("federation.num_sites=5", "federation.rounds=2", "federation.min_sites=3",
                    f"federation.strategy.name={strategy}", "federation.strategy.num_malicious=1",
                    "federation.strategy.num_selected=3", *overrides)


def test_norm_bound_rejects_the_x10_update_and_fedavg_equals_the_honest_sites_alone(tiny_cfg, tmp_path, caplog):
    cfg = _five(tiny_cfg, "fedavg", "federation.validation.max_update_norm_factor=3")
    rows, model = _run(cfg, tmp_path / "bounded", extra=ATTACKED)
    for rnd in (1, 2):
        glob = next(r for r in rows if r["round"] == rnd and "sites_aggregated" in r)
        assert (glob["sites_aggregated"], glob["sites_rejected"], glob["sites_norm_rejected"]) == (3, 2, 1)
        flipped = next(r for r in rows if r["round"] == rnd and r["scope"] == "site-2")
        honest = [r["update_norm"] for r in rows if r["round"] == rnd and r["scope"] in ("site-1", "site-3", "site-5")
                  and "update_norm" in r]
        assert flipped["rejected"] == 1 and "x the round's median update norm" in flipped["reason"]
        assert len(honest) == 3 and flipped["update_norm"] > 3 * max(honest)
    assert "update from site-2 rejected: update norm" in caplog.text
    _, honest_only = _run(cfg, tmp_path / "honest", extra=HONEST_ONLY)
    assert _same(model, honest_only)
    # an absolute bound between the honest norms and the attacker's does the same
    ceiling = 2 * max(r["update_norm"] for r in rows if r["scope"] != "site-2" and "update_norm" in r)
    _, absolute = _run(_five(tiny_cfg, "fedavg", f"federation.validation.max_update_norm={ceiling}"),
                       tmp_path / "absolute", extra=ATTACKED)
    assert _same(absolute, honest_only)


@pytest.mark.parametrize("strategy", ["fedavg", "multikrum"])
def test_norm_bound_leaves_normal_updates_untouched(tiny_cfg, tmp_path, strategy):
    rows, bounded = _run(_five(tiny_cfg, strategy, "federation.validation.max_update_norm_factor=3",
                               "federation.validation.max_update_norm=1000"), tmp_path / "bounded")
    _, plain = _run(_five(tiny_cfg, strategy), tmp_path / "plain")
    assert _same(bounded, plain)
    assert not any(r.get("rejected") for r in rows)
    assert all(r["sites_norm_rejected"] == 0 for r in rows if "sites_aggregated" in r)
    assert sum(1 for r in rows if r.get("update_norm", 0) > 0) == 10  # 5 sites x 2 rounds


def test_multikrum_with_the_norm_bound_keeps_only_honest_updates(tiny_cfg, tmp_path):
    cfg = _five(tiny_cfg, "multikrum", "federation.validation.max_update_norm_factor=3")
    rows, model = _run(cfg, tmp_path / "bounded", extra=ATTACKED)
    assert all((r["sites_aggregated"], r["sites_norm_rejected"]) == (3, 1) for r in rows if "sites_aggregated" in r)
    _, honest_only = _run(cfg, tmp_path / "honest", extra=HONEST_ONLY)
    assert _same(model, honest_only)


def test_an_inflated_weight_under_secure_aggregation_stops_the_run(tmp_path):
    """A masked sum cannot lose one update: a site whose num-examples exceeds its setup count stops the
    run (the last checkpoint stays), instead of weighing the mean 50 to 1 towards its update."""
    from fedsilo.federation.secure import secure_mods
    from fedsilo.rounds import FederationError
    from helpers import phantom_classification_config

    app = ClientApp(mods=[secure_mods])
    app.query("site_info")(real.site_info)
    app.evaluate()(real.evaluate)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = real.train(msg, context)
        if int(context.node_config["partition-id"]) == 2:
            reply.content.metric_records[METRICS][NUM_EXAMPLES] = 1000
        return reply

    run = RunDir.create(tmp_path / "secure", phantom_classification_config("federation.secure_aggregation=true"),
                        "local")
    with pytest.raises(FederationError, match=r"round 1: secure aggregation summed an update whose weight is beyond "
                                              r"its site's count at setup; stopping \(site-3: reply claims "
                                              r"num-examples = 1000, more than the 16 training examples"):
        run_inprocess(make_server_app(run.path), app, 3)
