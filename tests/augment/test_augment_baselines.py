"""Baseline augmentations (RandConv, ProRandConv, amplitude mixing, random frequency filtering) and the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedsilo.augment import (
    AUGMENTATIONS,
    AmplitudeMix,
    NoAugmentation,
    ProRandConv,
    RandConv,
    RandomFrequencyFilter,
    build_augmentation,
)
from fedsilo.augment.fourier import butterworth_highpass, low_frequency_mask
from fedsilo.augment.prorandconv import deform_conv2d, deform_grid, gaussian_window


def _batch(seed: int = 0, b: int = 3, c: int = 1, h: int = 16, w: int = 16, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _first(y):  # IPA returns two views
    return y[0] if isinstance(y, tuple) else y


# ----------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", list(AUGMENTATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_registered_augmentation_keeps_shape_dtype_and_is_seeded(name: str, dtype: torch.dtype) -> None:
    x = _batch(1, b=4, c=2, h=16, w=12, dtype=dtype)
    a = _first(build_augmentation(name, generator=3)(x))
    b = _first(build_augmentation(name, generator=3)(x))
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    if name != "none":
        assert not torch.allclose(a, x)
        c = _first(build_augmentation(name, generator=4)(x))
        assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_registered_augmentation_is_identity_at_prob_zero(name: str) -> None:
    x = _batch(2)
    y = build_augmentation(name, prob=0.0, generator=0)(x)
    for v in y if isinstance(y, tuple) else (y,):
        assert v is x


def test_registry_is_case_insensitive_and_none_is_identity() -> None:
    assert isinstance(build_augmentation(" GIN "), AUGMENTATIONS["gin"])
    x = _batch()
    assert NoAugmentation()(x) is x


def test_registry_rejects_unknown_names_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"must be one of none, gin, gin\+ipa, randconv, prorandconv, fmaug, "
                                         r"raffesdg, got 'randcov'; did you mean 'randconv'\?"):
        build_augmentation("randcov")
    with pytest.raises(ValueError, match="got 'xyz'$"):
        build_augmentation("xyz")


# ----------------------------------------------------------------------------------- RandConv
def test_randconv_is_linear_in_the_input_for_a_fixed_draw() -> None:
    x1, x2 = _batch(1), _batch(2)
    t = lambda x: RandConv(generator=8)(x)  # noqa: E731  (same seed: same layer and alpha)
    torch.testing.assert_close(t(x1 + 2.0 * x2), t(x1) + 2.0 * t(x2), rtol=1e-5, atol=1e-5)


def test_randconv_unit_kernel_without_mixing_scales_the_image() -> None:
    x = _batch(3, b=2)
    y = RandConv(kernel_sizes=(1,), mix=False, generator=5)(x)
    ratio = y / x
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0, 0, 0].item()))


@pytest.mark.parametrize(("init", "std"), [("normal", 1.0), ("kaiming", math.sqrt(2.0))])
def test_randconv_weight_scale(init: str, std: float) -> None:
    # k = 1, C = 1: y = w * x with w ~ N(0, (gain / sqrt(k^2 C))^2) = N(0, gain^2)
    aug = RandConv(kernel_sizes=(1,), init=init, mix=False, generator=0)
    one = torch.ones(1, 1, 1, 1)
    w = torch.stack([aug(one).flatten()[0] for _ in range(4000)])
    assert w.std().item() == pytest.approx(std, rel=0.05)
    assert w.mean().item() == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": "xavier"}, r"init must be one of \('normal', 'kaiming'\), got 'xavier'"),
        ({"kernel_sizes": (1, 4)}, "kernel_sizes must be a non-empty sequence of odd positive ints"),
        ({"prob": 2}, r"prob must be in \[0, 1\]"),
    ],
)
def test_randconv_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RandConv(**kwargs)


# ----------------------------------------------------------------------------------- ProRandConv
def test_gaussian_window_values() -> None:
    g = gaussian_window(3, 1.0)
    assert g[1, 1] == 1.0
    assert g[0, 1].item() == pytest.approx(math.exp(-0.5))
    assert g[0, 0].item() == pytest.approx(math.exp(-1.0))
    with pytest.raises(ValueError, match="sigma must be > 0, got 0"):
        gaussian_window(3, 0)


def test_deform_conv_with_zero_offsets_is_a_plain_convolution() -> None:
    x = _batch(4, b=2, c=2, h=7, w=9)
    w = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    got = deform_conv2d(x, w, torch.zeros(18, 7, 9))
    torch.testing.assert_close(got, F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)


def test_deform_conv_with_unit_column_offsets_samples_the_right_neighbour() -> None:
    x = _batch(5, b=1, c=1, h=8, w=8)
    w = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(2))
    offsets = torch.zeros(18, 8, 8)
    offsets[1::2] = 1.0  # every tap moves one column right
    got = deform_conv2d(x, w, offsets)
    shifted = torch.zeros_like(x)
    shifted[..., :-1] = x[..., 1:]
    # away from the left border (where the moved taps read x instead of padding)
    torch.testing.assert_close(got[..., 1:], F.conv2d(shifted, w, padding=1)[..., 1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, deform_conv2d(x, w, torch.zeros(18, 8, 8)))


def test_deform_conv_rejects_bad_shapes() -> None:
    x = torch.zeros(1, 1, 5, 5)
    with pytest.raises(ValueError, match="weight must be"):
        deform_conv2d(x, torch.zeros(1, 1, 2, 2), torch.zeros(8, 5, 5))
    with pytest.raises(ValueError, match="offsets must be"):
        deform_conv2d(x, torch.zeros(1, 1, 3, 3), torch.zeros(9, 5, 5))
    with pytest.raises(ValueError, match="height and width must be >= 2"):
        deform_conv2d(torch.zeros(1, 1, 1, 5), torch.zeros(1, 1, 3, 3), torch.zeros(18, 1, 5))
    with pytest.raises(ValueError, match="kernel_size must be an odd positive int, got 2"):
        deform_grid(torch.zeros(8, 5, 5), 2, 1, 5, 5)


def test_prorandconv_output_keeps_each_samples_intensity_range() -> None:
    x = _batch(6, b=3) * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1, 1)
    y = ProRandConv(generator=2)(x)
    dims = (1, 2, 3)
    torch.testing.assert_close(y.amin(dim=dims), x.amin(dim=dims))
    torch.testing.assert_close(y.amax(dim=dims), x.amax(dim=dims))


def test_prorandconv_raw_output_is_a_tanh_contrast() -> None:
    y = ProRandConv(rescale=False, generator=2)(_batch(7) * 10)
    assert y.abs().max() < 1.0


def test_prorandconv_one_repeat_without_deformation_matches_the_formula() -> None:
    x = _batch(8, b=2, c=1, h=10, w=10)
    aug = ProRandConv(max_repeats=1, max_offset_std=0.0, rescale=False, generator=11)
    y = aug(x)
    ref = torch.Generator().manual_seed(11)
    torch.rand(2, generator=ref)  # prob selection
    torch.randint(1, (1,), generator=ref)  # repeats = 1
    sigma = 1e-2 + (1.0 - 1e-2) * torch.rand(1, generator=ref).item()
    w = torch.randn(1, 1, 3, 3, generator=ref) * gaussian_window(3, sigma) / 3.0
    torch.rand(1, generator=ref)  # offset std (0 here)
    torch.randn(18, 10, 10, generator=ref)
    gamma, beta = torch.randn(1, 1, 1, 1, generator=ref) * 0.5, torch.randn(1, 1, 1, 1, generator=ref) * 0.5
    z = F.conv2d(x, w, padding=1)
    z = (z - z.mean(dim=(2, 3), keepdim=True)) / (z.std(dim=(2, 3), keepdim=True, unbiased=False) + 1e-5)
    torch.testing.assert_close(y, torch.tanh(gamma * z + beta), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 2}, "kernel_size must be an odd positive int, got 2"),
        ({"max_repeats": 0}, "max_repeats must be an int >= 1, got 0"),
        ({"sigma_g_range": (0.0, 1.0)}, r"sigma_g_range must be a pair \(lo, hi\) with > 0.0 lo <= hi"),
        ({"sigma_g_range": (1.0, 0.5)}, r"sigma_g_range must be a pair"),
        ({"max_offset_std": -1}, "max_offset_std must be a float >= 0"),
        ({"gamma_std": -0.5}, "gamma_std must be a float >= 0"),
        ({"beta_std": -0.5}, "beta_std must be a float >= 0"),
    ],
)
def test_prorandconv_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProRandConv(**kwargs)


# ----------------------------------------------------------------------------------- amplitude mix
def test_low_frequency_mask_is_a_symmetric_square() -> None:
    m = low_frequency_mask(8, 8, 0.5)  # |k| <= floor(0.5 * 8 / 2) = 2 -> 5 x 5 frequencies
    assert int(m.sum()) == 25
    idx = torch.arange(8)
    assert torch.equal(m, m[(-idx) % 8][:, (-idx) % 8])  # k -> -k
    assert not m[4].any() and not m[:, 4].any()  # never the Nyquist frequency
    with pytest.raises(ValueError, match=r"band must be in \(0, 1\), got 1.0"):
        low_frequency_mask(8, 8, 1.0)


def test_amplitude_mix_keeps_phase_and_changes_only_the_low_band_amplitude() -> None:
    x = _batch(9, b=2, c=1, h=16, w=16, dtype=torch.float64)
    y = AmplitudeMix(band=0.25, lam_range=(1.0, 1.0), generator=0)(x)  # full swap of the band
    fx, fy = torch.fft.fft2(x), torch.fft.fft2(y)
    band = low_frequency_mask(16, 16, 0.25)
    # phase unchanged everywhere (the amplitudes stay > 0)
    dphase = torch.angle(fy * fx.conj())
    assert dphase.abs().max() < 1e-8
    # amplitude unchanged outside the band; inside it is the other image's (B = 2: partner = other)
    torch.testing.assert_close(fy.abs()[..., ~band], fx.abs()[..., ~band])
    torch.testing.assert_close(fy.abs()[0][..., band], fx.abs()[1][..., band])
    torch.testing.assert_close(fy.abs()[1][..., band], fx.abs()[0][..., band])
    assert not torch.allclose(fy.abs()[..., band], fx.abs()[..., band])


def test_amplitude_mix_interpolates_with_lambda() -> None:
    x = _batch(10, b=2, dtype=torch.float64)
    y = AmplitudeMix(band=0.25, lam_range=(0.25, 0.25), generator=0)(x)
    band = low_frequency_mask(16, 16, 0.25)
    ax, ay = torch.fft.fft2(x).abs(), torch.fft.fft2(y).abs()
    torch.testing.assert_close(ay[0][..., band], 0.75 * ax[0][..., band] + 0.25 * ax[1][..., band])


def test_amplitude_mix_leaves_a_lone_sample_unchanged() -> None:
    x = _batch(11, b=1)
    assert torch.equal(AmplitudeMix(generator=0)(x), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"band": 0.0}, r"band must be in \(0, 1\), got 0.0"),
        ({"band": 1.5}, r"band must be in \(0, 1\)"),
        ({"lam_range": (0.5, 0.2)}, r"lam_range must be a pair \(lo, hi\) with 0 <= lo <= hi <= 1"),
        ({"lam_range": (0.0, 1.2)}, "lam_range must be a pair"),
    ],
)
def test_amplitude_mix_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AmplitudeMix(**kwargs)


# ----------------------------------------------------------------------------------- RaffeSDG filter
def test_butterworth_highpass_response() -> None:
    h = butterworth_highpass(32, 32, cutoff=4.0, order=2)
    assert h[0, 0] == 0.0  # DC removed
    assert h[0, 4].item() == pytest.approx(0.5)  # half power at the cut-off
    assert h[0, 16].item() == pytest.approx(1.0 / (1.0 + (4.0 / 16.0) ** 4))
    assert bool((h[0, 1:17].diff() > 0).all())  # increasing with frequency
    torch.testing.assert_close(h, h.T)
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        butterworth_highpass(8, 8, 0.0, 1)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        butterworth_highpass(8, 8, 1.0, 0)


def test_frequency_filter_keeps_the_input_percentile_range() -> None:
    x = _batch(12, b=2, h=32, w=32) * 3.0 + 1.0
    y = RandomFrequencyFilter(blend=False, percentile=3.0, generator=1)(x)
    q = torch.tensor([0.03, 0.97])
    for i in range(2):
        torch.testing.assert_close(torch.quantile(y[i].flatten(), q, interpolation="nearest"),
                                   torch.quantile(x[i].flatten(), q, interpolation="nearest"), rtol=1e-4, atol=1e-4)


def test_frequency_filter_of_a_constant_image_is_the_image() -> None:
    x = torch.full((2, 1, 16, 16), 0.7)
    torch.testing.assert_close(RandomFrequencyFilter(generator=0)(x), x)


def test_frequency_filter_view_is_a_high_pass_magnitude() -> None:
    # a bright square: the high-pass magnitude is large on its edges, small inside and far away
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1.0
    v = RandomFrequencyFilter(blend=False, cutoff_range=(0.1, 0.1), orders=(2,), generator=0).filtered_view(x)[0, 0]
    edge = v[16, 7:9].max()
    assert edge > 3 * v[16, 16] and edge > 3 * v[0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cutoff_range": (0.0, 0.1)}, r"cutoff_range must be a pair \(lo, hi\) with 0 < lo <= hi < 1"),
        ({"cutoff_range": (0.2, 0.1)}, "cutoff_range must be a pair"),
        ({"orders": ()}, "orders must be a non-empty sequence of ints >= 1"),
        ({"orders": (0,)}, "orders must be a non-empty sequence of ints >= 1"),
        ({"percentile": 50}, r"percentile must be in \[0, 50\), got 50"),
        ({"n_control": 0}, "n_control must be a positive int or a pair"),
    ],
)
def test_frequency_filter_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RandomFrequencyFilter(**kwargs)
