"""Privacy accounting: reference epsilons, two implementations agreeing, calibration, state."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord

from fedsilo.privacy.accounting import (
    Accountant,
    PrivacyBudgetExhausted,
    client_level_epsilon,
    default_delta,
    epsilon_for,
    noise_for,
    reference_epsilon,
    reference_epsilon_history,
)
from fedsilo.rounds import StopTraining

# Reference numbers computed with Opacus 1.6.0 and dp-accounting 0.6.0 (the pinned versions).
# DP-SGD MNIST setting of Abadi et al. 2016: sigma 1.1, batch 256 of 60 000, 60 epochs (14 100 steps).
MNIST = (1.1, 256 / 60000, 14100, 1e-5)
MNIST_RDP = 2.6003429386103023  # opacus RDPAccountant
MNIST_RDP_GOOGLE = 2.6003429394461106  # dp_accounting.rdp.RdpAccountant
PRV_CASE = (1.0, 0.01, 1000, 1e-5)
PRV_OPACUS = 1.838371637017295  # opacus PRVAccountant (upper bound)
PLD_GOOGLE = 1.8282436455855091  # dp_accounting.pld.PLDAccountant


def test_rdp_epsilon_matches_opacus_and_dp_accounting_reference_values():
    assert epsilon_for(*MNIST) == pytest.approx(MNIST_RDP, abs=1e-9)
    assert reference_epsilon(*MNIST, method="rdp") == pytest.approx(MNIST_RDP_GOOGLE, abs=1e-9)
    # two independent RDP implementations agree to 1e-6
    assert abs(MNIST_RDP - MNIST_RDP_GOOGLE) < 1e-6


def test_prv_matches_reference_and_pld_and_is_tighter_than_rdp():
    eps_prv = epsilon_for(*PRV_CASE, accountant="prv")
    assert eps_prv == pytest.approx(PRV_OPACUS, abs=1e-6)
    assert reference_epsilon(*PRV_CASE, method="pld") == pytest.approx(PLD_GOOGLE, abs=1e-6)
    assert abs(eps_prv - PLD_GOOGLE) < 0.02  # PRV and PLD: both numerical, near-tight
    assert eps_prv < epsilon_for(*PRV_CASE, accountant="rdp") == pytest.approx(2.1013652716430564, abs=1e-9)


def test_unsampled_gaussian_rdp_is_closed_form():
    # q = 1: RDP of order a is T a / (2 sigma^2); epsilon = min_a RDP + log(1/delta) / (a - 1) (Mironov 2017)
    sigma, steps, delta = 2.0, 10, 1e-5
    eps = epsilon_for(sigma, 1.0, steps, delta)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    closed = min(steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in orders)
    assert eps <= closed + 1e-9 and eps == pytest.approx(8.079406222420491, abs=1e-9)
    assert reference_epsilon(sigma, 1.0, steps, delta) == pytest.approx(eps, abs=1e-6)
    assert epsilon_for(sigma, 1.0, steps, delta, "prv") == pytest.approx(reference_epsilon(sigma, 1.0, steps, delta, "pld"),
                                                                       abs=0.02)


def test_client_level_epsilon_is_the_sampled_gaussian_over_rounds():
    eps = client_level_epsilon(1.0, 3, 10, 50, 1e-5)
    assert eps == pytest.approx(epsilon_for(1.0, 0.3, 50, 1e-5))
    assert client_level_epsilon(1.0, 10, 10, 50, 1e-5) > eps  # no sampling amplification: more epsilon


def test_noise_calibration_reaches_target_within_tolerance():
    sigma = noise_for(8.0, 0.01, 1000, 1e-5)
    eps = epsilon_for(sigma, 0.01, 1000, 1e-5)
    assert 8.0 - 0.01 <= eps <= 8.0
    assert sigma == pytest.approx(0.6157, abs=1e-3)
    assert noise_for(2.0, 0.01, 1000, 1e-5) > sigma  # smaller budget, more noise


def test_accountant_merges_steps_composes_heterogeneous_history_and_projects():
    acc = Accountant("rdp")
    acc.step(1.0, 0.01, 400)
    acc.step(1.0, 0.01, 600)
    assert acc.history == [(1.0, 0.01, 1000)] and len(acc) == 1000
    assert acc.epsilon(1e-5) == pytest.approx(epsilon_for(1.0, 0.01, 1000, 1e-5))
    projected = acc.projected_epsilon(1e-5, 2.0, 0.02, 100)
    assert acc.history == [(1.0, 0.01, 1000)]  # projection leaves the accountant unchanged
    acc.step(2.0, 0.02, 100)
    assert acc.epsilon(1e-5) == pytest.approx(projected)
    assert acc.epsilon(1e-5) == pytest.approx(reference_epsilon_history(acc.history, 1e-5), abs=1e-5)
    assert Accountant().epsilon(1e-5) == 0.0


def test_accountant_state_round_trips_through_a_flower_config_record():
    acc = Accountant("prv", [(1.0, 0.1, 5), (0.8, 0.1, 3)])
    record = ConfigRecord(acc.state("dp"))  # what travels as site state
    back = Accountant.from_state(dict(record), "dp", "prv")
    assert back.history == acc.history and back.mechanism == "prv"
    assert Accountant.from_state({}, "dp", "rdp").history == []


def test_budget_exhaustion_is_a_clean_stop():
    assert issubclass(PrivacyBudgetExhausted, StopTraining)


def test_default_delta():
    assert default_delta(1000) == 1e-5
    assert default_delta(10) == 1e-5
    assert default_delta(10**7) == 1e-7


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: epsilon_for(0.0, 0.1, 10, 1e-5), "noise_multiplier must be a finite number > 0, got 0.0"),
        (lambda: epsilon_for(1.0, 1.5, 10, 1e-5), r"sample_rate must be in \(0, 1\], got 1.5"),
        (lambda: epsilon_for(1.0, 0.1, -1, 1e-5), "steps must be an integer >= 0, got -1"),
        (lambda: epsilon_for(1.0, 0.1, 10, 1.0), r"delta must be in \(0, 1\), got 1.0"),
        (lambda: epsilon_for(1.0, 0.1, 10, 1e-5, "gdp"), "accountant must be one of rdp, prv, got 'gdp'"),
        (lambda: noise_for(float("inf"), 0.1, 10, 1e-5), "target_epsilon must be a finite number > 0, got inf"),
        (lambda: noise_for(1.0, 0.1, 0, 1e-5), "steps must be >= 1 to calibrate noise, got 0"),
        (lambda: noise_for(1.0, 0.1, 10, 1e-5, tolerance=0.0), "tolerance must be > 0, got 0.0"),
        (lambda: noise_for(1e-9, 1.0, 10, 1e-5), "cannot be reached with noise_multiplier <= 1e6"),
        (lambda: reference_epsilon(1.0, 0.1, 10, 1e-5, "prv"), "method must be one of rdp, pld, got 'prv'"),
        (lambda: client_level_epsilon(1.0, 4, 3, 10, 1e-5), r"sites_per_round must be in \[1, num_sites=3\], got 4"),
        (lambda: default_delta(0), "n must be >= 1, got 0"),
        (lambda: Accountant.from_state({"dp-mechanism": "rdp"}), "accountant state is incomplete"),
        (lambda: Accountant.from_state({"dp-mechanism": "rdp", "dp-noise": [1.0], "dp-rate": [0.1, 0.2],
                                        "dp-steps": [1]}), "lists must have equal lengths, got 1, 2, 1"),
        (lambda: Accountant.from_state({"dp-mechanism": "prv", "dp-noise": [], "dp-rate": [], "dp-steps": []},
                                       mechanism="rdp"), "cannot change accountant mid-run"),
    ],
)
def test_invalid_arguments_are_rejected_with_named_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()
