"""GIN and GIN+IPA (Ouyang et al., IEEE TMI 2022): properties on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedsilo.augment import GIN, IPA, consistency_loss, smooth_random_mask


def _frob(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


# ----------------------------------------------------------------------------------- GIN
@pytest.mark.parametrize("channels", [1, 3])
def test_gin_keeps_shape_dtype_and_frobenius_norm(channels: int) -> None:
    x = torch.randn(5, channels, 24, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 1
    y = GIN(generator=11)(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    torch.testing.assert_close(_frob(y), _frob(x), rtol=1e-12, atol=0)
    assert not torch.allclose(y, x)


def test_gin_half_precision_input_comes_back_in_its_dtype() -> None:
    x = torch.rand(2, 1, 16, 16).to(torch.bfloat16)
    y = GIN(generator=0)(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    torch.testing.assert_close(_frob(y.float()), _frob(x.float()), rtol=2e-2, atol=0)


def test_gin_draws_a_different_network_per_sample() -> None:
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = GIN(generator=3)(img.repeat(4, 1, 1, 1))
    for i in range(4):
        for j in range(i + 1, 4):
            assert (y[i] - y[j]).abs().max() > 1e-3, (i, j)


def test_gin_is_reproducible_for_a_seed_and_differs_across_seeds() -> None:
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    a, b, c = GIN(generator=7)(x), GIN(generator=7)(x), GIN(generator=8)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    g = GIN(generator=7)
    first = g(x)
    g.manual_seed(7)
    assert torch.equal(g(x), first)


def test_gin_shares_a_passed_generator() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y1 = GIN(generator=gen)(x)
    y2 = GIN(generator=gen)(x)  # the generator has advanced: a different draw
    assert not torch.allclose(y1, y2)


def test_gin_prob_zero_is_identity_and_prob_selects_samples() -> None:
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    assert GIN(prob=0.0)(x) is x
    y = GIN(prob=0.5, generator=1)(x)
    unchanged = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert 10 < int(unchanged.sum()) < 54  # some kept, some transformed
    torch.testing.assert_close(_frob(y), _frob(x))


def test_gin_with_unit_kernels_is_a_pointwise_intensity_map() -> None:
    # kernel size 1 everywhere: output depends only on the pixel's own value (a random curve)
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 1, 1] = x[0, 0, 4, 2] = 0.7
    x[0, 0, 3, 5] = -0.4
    y = GIN(kernel_sizes=(1,), generator=9)(x)
    assert y[0, 0, 1, 1] == y[0, 0, 4, 2]
    assert torch.unique(y).numel() == 3
    y3 = GIN(kernel_sizes=(3,), generator=9)(x)
    assert torch.unique(y3).numel() > 3  # 3x3 kernels mix neighbours


def test_gin_random_network_matches_the_paper_formula() -> None:
    # 2 layers, 1 intermediate channel, k = 1: g(x) = w2 * leaky(w1 * x + b1, 0.01) + b2
    x = torch.tensor([[[[-2.0, 0.5], [1.0, 3.0]]]])
    gin = GIN(n_layers=2, interm_channels=1, kernel_sizes=(1,), generator=123)
    g = gin.random_network(x)
    ref = torch.Generator().manual_seed(123)
    torch.randint(1, (1,), generator=ref)
    w1, b1 = torch.randn(1, 1, 1, 1, generator=ref), torch.randn(1, generator=ref)
    torch.randint(1, (1,), generator=ref)
    w2, b2 = torch.randn(1, 1, 1, 1, generator=ref), torch.randn(1, generator=ref)
    hidden = w1.item() * x + b1.item()
    hidden = torch.where(hidden > 0, hidden, 0.01 * hidden)
    torch.testing.assert_close(g, w2.item() * hidden + b2.item())


def test_gin_zero_image_stays_zero() -> None:
    y = GIN(generator=0)(torch.zeros(2, 1, 8, 8))
    assert torch.equal(y, torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_layers": 1}, "n_layers must be an int >= 2"),
        ({"interm_channels": 0}, "interm_channels must be an int >= 1"),
        ({"kernel_sizes": (2,)}, "kernel_sizes must be a non-empty sequence of odd positive ints"),
        ({"kernel_sizes": ()}, "kernel_sizes must be a non-empty"),
        ({"negative_slope": -0.1}, "negative_slope must be a float >= 0"),
        ({"prob": 1.5}, r"prob must be in \[0, 1\], got 1.5"),
        ({"prob": -0.1}, r"prob must be in \[0, 1\]"),
        ({"generator": "seed"}, "generator must be a torch.Generator, an int seed or None"),
    ],
)
def test_gin_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GIN(**kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(1, 8, 8), r"shaped \(B, C, H, W\), got shape \(1, 8, 8\)"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.long), "floating-point tensor, got dtype torch.int64"),
        ([[1.0]], "must be a torch.Tensor"),
    ],
)
def test_gin_rejects_bad_inputs(x: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GIN()(x)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- IPA mask
@pytest.mark.parametrize("order", [1, 2, 3])
def test_smooth_mask_is_in_unit_interval_and_smooth(order: int) -> None:
    m = smooth_random_mask(6, 128, 128, n_control=4, order=order, generator=torch.Generator().manual_seed(0))
    assert m.shape == (6, 1, 128, 128)
    assert m.min() == 0.0 and m.max() == 1.0
    for i in range(6):
        assert m[i].min() == 0.0 and m[i].max() == 1.0
    spacing = 128 / 4
    step = max((m[..., 1:, :] - m[..., :-1, :]).abs().max(), (m[..., 1:] - m[..., :-1]).abs().max())
    assert step < 2.0 / spacing  # white noise would jump by ~1
    if order >= 2:  # C1: no kinks
        second = (m[..., 2:] - 2 * m[..., 1:-1] + m[..., :-2]).abs().max()
        assert second < 0.01


def test_smooth_mask_is_reproducible_and_handles_rectangles() -> None:
    a = smooth_random_mask(2, 30, 50, n_control=(3, 5), generator=torch.Generator().manual_seed(4))
    b = smooth_random_mask(2, 30, 50, n_control=(3, 5), generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 1, 30, 50) and torch.equal(a, b)
    assert a.dtype == torch.float32
    c = smooth_random_mask(1, 8, 8, generator=torch.Generator(), dtype=torch.float64)
    assert c.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_control": 0}, "n_control must be a positive int or a pair"),
        ({"n_control": (2, 2, 2)}, "n_control must be a positive int or a pair"),
        ({"order": 0}, "order must be an int >= 1"),
    ],
)
def test_smooth_mask_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        smooth_random_mask(1, 8, 8, generator=torch.Generator(), **kwargs)
    with pytest.raises(ValueError, match=match):
        IPA(**kwargs)


def test_smooth_mask_rejects_empty_size() -> None:
    with pytest.raises(ValueError, match="batch, height and width must be >= 1"):
        smooth_random_mask(1, 0, 8, generator=torch.Generator())


# ----------------------------------------------------------------------------------- IPA views
class _ConstantGin(torch.nn.Module):
    """Stands in for GIN: first call returns 1 everywhere, second 3."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full_like(x, 1.0 if self.calls % 2 else 3.0)


