"""Synthesis metrics (fedsilo.tasks.synthesis): realism, FD, KID, PRDC, MS-SSIM diversity, neighbours, grids."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from fedsilo.models import DCGANDiscriminator, discriminator_loss
from fedsilo.tasks.synthesis import (
    FeatureAdapter,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    ms_ssim_diversity,
    ms_ssim_settings,
    nearest_neighbours,
    precision_recall_density_coverage,
    realism_score,
    sample_grid,
    save_grid_png,
)
from fedsilo.tasks.synthesis.stats import bootstrap_mean_ci, bootstrap_stats, check_images, normal_ci


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny(n: int, seed: int = 0, lo: float = -0.8, hi: float = 0.8) -> torch.Tensor:
    """n tiny images (n, 1, 4, 4) uniform in [lo, hi]."""
    return torch.rand(n, 1, 4, 4, generator=_gen(seed)) * (hi - lo) + lo


class _ConstantD(nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.logit)


# ----------------------------------------------------------------------------- realism
def _stripes(n: int, gen: torch.Generator) -> torch.Tensor:
    """Toy 'real' images (n, 1, 28, 28): horizontal sinusoids with random phase, plus a little noise."""
    rows = torch.arange(28, dtype=torch.float32)[None, :, None]
    phase = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    x = 0.8 * torch.sin(rows * 0.5 + phase) + 0.05 * torch.randn(n, 28, 28, generator=gen)
    return x.clamp(-1, 1)[:, None]


def test_realism_of_real_above_noise_under_trained_discriminator() -> None:
    gen = _gen(0)
    d = DCGANDiscriminator(28, 1, base_width=4, norm="none", seed=0)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(200):
        real, noise = _stripes(16, gen), torch.rand(16, 1, 28, 28, generator=gen) * 2 - 1
        loss = discriminator_loss(d(real), d(noise))
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_real, held_noise = _stripes(64, _gen(99)), torch.rand(64, 1, 28, 28, generator=_gen(98)) * 2 - 1
    r_real, r_noise = realism_score(d, held_real), realism_score(d, held_noise)
    assert r_real.value > 0.9 and r_noise.value < 0.1
    assert r_real.n == 64 and r_real.ci_low <= r_real.value <= r_real.ci_high
    assert d.training  # mode restored


def test_realism_is_mean_sigmoid_hand_case() -> None:
    r = realism_score(_ConstantD(math.log(3.0)), torch.zeros(10, 1, 8, 8), batch_size=3)
    assert r.value == pytest.approx(0.75) and r.n == 10
    assert r.ci_low == pytest.approx(0.75) and r.ci_high == pytest.approx(0.75)


def test_realism_passes_labels_to_conditional_discriminator() -> None:
    d = DCGANDiscriminator(32, 3, base_width=4, num_classes=5, norm="group")
    x = torch.rand(6, 3, 32, 32, generator=_gen(1)) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        expected = torch.sigmoid(d.eval()(x, y).double()).mean()
    assert realism_score(d, x, y, batch_size=4).value == pytest.approx(float(expected))


def test_realism_errors() -> None:
    d = _ConstantD(0.0)
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\], got values in \[0, 255\]"):
        realism_score(d, torch.tensor([0.0, 255.0]).view(1, 1, 1, 2))
    with pytest.raises(ValueError, match=r"images must be a floating tensor of shape \(B, C, H, W\)"):
        realism_score(d, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        realism_score(d, torch.zeros(2, 1, 4, 4), batch_size=0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        realism_score(d, torch.zeros(2, 1, 4, 4), labels=torch.zeros(3, dtype=torch.long))

    class _Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2)

    with pytest.raises(ValueError, match="one logit per image"):
        realism_score(_Bad(), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="n_bootstrap must be >= 0"):
        realism_score(d, torch.zeros(2, 1, 4, 4), n_bootstrap=-1)


# ----------------------------------------------------------------------------- features
def test_feature_adapter_probes_size_and_restores_mode() -> None:
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Dropout(0.5), nn.Flatten())  # 3 x 2 x 2 = 12 features
    adapter = FeatureAdapter(net, probe_shape=(1, 4, 4))
    assert adapter.num_features == 12 and net.training
    x = _tiny(5)
    f1, f2 = adapter(x), adapter(x)
    assert f1.shape == (5, 12) and torch.equal(f1, f2)  # eval mode: dropout off
    assert net.training and not f1.requires_grad
    net[1].eval()  # mixed modes are restored module by module
    adapter(x)
    assert net.training and net[0].training and not net[1].training
    torch.testing.assert_close(extract_features(net, x, batch_size=2), f1)


def test_feature_adapter_works_inside_torchmetrics_fid() -> None:
    adapter = FeatureAdapter(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), probe_shape=(1, 4, 4))
    real, fake = _tiny(50, 1), _tiny(60, 2) * 0.5
    metric = FrechetInceptionDistance(feature=adapter)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert frechet_distance(real, fake, adapter).value == pytest.approx(float(metric.compute()), rel=1e-4)


def test_feature_adapter_errors() -> None:
    with pytest.raises(ValueError, match="feature_fn must be an nn.Module or callable"):
        FeatureAdapter(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"probe_shape must be \(C, H, W\)"):
        FeatureAdapter(nn.Flatten())
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        FeatureAdapter(nn.Flatten(), num_features=0)
    with pytest.raises(ValueError, match="feature_fn returned 16 features, expected num_features=5"):
        FeatureAdapter(nn.Flatten(), num_features=5)(_tiny(2))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        extract_features(nn.Flatten(), _tiny(2), batch_size=0)


# ----------------------------------------------------------------------------- Fréchet distance
def test_fd_of_a_set_with_itself_is_zero() -> None:
    x = _tiny(200)
    assert frechet_distance(x, x, nn.Flatten()).value == pytest.approx(0.0, abs=1e-9)


def test_fd_of_shifted_set_is_squared_mean_shift() -> None:
    x = _tiny(200)
    delta = torch.linspace(-0.15, 0.15, 16).view(1, 1, 4, 4)
    fd = frechet_distance(x, x + delta, nn.Flatten())
    assert fd.value == pytest.approx(float((delta**2).sum()), rel=1e-6)
    assert fd.n == fd.n_ref == 200 and fd.details["num_features"] == 16


def test_fd_of_different_sets_is_positive_and_features_path_matches() -> None:
    real, fake = _tiny(100, 1), _tiny(100, 2, -0.2, 0.2)
    fd = frechet_distance(real, fake, nn.Flatten())
    assert fd.value > 1.0
    assert frechet_distance(real.flatten(1), fake.flatten(1)).value == pytest.approx(fd.value)


def test_fd_bootstrap_interval_is_seeded_and_centred() -> None:
    real, fake = _tiny(60, 1), _tiny(60, 2) + 0.1
    a = frechet_distance(real, fake, nn.Flatten(), n_bootstrap=20, seed=5)
    b = frechet_distance(real, fake, nn.Flatten(), n_bootstrap=20, seed=5)
    c = frechet_distance(real, fake, nn.Flatten(), n_bootstrap=20, seed=6)
    assert a == b and a.ci_high != c.ci_high
    sd = a.details["bootstrap_sd"]
    assert sd > 0 and a.ci_high == pytest.approx(a.value + 1.959964 * sd, rel=1e-5)
    assert a.ci_low == pytest.approx(max(0.0, a.value - 1.959964 * sd), rel=1e-5)
    assert a.details["bootstrap_mean"] > a.value  # the known upward bias of resampled FDs


def test_fd_errors() -> None:
    x = _tiny(5)
    with pytest.raises(ValueError, match="feature_fn is required to compare images"):
        frechet_distance(x, x)
    with pytest.raises(ValueError, match=r"real is already a feature matrix \(N, d\); pass feature_fn=None"):
        frechet_distance(x.flatten(1), x.flatten(1), nn.Flatten())
    with pytest.raises(ValueError, match="real and fake features must have the same size, got 16 and 8"):
        frechet_distance(x.flatten(1), x.flatten(1)[:, :8])
    with pytest.raises(ValueError, match="at least 2 samples each, got 5 and 1"):
        frechet_distance(x.flatten(1), x.flatten(1)[:1])
    with pytest.raises(ValueError, match="n_bootstrap must be >= 0"):
        frechet_distance(x, x, nn.Flatten(), n_bootstrap=-1)
    with pytest.raises(ValueError, match=r"fake must be images \(N, C, H, W\) or features \(N, d\)"):
        frechet_distance(x, x[0], nn.Flatten())
    with pytest.raises(ValueError, match=r"fake must be in \[-1, 1\]"):
        frechet_distance(x, x * 3, nn.Flatten())
    with pytest.raises(ValueError, match="real features must be floating point"):
        frechet_distance(torch.zeros(3, 2, dtype=torch.long), x.flatten(1)[:, :2])
    with pytest.raises(ValueError, match="real must be a tensor"):
        frechet_distance([1, 2], x.flatten(1))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- KID
def test_kid_identical_sets_hand_case_and_near_zero() -> None:
    # Features 0 and 1, kernel (x.y + 1): K = [[1, 1], [1, 2]], S = 5, D = 3, m = 2:
    # unbiased MMD^2 of a set with itself = -2 (m D - S) / (m^2 (m - 1)) = -2 * 1 / 4 = -0.5.
    f = torch.tensor([[0.0], [1.0]])
    assert kernel_inception_distance(f, f, degree=1, gamma=1.0).value == pytest.approx(-0.5)
    x = _tiny(300)
    same = kernel_inception_distance(x, x, nn.Flatten())
    k = (x.flatten(1).double() @ x.flatten(1).double().T / 16 + 1) ** 3  # default kernel, gamma = 1/d
    m, s, d = 300, float(k.sum()), float(k.trace())
    assert same.value == pytest.approx(-2 * (m * d - s) / (m**2 * (m - 1)), rel=1e-9)
    shifted = kernel_inception_distance(x, (x + 0.2), nn.Flatten())
    assert abs(same.value) < 0.05 * shifted.value
    assert same.details["subsets"] == 1  # all subsets would be the same full sets


def test_kid_is_seeded_and_leaves_global_rng_alone() -> None:
    real, fake = _tiny(80, 1), _tiny(90, 2) + 0.05
    state = torch.get_rng_state()
    a = kernel_inception_distance(real, fake, nn.Flatten(), subset_size=30, subsets=10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = kernel_inception_distance(real, fake, nn.Flatten(), subset_size=30, subsets=10, seed=1)
    c = kernel_inception_distance(real, fake, nn.Flatten(), subset_size=30, subsets=10, seed=2)
    assert a == b and a.value != c.value and a.details["std"] > 0


def test_kid_errors() -> None:
    x = _tiny(10).flatten(1)
    with pytest.raises(ValueError, match=r"subset_size must be in \[2, 10\]"):
        kernel_inception_distance(x, x, subset_size=11)
    for kwargs in ({"subsets": 0}, {"degree": 0}, {"coef": 0.0}, {"gamma": -1.0}):
        with pytest.raises(ValueError, match="subsets and degree must be >= 1, coef > 0 and gamma None or > 0"):
            kernel_inception_distance(x, x, **kwargs)


# ----------------------------------------------------------------------------- precision/recall/density/coverage
def test_knn_radii_hand_case() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]])
    torch.testing.assert_close(knn_radii(x, 1), torch.tensor([1.0, 1.0, 2.0]))
    torch.testing.assert_close(knn_radii(x, 2, chunk_size=1), torch.tensor([3.0, 2.0, 3.0]))


def test_prdc_hand_case() -> None:
    # Real 0, 1, 2, 3 (k=1 radii 1); fake 0.5 (inside the balls of 0 and 1) and 10 (an outlier).
    real, fake = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([[0.5], [10.0]])
    m = precision_recall_density_coverage(real, fake, k=1, n_bootstrap=0)
    assert m["precision"].value == 0.5  # 0.5 in, 10 out
    assert m["recall"].value == 1.0  # fake radii are 9.5: every real point is inside (outlier inflation)
    assert m["density"].value == 1.0  # (2 + 0) / (k * 2)
    assert m["coverage"].value == 0.5  # real 0 and 1 have a fake within radius 1; 2 and 3 do not
    assert m["precision"].n == 2 and m["precision"].n_ref == 4 and m["precision"].ci_low is None


def test_prdc_identical_and_far_apart_sets() -> None:
    x = _tiny(150).flatten(1)
    same = precision_recall_density_coverage(x, x, chunk_size=64)
    assert same["precision"].value == same["recall"].value == same["coverage"].value == 1.0
    assert same["precision"].ci_low == 1.0
    far = precision_recall_density_coverage(x, x + 10.0)
    assert all(far[k].value == 0.0 for k in ("precision", "recall", "density", "coverage"))


def test_prdc_chunking_does_not_change_results() -> None:
    real, fake = _tiny(70, 1), _tiny(50, 2, -0.5, 0.9)
    a = precision_recall_density_coverage(real, fake, nn.Flatten(), k=3, chunk_size=7, n_bootstrap=50)
    b = precision_recall_density_coverage(real, fake, nn.Flatten(), k=3, chunk_size=1000, n_bootstrap=50)
    assert a == b
    assert 0 < a["precision"].value < 1 and a["density"].ci_low <= a["density"].value <= a["density"].ci_high


def test_prdc_errors() -> None:
    x = _tiny(6).flatten(1)
    with pytest.raises(ValueError, match="more than k=5 samples each, got 6 and 5"):
        precision_recall_density_coverage(x, x[:5])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        precision_recall_density_coverage(x, x, k=2, chunk_size=0)
    with pytest.raises(ValueError, match="same size, got 16 and 4"):
        precision_recall_density_coverage(x, x[:, :4], k=2)
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
        knn_radii(x, 6)


# ----------------------------------------------------------------------------- MS-SSIM diversity
def test_ms_ssim_diversity_identical_zero_and_different_positive() -> None:
    x = torch.rand(6, 3, 32, 32, generator=_gen(0)) * 2 - 1
    same = ms_ssim_diversity(x[:1].repeat(6, 1, 1, 1), n_pairs=20)
    assert same.value == 0.0 and same.n == 20
    diverse = ms_ssim_diversity(x, n_pairs=20)
    near = ms_ssim_diversity((x[:1] + 0.05 * torch.randn(6, 3, 32, 32, generator=_gen(1))).clamp(-1, 1), n_pairs=20)
    assert 0.0 < near.value < diverse.value <= 1.0
    assert diverse.details == {"scales": 3, "sigma": 0.8, "kernel_size": 7, "betas": "0.0711,0.4530,0.4760"}
    assert ms_ssim_diversity(x, n_pairs=20, seed=3) == ms_ssim_diversity(x, n_pairs=20, seed=3)


def test_ms_ssim_settings_fit_small_images() -> None:
    assert ms_ssim_settings(28, 28)["scales"] == 3 and ms_ssim_settings(28, 28)["sigma"] == 0.8
    assert (ms_ssim_settings(64, 64)["scales"], ms_ssim_settings(64, 64)["sigma"]) == (3, 1.5)
    assert (ms_ssim_settings(128, 128)["scales"], ms_ssim_settings(128, 128)["sigma"]) == (4, 1.5)
    standard = ms_ssim_settings(256, 256)
    assert standard["scales"] == 5 and sum(standard["betas"]) == pytest.approx(1.0)
    assert ms_ssim_settings(24, 24)["scales"] == 1  # SSIM fallback
    for size in (28, 64, 128):
        x = torch.rand(3, 1, size, size, generator=_gen(size)) * 2 - 1
        assert 0.0 < ms_ssim_diversity(x, n_pairs=3).value <= 1.0


def test_ssim_fallback_below_28_px() -> None:
    x = torch.rand(4, 1, 16, 16, generator=_gen(0)) * 2 - 1
    result = ms_ssim_diversity(x, n_pairs=10)
    assert result.details["scales"] == 1 and 0.0 < result.value <= 1.0
    assert ms_ssim_diversity(x[:1].repeat(4, 1, 1, 1), n_pairs=10).value == 0.0


def test_ms_ssim_diversity_errors() -> None:
    x = torch.zeros(4, 1, 32, 32)
    with pytest.raises(ValueError, match="images must hold at least 2 images, got 1"):
        ms_ssim_diversity(x[:1])
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        ms_ssim_diversity(x, n_pairs=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ms_ssim_diversity(x, batch_size=0)
    with pytest.raises(ValueError, match="images must be larger than 5x5 px"):
        ms_ssim_diversity(torch.zeros(4, 1, 5, 5))


# ----------------------------------------------------------------------------- nearest neighbours
def test_nearest_neighbours_pixel_space_hand_case() -> None:
    refs = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    queries = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.9)])
    idx, dist = nearest_neighbours(queries, refs)
    assert idx.tolist() == [[1], [2]]
    torch.testing.assert_close(dist, torch.tensor([[0.2], [0.2]]))  # sqrt(4 * 0.1^2)
    idx2, dist2 = nearest_neighbours(queries, refs, k=2, chunk_size=1)
    assert idx2.tolist() == [[1, 2], [2, 1]]
    torch.testing.assert_close(dist2[:, 1], torch.tensor([1.8, 1.8]))


def test_nearest_neighbours_feature_space() -> None:
    refs, queries = _tiny(20, 1), _tiny(5, 2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    idx, dist = nearest_neighbours(queries, refs, net, k=3)
    f_q, f_r = extract_features(net, queries), extract_features(net, refs)
    expected = torch.cdist(f_q, f_r).topk(3, dim=1, largest=False)
    assert torch.equal(idx, expected.indices)
    torch.testing.assert_close(dist, expected.values)


def test_nearest_neighbours_errors() -> None:
    x = _tiny(3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
        nearest_neighbours(x, x, k=4)
    with pytest.raises(ValueError, match="same size, got 16 and 4"):
        nearest_neighbours(x, x.flatten(1)[:, :4])
    with pytest.raises(ValueError, match="queries must hold at least one sample"):
        nearest_neighbours(x.flatten(1)[:0], x.flatten(1))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        nearest_neighbours(x, x, chunk_size=0)


# ----------------------------------------------------------------------------- grids
def test_sample_grid_layout_and_values() -> None:
    values = torch.tensor([-1.0, 0.0, 1.0, 0.5, -0.5])
    images = values.view(5, 1, 1, 1).expand(5, 1, 4, 4)
    grid = sample_grid(images, nrow=3, padding=1, pad_value=7)
    assert grid.shape == (11, 16, 1) and grid.dtype == np.uint8
    tile = lambda r, c: grid[1 + 5 * r : 5 + 5 * r, 1 + 5 * c : 5 + 5 * c, 0]  # noqa: E731
    assert [int(tile(0, c)[0, 0]) for c in range(3)] == [0, 128, 255]  # 127.5 rounds half to even
    assert int(tile(1, 0)[0, 0]) == 191 and int(tile(1, 1)[0, 0]) == 64
    assert (tile(1, 2) == 7).all() and (grid[0] == 7).all()  # empty cell and border are padding


def test_save_grid_png_round_trip(tmp_path) -> None:  # noqa: ANN001
    colour = torch.rand(4, 3, 8, 8, generator=_gen(0)) * 2 - 1
    path = save_grid_png(colour, tmp_path / "grid.png", nrow=2)
    back = (matplotlib.image.imread(path)[:, :, :3] * 255).round().astype(np.uint8)
    assert np.array_equal(back, sample_grid(colour, nrow=2))
    grey = save_grid_png(colour[:, :1], tmp_path / "grey.png", nrow=4, padding=0)
    read = matplotlib.image.imread(grey)
    assert read.shape[:2] == (8, 32)
    assert np.array_equal((read[:, :, 0] * 255).round().astype(np.uint8), sample_grid(colour[:, :1], 4, 0)[:, :, 0])


def test_grid_errors(tmp_path) -> None:  # noqa: ANN001
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="nrow must be >= 1"):
        sample_grid(x, nrow=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        sample_grid(x, padding=-1)
    with pytest.raises(ValueError, match=r"pad_value must be in \[0, 255\], got 300"):
        sample_grid(x, pad_value=300)
    with pytest.raises(ValueError, match="images must have 1 or 3 channels, got 2"):
        sample_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="path must end in .png"):
        save_grid_png(x, tmp_path / "grid.jpg")


# ----------------------------------------------------------------------------- stats helpers
def test_bootstrap_helpers() -> None:
    lo, hi = bootstrap_mean_ci(torch.full((7,), 0.3))
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    v = torch.arange(20, dtype=torch.float64)
    assert bootstrap_mean_ci(v, 200, seed=1) == bootstrap_mean_ci(v, 200, seed=1)
    lo, hi = bootstrap_mean_ci(v, 500, seed=1)
    assert lo < 9.5 < hi
    assert bootstrap_mean_ci(v, 0) == (None, None)
    assert bootstrap_stats(lambda a, b: float(a.sum() + b.sum()), 3, 2, 4, 0).shape == (4,)
    assert normal_ci(1.0, 0.5) == pytest.approx((1.0 - 0.979982, 1.0 + 0.979982))
    with pytest.raises(ValueError, match="n_bootstrap must be >= 0"):
        bootstrap_mean_ci(v, -1)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        bootstrap_mean_ci(v, 10, level=1.5)
    with pytest.raises(ValueError, match=r"values must have shape \(N,\)"):
        bootstrap_mean_ci(v.view(4, 5))
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\], got values in \[nan"):
        check_images(torch.full((1, 1, 2, 2), float("nan")))


def test_metric_result_is_json_serialisable() -> None:
    r = frechet_distance(_tiny(10, 1).flatten(1), _tiny(10, 2).flatten(1), n_bootstrap=3)
    d = json.loads(json.dumps(r.as_dict()))
    assert d["name"] == "fd" and d["n"] == 10 and d["details"]["n_bootstrap"] == 3
