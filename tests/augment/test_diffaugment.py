"""DiffAugment (Zhao et al., NeurIPS 2020): shapes, gradients, seeded determinism and what each
policy does to an image."""

from __future__ import annotations

import pytest
import torch

from fedsilo.augment.diffaugment import POLICIES, DiffAugment, color, cutout, translation


def _images(b: int = 6, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("policies", [["color"], ["translation"], ["cutout"], list(POLICIES)])
def test_shape_dtype_and_gradients_are_kept(policies):
    x = _images().requires_grad_(True)
    y = DiffAugment(policies, torch.Generator().manual_seed(1))(x)
    assert y.shape == x.shape == (6, 3, 16, 16) and y.dtype == x.dtype
    assert not torch.equal(y.detach(), x.detach())
    y.square().sum().backward()
    # every image gets a gradient of its own: the transform is differentiable per image
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_same_seed_same_transforms_other_seed_others():
    x = _images()
    a = DiffAugment(POLICIES, torch.Generator().manual_seed(5))(x)
    b = DiffAugment(POLICIES, torch.Generator().manual_seed(5))(x)
    c = DiffAugment(POLICIES, torch.Generator().manual_seed(6))(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_translation_shifts_each_image_by_whole_pixels_within_an_eighth_and_fills_zeros():
    x = _images(b=8, size=16) + 3.0  # no zeros in the input: zeros in the output are filled pixels
    y = translation(x, torch.Generator().manual_seed(2))
    shifts = []
    for i in range(len(x)):
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                expected[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)] = src
                if torch.equal(y[i], expected):
                    found.append((dy, dx))
        assert len(found) == 1, i  # exactly one shift of at most 2 = 16/8 pixels explains the image
        shifts += found
    assert len(set(shifts)) > 1  # drawn per image


def test_cutout_zeroes_one_square_of_half_the_side_cut_at_the_border():
    x = _images(b=8, c=1, size=16) + 3.0
    y = cutout(x, torch.Generator().manual_seed(3))
    for i in range(len(x)):
        hole = y[i, 0] == 0
        assert torch.equal(y[i, 0][~hole], x[i, 0][~hole])
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        # a full rectangle (a square cut by the border)
        assert int(hole.sum()) == len(rows) * len(cols)
        assert len(rows) == 8 or rows.min() == 0 or rows.max() == 15
        assert len(cols) == 8 or cols.min() == 0 or cols.max() == 15


def test_color_is_an_affine_map_per_grey_image_within_the_paper_ranges():
    x = _images(b=6, c=1, size=8)
    y = color(x, torch.Generator().manual_seed(4))
    for i in range(len(x)):
        a = torch.stack([x[i].flatten(), torch.ones(64)], 1)
        coef = torch.linalg.lstsq(a, y[i].flatten()[:, None]).solution.flatten()
        torch.testing.assert_close(a @ coef, y[i].flatten(), atol=1e-5, rtol=0)
        # grey: saturation does nothing, so the scale is the contrast factor alone, in [0.5, 1.5]
        assert 0.5 - 1e-5 <= float(coef[0]) <= 1.5 + 1e-5


def test_bad_policies_and_generators_are_refused():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown DiffAugment policies \\['flip'\\]"):
        DiffAugment(["flip"], gen)
    with pytest.raises(ValueError, match="each DiffAugment policy may appear once"):
        DiffAugment(["color", "color"], gen)
    with pytest.raises(ValueError, match="shape \\(B, C, H, W\\)"):
        DiffAugment(["color"], gen)(torch.zeros(3, 8, 8))
