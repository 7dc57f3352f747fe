"""Federated GAN evaluation (gan.evaluation = "federated"): the fixed feature network, the sites'
statistics combined at the coordinator against the pooled computation on the same features, and
an engine run that logs exactly the pooled numbers without training any reference network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsilo.deploy.certs import DeployError
from fedsilo.deploy.run import refuse_simulation_only
from fedsilo.run.start import start_run
from fedsilo.tasks import make_task
from fedsilo.tasks.synthesis.federated_stats import (
    check_site_statistics,
    combine_site_statistics,
    pooled_moments,
    site_statistics,
)
from fedsilo.tasks.synthesis.fixed_features import FixedFeatureNet
from fedsilo.tasks.synthesis.manifold import knn_radii, knn_realism, precision_recall_density_coverage
from fedsilo.tasks.synthesis.metrics import frechet_distance
from helpers import gan_config


def _features(seed: int, sizes: list[int], d: int = 6, m: int = 40) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Real features of sites of ``sizes`` (each shifted: the sites differ) and ``m`` generated ones."""
    gen = torch.Generator().manual_seed(seed)
    sites = [torch.randn(n, d, generator=gen, dtype=torch.float64) * (1 + i / 4) + i / 2 for i, n in enumerate(sizes)]
    return sites, torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.2 + 0.3


def _federated(sites: list[torch.Tensor], fake: torch.Tensor) -> dict[str, float]:
    radii = knn_radii(fake, 5)
    stats = [site_statistics(real, fake, radii) for real in sites]
    assert all(check_site_statistics(s, fake.shape[1], len(fake)) is None for s in stats)
    return {k: r.value for k, r in combine_site_statistics(fake, stats, n_bootstrap=0).items()}


def test_fixed_feature_network_is_the_same_everywhere():
    a, b = FixedFeatureNet(3, 28), FixedFeatureNet(3, 28)
    # recorded: the network is part of the metrics' definition and must not change silently
    assert a.fingerprint() == b.fingerprint() == "1bc0ec5fc69e3633"
    assert FixedFeatureNet(1, 64).fingerprint() == "aef147cb8583c945"
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fa = a(x)
    assert fa.shape == (4, 64) and torch.equal(fa, b(x)) and bool((fa >= 0).all())
    assert len(FixedFeatureNet(3, 128).convs) == 5 and not any(p.requires_grad for p in a.parameters())
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        a(torch.zeros(1, 1, 28, 28))


def test_federated_combination_equals_the_pooled_computation_on_the_same_features():
    sites, fake = _features(0, [30, 55, 17])
    fed = _federated(sites, fake)
    real = torch.cat(sites)
    # FD and recall are exactly the pooled definition's
    assert fed["fd"] == pytest.approx(frechet_distance(real, fake).value, rel=1e-9)
    pooled = {k: r.value for k, r in precision_recall_density_coverage(real, fake, n_bootstrap=0).items()}
    assert fed["recall"] == pytest.approx(pooled["recall"], abs=1e-12)
    # precision, density, coverage and realism: the pooled computation with each real point's
    # radius among its own site's points gives the very same numbers
    site_radii = torch.cat([knn_radii(s, 5) for s in sites])
    same = {k: r.value for k, r in
            precision_recall_density_coverage(real, fake, n_bootstrap=0, real_radii=site_radii).items()}
    for key in ("precision", "density", "coverage"):
        assert fed[key] == pytest.approx(same[key], abs=1e-12), key
    assert fed["realism"] == pytest.approx(float(knn_realism(real, fake, site_radii).mean()), abs=1e-12)
    # ... and since a site's radius is never below the pooled one, never below the pooled values
    assert bool((site_radii >= knn_radii(real, 5) - 1e-12).all())
    for key in ("precision", "density", "coverage"):
        assert fed[key] >= pooled[key] - 1e-12, key
    assert fed["density"] > pooled["density"]  # (the sites here are small: the radii differ)


def test_one_site_gives_the_pooled_definition_exactly():
    (real,), fake = _features(1, [60])
    fed = _federated([real], fake)
    pooled = {k: r.value for k, r in precision_recall_density_coverage(real, fake, n_bootstrap=0).items()}
    for key, value in pooled.items():
        assert fed[key] == pytest.approx(value, abs=1e-12), key
    assert fed["realism"] == pytest.approx(float(knn_realism(real, fake, knn_radii(real, 5)).mean()), abs=1e-12)


