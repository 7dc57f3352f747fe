"""Every strategy name builds, configures and aggregates toy updates to the expected values."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAvg

from fedsilo.config.federation_schema import StrategySection
from fedsilo.federation.grids import SubsetGrid
from fedsilo.federation.inprocess import InProcessGrid
from fedsilo.federation.messages import ARRAYS
from fedsilo.federation.robust import centered_clip
from fedsilo.federation.strategies import (
    STRATEGY_NAMES,
    LocalStateStrategy,
    build_strategy,
    load_strategy_state,
    strategy_state,
)
from helpers import arrays, train_reply

NODES = [1001, 1002, 1003, 1004, 1005]


pytestmark = pytest.mark.usefixtures("superlink_identity")


def _grid():
    return InProcessGrid(client_app=None, node_configs=[{"partition-id": i} for i in range(len(NODES))])


def _reply(node: int, values: dict[str, float], n: int, counters: dict[str, int] | None = None) -> Message:
    """A site's update: float32 ``[v]`` per value and 0-d int64 counters (like num_batches_tracked)."""
    return train_reply(node, arrays(**{k: np.array([v], np.float32) for k, v in values.items()},
                                    **{k: np.array(v, np.int64) for k, v in (counters or {}).items()}), n)


def _global(value: float = 0.0) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.array([value], dtype=np.float32))})


def _aggregate(name: str, values: list[float], weights: list[int], **kw) -> float:
    strategy = build_strategy(StrategySection(name=name, **kw), num_sites=len(values))
    msgs = list(strategy.configure_train(1, _global(), ConfigRecord(), SubsetGrid(_grid(), NODES[: len(values)])))
    assert sorted(m.metadata.dst_node_id for m in msgs) == NODES[: len(values)]
    arrays, _ = strategy.aggregate_train(1, [_reply(NODES[i], {"w": v}, n) for i, (v, n) in
                                             enumerate(zip(values, weights))])
    return float(arrays["w"].numpy()[0])


def test_every_name_builds_and_aggregates():
    for name in STRATEGY_NAMES:
        value = _aggregate(name, [1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 1, 1, 1])
        assert np.isfinite(value), name


def test_fedavg_weights_by_examples():
    assert _aggregate("fedavg", [1.0, 4.0], [3, 1]) == pytest.approx(1.75)


def test_fedprox_sends_mu_and_averages():
    strategy = build_strategy(StrategySection(name="fedprox", proximal_mu=0.3), 2)
    msgs = list(strategy.configure_train(1, _global(), ConfigRecord(), SubsetGrid(_grid(), NODES[:2])))
    assert msgs[0].content.config_records["config"]["proximal-mu"] == pytest.approx(0.3)
    assert _aggregate("fedprox", [1.0, 4.0], [3, 1]) == pytest.approx(1.75)


def test_robust_strategies_resist_an_outlier():
    values, weights = [1.0, 2.0, 3.0, 4.0, 1000.0], [1] * 5
    assert _aggregate("fedmedian", values, weights) == pytest.approx(3.0)
    assert _aggregate("fedtrimmedavg", values, weights, trim_beta=0.2) == pytest.approx(3.0)
    assert _aggregate("krum", values, weights, num_malicious=1) in (1.0, 2.0, 3.0, 4.0)
    assert 1.0 <= _aggregate("multikrum", values, weights, num_malicious=1, num_selected=3) <= 4.0
    assert _aggregate("fedavg", values, weights) == pytest.approx(202.0)
    # centered clipping around the global weights (0), radius = median update norm 3, 3 iterations:
    # v = 2.4, then 2.4 + 0.68, then 3.08 + 0.136 (the outlier always contributes at most 3 / 5)
    assert _aggregate("centeredclip", values, weights) == pytest.approx(3.216)


def test_centered_clip_converges_to_the_honest_fixed_point():
    # three honest updates of 1 and an attacker at -100, radius 1: the fixed point balances
    # 3 (1 - v) against the clipped attacker's 1, i.e. v = 2/3; iterations approach it
    updates = np.array([[1.0], [1.0], [1.0], [-100.0]])
    assert centered_clip(updates, 1.0, 1)[0] == pytest.approx(0.5)
    assert centered_clip(updates, 1.0, 3)[0] == pytest.approx(0.65625)
    assert centered_clip(updates, 1.0, 60)[0] == pytest.approx(2 / 3)
    # updates inside the radius are not clipped: one iteration gives their mean
    inside = np.array([[0.1, -0.2], [0.3, 0.2], [-0.1, 0.3]])
    np.testing.assert_allclose(centered_clip(inside, 10.0, 1), inside.mean(axis=0))
    with pytest.raises(ValueError, match="tau must be > 0, got 0.0"):
        centered_clip(updates, 0.0, 1)
    with pytest.raises(ValueError, match="non-empty \\(n, p\\) array, got shape \\(4,\\)"):
        centered_clip(updates[:, 0], 1.0, 1)


