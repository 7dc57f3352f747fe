"""The one-run privacy audit (Steinke, Nasr and Jagielski, NeurIPS 2023): the bound's arithmetic,
and the property it exists for: a broken mechanism (clipping on, noise off, the accountant still
claiming epsilon = 2) is caught by a lower bound above 2, while the sound mechanism at
epsilon = 2 stays at or below its claim.

The GAN is audited for soundness only: its discriminator trains with Adam, whose per-weight
normalisation blurs how far a canary moves its weight, so the final-model audit is weak there
(with the noise off, 1000 canaries and 100 steps, it certified only epsilon >= 0.56)."""

from __future__ import annotations

import math

import numpy as np
import opacus.optimizers.optimizer as opacus_optimizer
import pytest
import torch

from fedsilo.audit.registry import run_audit
from fedsilo.config import ConfigError
from fedsilo.privacy.auditing import audit_canaries, epsilon_lower_bound, p_value
from fedsilo.report import write_run_files
from fedsilo.run.start import start_run
from fedsilo.tasks import make_task
from fedsilo.training import run_canaries
from helpers import gan_config, phantom_classification_config, seg_config


def test_the_bound_of_perfect_guesses_is_randomised_response_at_the_confidence():
    # delta = 0: r right guesses out of r refute epsilon while q^r < 0.05, q = e^eps / (1 + e^eps)
    q = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(100, 100, 100, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-3)
    assert epsilon_lower_bound(1000, 100, 50, 1e-5) == 0.0  # chance-level guessing refutes nothing
    assert epsilon_lower_bound(1000, 200, 200, 1e-5) > epsilon_lower_bound(1000, 100, 100, 1e-5)
    assert p_value(1000, 100, 90, 2.0, 1e-5) > p_value(1000, 100, 90, 2.0, 0.0)  # delta loosens it
    with pytest.raises(ValueError, match="need 0 <= v <= r <= m"):
        p_value(10, 20, 5, 1.0, 0.0)


def test_random_scores_give_no_bound_and_separating_scores_give_one():
    rng = np.random.default_rng(0)
    coins = rng.random(1000) < 0.5
    assert audit_canaries(rng.random(1000), coins, 1e-5).epsilon_lower_bound < 0.5
    strong = audit_canaries(coins + rng.random(1000) * 0.1, coins, 1e-5)
    assert strong.epsilon_lower_bound > 4 and strong.correct == strong.guesses


WIDE = {  # enough weights for 1000 canaries; SGD so that a canary moves its weight linearly
    "classification": lambda *o: phantom_classification_config("classifier.width=16", "train.optimizer=sgd",
                                                                "train.lr=0.05", *o),
    "segmentation": lambda *o: seg_config("train.optimizer=sgd", "train.lr=0.05", "federation.rounds=1", "train.local_steps=30",
                                          "segmentation.hd95=false", *o),
    "synthesis": lambda *o: gan_config("federation.rounds=1", "train.local_steps=30", "gan.d_width=16", *o),
}
AUDITED = ("privacy.mode=sample", "privacy.epsilon=2", "privacy.canaries=1000", "federation.eval_every=100")


def _bound(task: str, tmp_path) -> tuple[float, float]:
    run = start_run(WIDE[task](*AUDITED), tmp_path / task)
    summary = run_audit(run.path, ["dp-canary"])["summary"]
    bound, claimed = summary["dp_canary_epsilon_lower_bound"], summary["dp_canary_claimed_epsilon"]
    write_run_files(run.path)
    card = (run.path / "MODEL_CARD.md").read_text()
    assert f"Empirical epsilon (one-run audit with 1000 canaries): at least {bound:.2f}" in card
    assert ("the bound is ABOVE it" in card) == (bound > claimed)
    assert "This is an audit run: 1000 gradient canaries" in card
    assert f"at least {bound:.2f}" in (run.path / "report.html").read_text()
    return bound, claimed


@pytest.mark.parametrize("task", sorted(WIDE))
def test_the_sound_mechanism_stays_at_or_below_its_claim(task, tmp_path):
    bound, claimed = _bound(task, tmp_path)
    assert claimed == pytest.approx(2.0, abs=0.01) and bound <= claimed


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_a_mechanism_without_noise_is_caught(task, tmp_path, monkeypatch):
    monkeypatch.setattr(opacus_optimizer, "_generate_noise", lambda std, reference, **kw: torch.zeros_like(reference))
    bound, claimed = _bound(task, tmp_path / "broken")
    assert claimed == pytest.approx(2.0, abs=0.01) and bound > claimed  # the accountant still says 2


def test_canaries_are_drawn_again_by_the_audit_and_checked_up_front():
    cfg = WIDE["classification"](*AUDITED)
    task = make_task(cfg)
    a, b = run_canaries(task, task.build_model()), run_canaries(task, task.build_model())
    assert len(a) == 1000 and a.names == b.names and np.array_equal(a.included, b.included)
    assert 400 < a.included.sum() < 600 and set(np.bincount(a.site)) <= {333, 334}
    with pytest.raises(ConfigError, match="privacy.canaries audits DP-SGD: it needs privacy.mode = 'sample'"):
        phantom_classification_config("privacy.canaries=10")


def test_more_canaries_than_weights_fail_before_the_run_starts(tmp_path):
    cfg = phantom_classification_config("privacy.mode=sample", "privacy.epsilon=2", "privacy.canaries=100000")
    with pytest.raises(ConfigError, match=r"privacy.canaries = 100000 exceeds the \d+ weights of the private model"):
        start_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
