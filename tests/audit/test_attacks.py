"""Attacks on memorising toys (members separated: AUC > 0.9) and on models that never saw either
set (AUC within 0.5 +- 0.1); ROC metrics by hand; gradient inversion of a one-step update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.audit.attacks import (
    attack_batch,
    attack_result,
    auc_score,
    calibrated_attacks,
    client_update,
    cross_entropy_losses,
    dcr_grid,
    dcr_result,
    distance_to_closest_record,
    gan_leaks_blackbox,
    gan_leaks_whitebox,
    generator_sampler,
    infer_labels,
    inversion_attack,
    inversion_grid,
    invert_generator,
    invert_update,
    lira_scores,
    logan_attack,
    plot_roc,
    psnr,
    real_vs_synthetic_detector,
    rmia_scores,
    roc_curve,
    sample_losses,
    ssim,
    tpr_at_fpr,
)
from fedsilo.audit.attacks.metrics import balanced_accuracy
from fedsilo.audit.attacks.mia import balanced_in_mask
from helpers import MixtureGenerator, overfit_discriminator

N = 150  # members and non-members per side: AUC's null std is ~0.033


def _near_half(auc: float) -> bool:
    return 0.4 <= auc <= 0.6


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three disjoint sets of random 1x8x8 images in [-1, 1]: members, non-members, never used."""
    return torch.rand(3 * N, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_roc_auc_tpr_and_balanced_accuracy_by_hand():
    members, nonmembers = [0.9, 0.8, 0.4], [0.7, 0.4, 0.1, 0.0]
    fpr, tpr, thr = roc_curve(members, nonmembers)
    # thresholds 0.9, 0.8, 0.7, 0.4 (a member and a non-member tie), 0.1, 0.0
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thr[0] == np.inf
    # pairs: 12; member > non-member in 10, one tie (0.4 vs 0.4) counts 1/2
    assert auc_score(members, nonmembers) == pytest.approx(10.5 / 12)
    assert tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(2 / 3)
    assert balanced_accuracy(fpr, tpr) == pytest.approx((2 / 3 + 1) / 2)  # cut at 0.8
    r = attack_result("toy", members, nonmembers)
    assert r.tpr_at_1pct_fpr == pytest.approx(2 / 3) and r.min_fpr == 0.25
    assert r.to_dict()["roc"]["fpr"][-1] == 1.0


def test_psnr_and_ssim_by_hand():
    a = torch.zeros(1, 1, 8, 8)
    b = torch.full((1, 1, 8, 8), 0.2)
    # MSE 0.04 over range 2: 10 log10(4 / 0.04) = 20 dB
    assert float(psnr(a, b)) == pytest.approx(20.0)
    assert float(ssim(b, b)) == pytest.approx(1.0, abs=1e-4)
    assert float(ssim(a, torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)))) < 0.5


def test_plot_roc_writes_a_png(tmp_path):
    r = attack_result("toy", [1, 2, 3], [0, 1])
    assert plot_roc([r], tmp_path / "roc.png").stat().st_size > 1000


# --------------------------------------------------------------------------------------------
# Membership inference against a classifier
# --------------------------------------------------------------------------------------------


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 5))