def test_centered_clipping_ignores_reported_example_counts_and_keeps_integer_arrays():
    strategy = build_strategy(StrategySection(name="centeredclip", clip_radius=100.0, clip_iterations=1), 3)
    start = ArrayRecord({"w": Array(np.array([0.0], dtype=np.float32)), "n": Array(np.array(7, dtype=np.int64))})
    list(strategy.configure_train(1, start, ConfigRecord(), SubsetGrid(_grid(), NODES[:3])))
    replies = [_reply(node, {"w": w}, examples, {"n": n})
               for node, (w, n, examples) in zip(NODES, [(1.0, 8, 1), (2.0, 9, 1), (6.0, 30, 10_000)])]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays["w"].numpy()[0] == pytest.approx(3.0)  # unweighted mean (inside the radius)
    assert arrays["n"].numpy().dtype == np.int64 and arrays["n"].numpy().shape == () and arrays["n"].numpy() == 9


def test_fedadam_matches_closed_form():
    # One round from w0 = 0, mean update d = 2: m = (1-b1) d, v = (1-b2) d^2,
    # w1 = eta * sqrt(1 - b2^2) / (1 - b1^2) * m / (sqrt(v) + tau)
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    got = _aggregate("fedadam", [1.0, 3.0], [1, 1], server_lr=eta, beta_1=b1, beta_2=b2, tau=tau)
    d = 2.0
    m, v = (1 - b1) * d, (1 - b2) * d * d
    expected = eta * np.sqrt(1 - b2**2) / (1 - b1**2) * m / (np.sqrt(v) + tau)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["fedyogi", "fedadagrad", "fedavgm"])
def test_server_optimisers_move_towards_the_update(name):
    assert 0.0 < _aggregate(name, [1.0, 3.0], [1, 1]) <= 2.0 + 1e-6


def test_bulyan_needs_enough_sites():
    with pytest.raises(ValueError, match="bulyan needs num_sites >= 4 \\* num_malicious \\+ 3 = 7, got 5"):
        build_strategy(StrategySection(name="bulyan", num_malicious=1), 5)


def test_strategy_state_round_trip_continues_identically():
    cfg = StrategySection(name="fedadam")
    grid = SubsetGrid(_grid(), NODES[:2])

    def step(strategy, rnd, start):
        list(strategy.configure_train(rnd, start, ConfigRecord(), grid))
        arrays, _ = strategy.aggregate_train(rnd, [_reply(NODES[0], {"w": 1.0}, 1), _reply(NODES[1], {"w": 3.0}, 1)])
        return arrays

    a = build_strategy(cfg, 2)
    w1 = step(a, 1, _global())
    saved = strategy_state(a)
    assert set(saved) >= {"m_t", "v_t", "current_arrays"}
    b = build_strategy(cfg, 2)
    load_strategy_state(b, saved)
    assert step(a, 2, w1)["w"].numpy()[0] == step(b, 2, w1)["w"].numpy()[0]


def test_local_state_strategy_keeps_local_keys_per_group():
    strategy = LocalStateStrategy(FedAvg(min_train_nodes=1, min_available_nodes=1), lambda k: k == "bn",
                                  groups={NODES[0]: "a", NODES[1]: "b", NODES[2]: "b"})
    start = ArrayRecord({"w": Array(np.array([0.0], np.float32)), "bn": Array(np.array([0.0], np.float32))})
    grid = SubsetGrid(_grid(), NODES[:3])
    list(strategy.configure_train(1, start, ConfigRecord(), grid))
    arrays, _ = strategy.aggregate_train(1, [
        _reply(NODES[0], {"w": 1.0, "bn": 10.0}, 1),
        _reply(NODES[1], {"w": 2.0, "bn": 20.0}, 1),
        _reply(NODES[2], {"w": 3.0, "bn": 40.0}, 3),
    ])
    assert arrays["w"].numpy()[0] == pytest.approx((1 + 2 + 9) / 5)
    assert strategy.personalised(arrays, "a")["bn"].numpy()[0] == pytest.approx(10.0)
    assert strategy.personalised(arrays, "b")["bn"].numpy()[0] == pytest.approx((20 + 120) / 4)
    msgs = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    sent = {m.metadata.dst_node_id: m.content.array_records[ARRAYS]["bn"].numpy()[0] for m in msgs}
    assert sent == {NODES[0]: pytest.approx(10.0), NODES[1]: pytest.approx(35.0), NODES[2]: pytest.approx(35.0)}
    assert "_groups" not in strategy_state(strategy) and "local" in strategy_state(strategy)