def test_ipa_blends_two_gin_views_through_one_complementary_mask() -> None:
    ipa = IPA(generator=2)
    ipa.gin = _ConstantGin()
    v1, v2 = ipa(torch.zeros(2, 1, 64, 64))
    # v1 = m*1 + (1-m)*3 = 3 - 2m ; v2 = (1-m)*1 + m*3 = 1 + 2m
    torch.testing.assert_close(v1 + v2, torch.full_like(v1, 4.0))
    m = (3.0 - v1) / 2.0
    assert m.min() >= 0 and m.max() <= 1 and torch.isclose(m.min(), torch.tensor(0.0))
    assert (m[..., 1:] - m[..., :-1]).abs().max() < 2.0 / 16


def test_ipa_returns_two_distinct_views_and_is_reproducible() -> None:
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    v1, v2 = IPA(generator=5)(x)
    w1, w2 = IPA(generator=5)(x)
    assert v1.shape == v2.shape == x.shape and v1.dtype == x.dtype
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.allclose(v1, v2)
    assert IPA.n_views == 2 and GIN.n_views == 1


def test_ipa_prob_zero_returns_the_input_twice() -> None:
    x = torch.randn(2, 1, 8, 8)
    v1, v2 = IPA(prob=0.0)(x)
    assert v1 is x and v2 is x


def test_ipa_prob_keeps_unselected_samples() -> None:
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    v1, v2 = IPA(prob=0.5, generator=3)(x)
    kept = [i for i in range(32) if torch.equal(v1[i], x[i])]
    assert 0 < len(kept) < 32
    assert all(torch.equal(v2[i], x[i]) for i in kept)


# ----------------------------------------------------------------------------------- consistency
def test_consistency_loss_is_zero_for_identical_views() -> None:
    z = torch.randn(2, 4, 3, 3)
    for kind in ("kl", "js", "symmetric_kl"):
        assert consistency_loss([z, z.clone()], kind=kind).abs() < 1e-7


def test_consistency_loss_hand_computed_values() -> None:
    # one pixel, two classes: p1 = (0.5, 0.5), p2 = (0.9, 0.1); mean = (0.7, 0.3)
    z1 = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    z2 = torch.tensor([math.log(0.9), math.log(0.1)]).view(1, 2, 1, 1)
    p1, p2, pm = (0.5, 0.5), (0.9, 0.1), (0.7, 0.3)

    def kl(p: tuple, q: tuple) -> float:
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    expected = {
        "kl": (kl(pm, p1) + kl(pm, p2)) / 2,
        "js": (kl(p1, pm) + kl(p2, pm)) / 2,
        "symmetric_kl": (kl(p1, p2) + kl(p2, p1)) / 2,
    }
    for kind, value in expected.items():
        got = consistency_loss([z1, z2], kind=kind)
        assert got.item() == pytest.approx(value, rel=1e-5), kind


def test_consistency_loss_has_gradients_for_every_view() -> None:
    z1 = torch.randn(2, 3, 4, 4, requires_grad=True)
    z2 = torch.randn(2, 3, 4, 4, requires_grad=True)
    consistency_loss([z1, z2]).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert z2.grad is not None and z2.grad.abs().sum() > 0
    assert F.softmax(z1, 1).shape == z1.shape


@pytest.mark.parametrize(
    ("views", "kind", "match"),
    [
        ([torch.zeros(1, 2, 2, 2)] * 2, "mse", "kind must be one of"),
        ([torch.zeros(1, 2, 2, 2)], "kl", "at least 2 views, got 1"),
        ([torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2)], "kl", r"must all be shaped \(B, K, ...\) alike"),
        ([torch.zeros(4), torch.zeros(4)], "kl", r"must all be shaped \(B, K, ...\) alike"),
    ],
)
def test_consistency_loss_rejects_bad_arguments(views: list, kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        consistency_loss(views, kind=kind)