def _fit(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 250) -> nn.Module:
    model = _mlp(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_loss_lira_and_rmia_separate_a_memorising_classifier_and_not_an_unseen_one(images):
    labels = torch.randint(0, 5, (3 * N,), generator=torch.Generator().manual_seed(2))  # random: only memorised
    pool_x, pool_y = images[: 2 * N], labels[: 2 * N]
    is_member = np.r_[np.ones(N, bool), np.zeros(N, bool)]
    overfit = _fit(images[:N], labels[:N], seed=1)
    unseen = _fit(images[2 * N:], labels[2 * N:], seed=2)
    train_fn = lambda idx, seed: _fit(pool_x[idx], pool_y[idx], seed)  # noqa: E731
    for model, separated in ((overfit, True), (unseen, False)):
        results = {r.name: r for r in calibrated_attacks(model, pool_x, pool_y, is_member, train_fn,
                                                         num_models=4, seed=0)}
        assert set(results) == {"loss", "lira", "rmia"}
        for r in results.values():
            assert (r.auc > 0.9) if separated else _near_half(r.auc), (r.name, r.auc)
    assert results["loss"].details["mean_member_loss"] > 0


def test_lira_and_rmia_math_on_hand_made_losses():
    # two targets, four reference models; target model: low loss on target 0 only
    target = np.array([0.1, 2.0])
    ref = np.array([[0.1, 2.0], [2.0, 0.1], [0.1, 2.0], [2.0, 0.1]])
    mask = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)
    lira = lira_scores(target, ref, mask)
    assert lira[0] > 0 > lira[1]  # target 0 looks IN, target 1 looks OUT
    rmia = rmia_scores(target, ref, mask)
    assert rmia[0] == 1.0 and rmia[1] == 0.5  # fraction of z (both targets) dominated
    offline = rmia_scores(target, ref, None)
    assert offline[0] >= offline[1]
    with pytest.raises(ValueError, match=r"reference losses must have shape \(K, 2\), got \(4, 3\)"):
        lira_scores(target, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"in_mask must have shape \(4, 2\)"):
        rmia_scores(target, ref, mask[:, :1])
    with pytest.raises(ValueError, match="at least one OUT reference model"):
        lira_scores(target, ref, np.ones((4, 2), bool))
    with pytest.raises(ValueError, match="gamma must be >= 1, got 0.5"):
        rmia_scores(target, ref, mask, gamma=0.5)
    with pytest.raises(ValueError, match=r"offline_a must be in \[0, 1\], got 2"):
        rmia_scores(target, ref, mask, offline_a=2)
    with pytest.raises(ValueError, match="population must hold at least one sample"):
        rmia_scores(target, ref, mask, population=np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="num_models must be >= 1 and pool_size >= 2, got 0 and 5"):
        balanced_in_mask(0, 5, np.random.default_rng(0))
    mask4 = balanced_in_mask(4, 10, np.random.default_rng(0))
    assert (mask4.sum(0) == 2).all()  # every example IN exactly half of the reference models