def test_pooled_moments_are_exact():
    sites, fake = _features(2, [7, 30, 1])
    n, mean, cov = pooled_moments([site_statistics(s, fake, knn_radii(fake, 5)) for s in sites])
    real = torch.cat(sites)
    assert n == 38
    np.testing.assert_allclose(mean, real.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov, torch.cov(real.T).numpy(), rtol=1e-10, atol=1e-12)


def test_small_site_adds_moments_but_no_manifold():
    sites, fake = _features(3, [40, 4])
    radii = knn_radii(fake, 5)
    small = site_statistics(sites[1], fake, radii)
    assert int(small["n"][0]) == 4 and int(small["manifold_n"][0]) == 0 and not small["inside"].any()
    fed = _federated(sites, fake)
    assert fed["fd"] == pytest.approx(frechet_distance(torch.cat(sites), fake).value, rel=1e-9)
    alone = _federated(sites[:1], fake)
    assert fed["recall"] == alone["recall"] and fed["precision"] == alone["precision"]


def test_malformed_statistics_are_named():
    sites, fake = _features(4, [20])
    good = site_statistics(sites[0], fake, knn_radii(fake, 5))
    assert check_site_statistics({**good, "inside": good["inside"][:-1]}, 6, 40) == \
        "'inside' has shape (39,), expected (40,)"
    assert "non-finite" in check_site_statistics({**good, "mean": np.full(6, np.nan)}, 6, 40)
    assert "recall_hits" in check_site_statistics({**good, "recall_hits": np.array([21])}, 6, 40)
    assert check_site_statistics({k: v for k, v in good.items() if k != "scatter"}, 6, 40) == "missing 'scatter'"


def test_site_refuses_another_feature_network_and_deploy_refuses_reference_evaluation():
    task = make_task(gan_config("gan.evaluation=federated"))
    request = task.site_statistics_request(task.build_model(), torch.device("cpu"))
    assert request["fake_features"].shape == (24, 64) and request["fake_radii"].shape == (24,)
    site = task.federated_data().sites[0]
    stats = task.site_statistics(site, request, torch.device("cpu"))
    assert int(stats["n"][0]) == len(site.train)
    with pytest.raises(ValueError, match="feature network .* differs"):
        task.site_statistics(site, {**request, "fingerprint": np.frombuffer(b"0" * 16, np.uint8)}, torch.device("cpu"))
    with pytest.raises(DeployError, match="gan.evaluation = 'federated'"):
        refuse_simulation_only(gan_config())
    refuse_simulation_only(gan_config("gan.evaluation=federated"))


def test_engine_logs_the_pooled_numbers_and_trains_no_reference_network(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSILO_CACHE", str(tmp_path / "cache"))
    cfg = gan_config("gan.evaluation=federated", "federation.rounds=1")
    run = start_run(cfg, tmp_path / "run", "local")
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["scope"] == "global" and "test_fd" in r]
    assert [r["round"] for r in last] == [0, 1]  # round 0 too: the sites answer before training
    last = last[-1]
    assert last["test_eval_sites"] == 2 and "test_kid" not in last and "trtr_accuracy" not in last
    # recompute from the final model: features of the same generated images and of every site's
    # training images, pooled
    task = make_task(cfg)
    model = task.build_model()
    model.load_state_dict(torch.load(run.final_path, weights_only=False)["model"])
    request = task.site_statistics_request(model, torch.device("cpu"))
    fake = torch.from_numpy(request["fake_features"])
    sites = [task.federated_eval.features(s.train, torch.device("cpu")) for s in task.federated_data().sites]
    real = torch.cat(sites)
    assert last["test_fd"] == pytest.approx(frechet_distance(real, fake).value, rel=1e-9)
    site_radii = torch.cat([knn_radii(s, 5) for s in sites])
    same = precision_recall_density_coverage(real, fake, n_bootstrap=0, real_radii=site_radii)
    for key in ("precision", "recall", "density", "coverage"):
        assert last[f"test_{key}"] == pytest.approx(same[key].value, abs=1e-12), key
    assert last["test_realism"] == pytest.approx(float(knn_realism(real, fake, site_radii).mean()), abs=1e-12)
    assert not (tmp_path / "cache" / "gan-references").exists()
    assert not (run.path / "samples" / "nearest-real.png").exists() and (run.path / "samples" / "round-001.png").is_file()
    images, grades, source = task.generate(model, 4, None, 0, torch.device("cpu"))
    assert images.shape == (4, 3, 28, 28) and grades.tolist() == [0] * 4 and source.startswith("none")