def test_membership_argument_errors():
    model = _mlp(0)
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="x and y must have the same length, got 4 and 3"):
        sample_losses(model, x, y[:3])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        sample_losses(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"is_member must have shape \(4,\)"):
        calibrated_attacks(model, x, y, np.ones(3, bool), lambda i, s: model, num_models=0, seed=0)
    with pytest.raises(ValueError, match="both members and non-members"):
        calibrated_attacks(model, x, y, np.ones(4, bool), lambda i, s: model, num_models=0, seed=0)
    with pytest.raises(ValueError, match="member_scores must be finite"):
        attack_result("x", [np.nan], [1.0])
    with pytest.raises(ValueError, match="nonmember_scores must hold at least one score, got 0"):
        roc_curve([1.0], [])
    with pytest.raises(ValueError, match=r"target must be in \[0, 1\], got 2"):
        tpr_at_fpr(np.zeros(2), np.zeros(2), 2)
    with pytest.raises(ValueError, match="results must hold at least one AttackResult"):
        plot_roc([], "x.png")
    with pytest.raises(ValueError, match=r"images must both have shape \(N, C, H, W\)"):
        psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="at least 3 x 3 px for SSIM"):
        ssim(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


# --------------------------------------------------------------------------------------------
# GAN attacks on toy generators / discriminators
# --------------------------------------------------------------------------------------------


def test_logan_separates_an_overfit_discriminators_members(images):
    members, nonmembers, other = images[:N], images[N:2 * N], images[2 * N:]
    assert logan_attack(overfit_discriminator(members, 0), members, nonmembers).auc > 0.9
    assert _near_half(logan_attack(overfit_discriminator(other, 1), members, nonmembers).auc)


def test_gan_leaks_black_and_white_box_on_a_memorising_generator(images):
    members, nonmembers, other = images[:N], images[N:2 * N], images[2 * N:]
    memorising, unseen = MixtureGenerator(members), MixtureGenerator(other)
    black = gan_leaks_blackbox(generator_sampler(memorising), members, nonmembers, num_samples=2000)
    assert black.auc > 0.9 and black.details["member_distance"] < black.details["nonmember_distance"]
    assert _near_half(gan_leaks_blackbox(generator_sampler(unseen), members, nonmembers, num_samples=2000).auc)
    kw = {"steps": 150, "lr": 0.1, "restarts": 2}
    white = gan_leaks_whitebox(memorising, members, nonmembers, **kw)
    assert white.auc > 0.9
    assert _near_half(gan_leaks_whitebox(unseen, members, nonmembers, **kw).auc)
    calibrated = gan_leaks_blackbox(generator_sampler(memorising), members, nonmembers, num_samples=500,
                                    reference=generator_sampler(unseen))
    assert calibrated.details["calibrated"] and calibrated.auc > 0.9


def test_model_inversion_reconstructs_members_better(images):
    members, nonmembers = images[:N], images[N:2 * N]
    gen = MixtureGenerator(members)
    result, mem, non = inversion_attack(gen, members[:40], nonmembers[:40], steps=150, lr=0.1, restarts=2)
    assert result.auc > 0.9
    assert float(mem.mse.mean()) < float(non.mse.mean()) and float(mem.ssim.mean()) > float(non.ssim.mean())
    assert mem.reconstructions.shape == (40, 1, 8, 8) and mem.latents.shape == (40, N)
    with pytest.raises(ValueError, match="targets must be a non-empty batch"):
        invert_generator(gen, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match="steps and restarts must be >= 1, got 0 and 1"):
        invert_generator(gen, members[:2], steps=0, restarts=1)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        invert_generator(gen, members[:2], labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        invert_generator(nn.Identity(), members[:2])
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        generator_sampler(nn.Identity())


def test_dcr_of_copies_and_of_an_independent_generator(images, tmp_path):
    members, holdout, other = images[:N], images[N:2 * N], images[2 * N:]
    g = torch.Generator().manual_seed(5)
    copies = (members[:100] + 0.02 * torch.randn(100, 1, 8, 8, generator=g)).clamp(-1, 1)
    copied = distance_to_closest_record(copies, members, holdout)
    assert copied.share_closer_to_train > 0.9 and dcr_result(copied).auc > 0.9
    independent = distance_to_closest_record(other[:100], members, holdout)
    assert 0.4 <= independent.share_closer_to_train <= 0.6 and _near_half(dcr_result(independent).auc)
    assert copied.summary()["d_train_median"] < copied.summary()["d_holdout_median"]
    assert dcr_grid(copies, members, holdout, copied, tmp_path / "dcr.png").stat().st_size > 100
    with pytest.raises(ValueError, match="train and holdout must hold at least one record, got 150 and 0"):
        distance_to_closest_record(copies, members, holdout[:0])
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        dcr_grid(copies, members, holdout, copied, tmp_path / "x.png", n=0)


def test_real_vs_synthetic_detector_is_a_realism_test(images):
    real, other = images[:N], images[N:2 * N]
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1  # a transposed-conv artefact
    artefact = 0.7 * other + 0.3 * checker  # detectably unrealistic "synthetic" images
    detected = real_vs_synthetic_detector(real, artefact, seed=0)
    assert detected.kind == "realism" and detected.auc > 0.9 and detected.details["accuracy"] > 0.8
    realistic = real_vs_synthetic_detector(real, images[2 * N:], seed=0)  # "synthetic" = other real images
    assert _near_half(realistic.auc)
    with pytest.raises(ValueError, match="at least 4 images each, got 3 and 150"):
        real_vs_synthetic_detector(real[:3], artefact)
    with pytest.raises(ValueError, match="real and synthetic features differ in shape"):
        real_vs_synthetic_detector(real, torch.zeros(8, 1, 4, 4))


def test_gan_attack_argument_errors(images):
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\), got \(8, 64\)"):
        logan_attack(overfit_discriminator(images[:8], 0, steps=1), images[:8].flatten(1), images[8:16])
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        gan_leaks_blackbox(generator_sampler(MixtureGenerator(images[:8])), images[:8], images[8:16], num_samples=0)


# --------------------------------------------------------------------------------------------
# Gradient inversion
# --------------------------------------------------------------------------------------------


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def _smooth_image() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    return (torch.sin(2 * xx) * torch.cos(3 * yy))[None, None]


def test_gradient_inversion_recovers_one_image_from_a_one_step_update_and_fails_under_noise(tmp_path):
    model, x, y = _tiny_classifier(), _smooth_image(), torch.tensor([3])
    kw = {"lr": 0.1, "iterations": 300, "tv_weight": 1e-3}
    clean = attack_batch(model, cross_entropy_losses, x, y, **kw)
    assert clean.label_accuracy == 1.0  # iDLG label from the bias update
    assert clean.psnr > 30.0 and clean.ssim > 0.95  # measured: 37.3 dB, SSIM 0.997
    noisy = attack_batch(model, cross_entropy_losses, x, y, clip=1.0, noise_multiplier=10.0, **kw)
    assert noisy.psnr < 15.0 and noisy.defence == "clip 1 + noise 10"  # measured: 5.6 dB
    assert inversion_grid([clean, noisy], tmp_path / "gi.png").stat().st_size > 1000


def test_gradient_inversion_of_a_segmentation_like_model_with_known_masks():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Conv2d(4, 3, 1))
    loss = lambda m, x, y: nn.functional.cross_entropy(m(x), y, reduction="none").flatten(1).mean(1)  # noqa: E731
    x = _smooth_image()
    y = (x[:, 0] > 0).long() + (x[:, 0] > 0.5).long()
    trial = attack_batch(seg, loss, x, y, lr=0.1, iterations=300, tv_weight=1e-3, infer=False)
    assert trial.label_accuracy is None  # no classifier head: masks are given to the attacker
    assert trial.psnr > 15.0  # a fully convolutional model leaks less from one update than a linear head


def test_client_update_clipping_and_argument_errors():
    model, x, y = _tiny_classifier(), _smooth_image(), torch.tensor([3])
    update = client_update(model, cross_entropy_losses, x, y, lr=0.1, clip=1e-3)
    assert float(torch.sqrt(sum(u.pow(2).sum() for u in update.values()))) == pytest.approx(1e-3, rel=1e-4)
    assert infer_labels(nn.Conv2d(1, 1, 1), update, 1) is None
    with pytest.raises(ValueError, match="lr must be > 0 and local_steps >= 1, got 0.1 and 0"):
        client_update(model, cross_entropy_losses, x, y, lr=0.1, local_steps=0)
    with pytest.raises(ValueError, match="clip and noise_multiplier must be >= 0"):
        client_update(model, cross_entropy_losses, x, y, lr=0.1, clip=-1)
    with pytest.raises(ValueError, match="noise_multiplier > 0 needs clip > 0"):
        client_update(model, cross_entropy_losses, x, y, lr=0.1, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="num_images must be >= 1, got 0"):
        infer_labels(model, update, 0)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        invert_update(model, cross_entropy_losses, update, y, (1, 1, 8, 8), lr=0.1, iterations=0)
    with pytest.raises(ValueError, match=r"shape must be \(B, C, H, W\) with B = len\(labels\) = 1"):
        invert_update(model, cross_entropy_losses, update, y, (2, 1, 8, 8), lr=0.1)
    with pytest.raises(ValueError, match="shares no parameter name"):
        invert_update(model, cross_entropy_losses, {"nope": torch.zeros(1)}, y, (1, 1, 8, 8), lr=0.1)
    with pytest.raises(ValueError, match="trials must hold at least one InversionTrial"):
        inversion_grid([], "x.png")
