"""DCGAN networks, initialisation, losses and weight transfer (fedsilo.models)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator

from fedsilo.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    adapt_state_dict,
    dcgan_init_,
    discriminator_loss,
    generator_loss,
    load_adapted_,
    sample_latent,
)

SIZES = (28, 32, 64, 128)


def _z(n: int = 4, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return sample_latent(n, dim, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("num_classes", (0, 5))
def test_shapes_range_and_logits(size: int, channels: int, num_classes: int) -> None:
    g = DCGANGenerator(size, channels, latent_dim=16, base_width=4, num_classes=num_classes, embed_dim=3)
    d = DCGANDiscriminator(size, channels, base_width=4, num_classes=num_classes, norm="group")
    labels = torch.tensor([0, 1, 4]) if num_classes else None
    x = g(_z(3), labels)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    logits = d(x, labels)
    assert logits.shape == (3,)
    spatial = 7 if size == 28 else 4
    assert d.features(x).shape == (3, d.feature_dim, spatial, spatial)


def test_28px_is_native_7_14_28_layout() -> None:
    g = DCGANGenerator(28, 1, latent_dim=8, base_width=4)
    assert g.stem[0].kernel_size == (7, 7) and len(g.blocks) == 1
    assert g.stem(torch.zeros(2, 8, 1, 1)).shape[-1] == 7
    d = DCGANDiscriminator(28, 1, base_width=4)
    assert d.head.kernel_size == (7, 7) and len(d.blocks) == 1


@pytest.mark.parametrize("norm", ("batch", "group", "instance", "none"))
def test_norm_choices_run_and_bias_only_without_norm(norm: str) -> None:
    g = DCGANGenerator(32, 3, latent_dim=8, base_width=8, norm=norm)
    d = DCGANDiscriminator(32, 3, base_width=8, norm=norm)
    assert d(g(_z(4, 8))).shape == (4,)
    assert (g.blocks[0][0].bias is not None) == (norm == "none")
    assert (d.blocks[0][0].bias is not None) == (norm == "none")


def test_group_norm_uses_largest_divisor_not_above_groups() -> None:
    d = DCGANDiscriminator(32, 1, base_width=6, norm="group", groups=8)  # widths 12, 24
    assert d.blocks[0][1].num_groups == 6 and d.blocks[1][1].num_groups == 8


def test_z_with_trailing_singleton_dims_is_accepted() -> None:
    g = DCGANGenerator(32, 1, latent_dim=8, base_width=4).eval()
    z = _z(2, 8)
    torch.testing.assert_close(g(z[:, :, None, None]), g(z))


# ----------------------------------------------------------------------------- opacus
@pytest.mark.parametrize("norm", ("group", "none", "instance"))
@pytest.mark.parametrize("num_classes", (0, 5))
def test_opacus_accepts_discriminator_without_batchnorm(norm: str, num_classes: int) -> None:
    d = DCGANDiscriminator(32, 3, base_width=4, norm=norm, num_classes=num_classes)
    assert ModuleValidator.validate(d, strict=False) == []


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_computes_per_sample_grads_for_group_norm_discriminator() -> None:
    d = GradSampleModule(DCGANDiscriminator(28, 3, base_width=4, norm="group", num_classes=5))
    x = torch.rand(6, 3, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    d(x, torch.tensor([0, 1, 2, 3, 4, 0])).sum().backward()
    for p in d.parameters():
        assert p.grad_sample.shape == (6, *p.shape)


def test_opacus_rejects_batchnorm_discriminator() -> None:
    errors = ModuleValidator.validate(DCGANDiscriminator(32, 3, base_width=4, norm="batch"), strict=False)
    assert len(errors) == 2  # the two normalised blocks (the stem is never normalised)


# ----------------------------------------------------------------------------- init
def test_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = DCGANGenerator(32, 3, base_width=8, seed=3), DCGANGenerator(32, 3, base_width=8, seed=3)
    c = DCGANGenerator(32, 3, base_width=8, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


def test_dcgan_init_statistics_and_generator_state() -> None:
    d = DCGANDiscriminator(64, 3, base_width=32, norm="batch")
    dcgan_init_(d, torch.Generator().manual_seed(0))
    w = d.blocks[2][0].weight.detach()  # 128 x 64 x 4 x 4 = 131k values
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 5e-4
    bn = d.blocks[2][1]
    assert abs(float(bn.weight.detach().mean()) - 1.0) < 0.01 and torch.count_nonzero(bn.bias) == 0
    assert torch.count_nonzero(d.stem[0].bias) == 0
    first = d.stem[0].weight.clone()
    gen = torch.Generator().manual_seed(0)
    dcgan_init_(d, gen)
    assert torch.equal(d.stem[0].weight, first)
    dcgan_init_(d, gen)  # the generator advanced: new values
    assert not torch.equal(d.stem[0].weight, first)


def test_label_embedding_init_matches_z_scale() -> None:
    g = DCGANGenerator(32, 1, base_width=4, num_classes=50, embed_dim=40)
    d = DCGANDiscriminator(32, 1, base_width=4, num_classes=50)
    assert abs(float(g.embed.weight.detach().std()) - 1.0) < 0.05
    assert abs(float(d.embed.weight.detach().std()) - 0.02) < 0.002


def test_dcgan_init_rejects_non_generator() -> None:
    with pytest.raises(ValueError, match="generator must be a CPU torch.Generator"):
        dcgan_init_(DCGANDiscriminator(32, 1, base_width=4), 0)  # type: ignore[arg-type]


def test_sample_latent_is_seeded() -> None:
    a = sample_latent(3, 5, torch.Generator().manual_seed(7))
    assert a.shape == (3, 5)
    assert torch.equal(a, sample_latent(3, 5, torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="latent_dim >= 1"):
        sample_latent(3, 0)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 48}, "image_size must be one of"),
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"base_width": 0}, "base_width must be >= 1"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"num_classes": -1}, "num_classes must be >= 0"),
        ({"groups": 0}, "groups must be >= 1"),
    ],
)
def test_constructor_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DCGANGenerator(**kwargs)
    with pytest.raises(ValueError, match=match):
        DCGANDiscriminator(**kwargs)


def test_generator_only_errors() -> None:
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        DCGANGenerator(latent_dim=0)
    with pytest.raises(ValueError, match="embed_dim must be >= 1"):
        DCGANGenerator(num_classes=5, embed_dim=0)


def test_forward_errors() -> None:
    g = DCGANGenerator(32, 1, latent_dim=8, base_width=4)
    gc = DCGANGenerator(32, 1, latent_dim=8, base_width=4, num_classes=5)
    d = DCGANDiscriminator(32, 1, base_width=4)
    z = _z(2, 8)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 8\)"):
        g(_z(2, 9))
    with pytest.raises(ValueError, match="labels must be None"):
        g(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels are required"):
        gc(z)
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(2,\)"):
        gc(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\], got range \[0, 5\]"):
        gc(z, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 32, 32\)"):
        d(torch.zeros(2, 3, 32, 32))


# ----------------------------------------------------------------------------- losses
def test_losses_at_zero_logits_are_log2() -> None:
    zeros = torch.zeros(4)
    assert generator_loss(zeros).item() == pytest.approx(math.log(2))
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert discriminator_loss(zeros, zeros, real_target=0.9).item() == pytest.approx(2 * math.log(2))


def test_losses_hand_computed_with_label_smoothing() -> None:
    logit = torch.full((3,), math.log(3.0))  # sigmoid = 0.75
    assert generator_loss(logit).item() == pytest.approx(-math.log(0.75))
    assert discriminator_loss(logit, logit).item() == pytest.approx(-math.log(0.75) - math.log(0.25))
    smoothed = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25)) - math.log(0.25)
    assert discriminator_loss(logit, logit, real_target=0.9).item() == pytest.approx(smoothed)


def test_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"real_target must be in \(0, 1\], got 1.5"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), real_target=1.5)
    with pytest.raises(ValueError, match=r"logits must have shape \(B,\)"):
        discriminator_loss(torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match=r"fake_logits must have shape \(B,\)"):
        generator_loss(torch.zeros(2, 1))


# ----------------------------------------------------------------------------- transfer
def _train_mode_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial running statistics."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
            m.running_var.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))


def test_generator_grey_to_colour_draws_identical_channels() -> None:
    g1 = DCGANGenerator(32, 1, latent_dim=16, base_width=8, seed=1)
    _train_mode_stats(g1)
    g3 = DCGANGenerator(32, 3, latent_dim=16, base_width=8, seed=2)
    summary = load_adapted_(g3, g1.state_dict())
    assert set(summary.adapted) == {"head.0.weight", "head.0.bias"}
    assert not summary.skipped and not summary.missing and not summary.unused
    z = _z(4, 16)
    x1, x3 = g1.eval()(z), g3.eval()(z)
    for c in range(3):
        torch.testing.assert_close(x3[:, c : c + 1], x1)


def test_generator_colour_to_grey_averages_pre_activations() -> None:
    g3 = DCGANGenerator(32, 3, latent_dim=16, base_width=8, seed=1).eval()
    g1 = DCGANGenerator(32, 1, latent_dim=16, base_width=8, seed=2).eval()
    g1.load_state_dict(adapt_state_dict(g3.state_dict(), g1)[0])
    z = _z(4, 16)
    torch.testing.assert_close(torch.atanh(g1(z)), torch.atanh(g3(z)).mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_discriminator_channel_transfer_keeps_logits_of_grey_images() -> None:
    d1 = DCGANDiscriminator(32, 1, base_width=8, norm="group", seed=1).eval()
    d3 = DCGANDiscriminator(32, 3, base_width=8, norm="group", seed=2).eval()
    state, summary = adapt_state_dict(d1.state_dict(), d3)
    d3.load_state_dict(state)
    assert summary.adapted == {"stem.0.weight": "channels 1 -> 3: replicated / 3"}
    grey = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(d3(grey.repeat(1, 3, 1, 1)), d1(grey), atol=1e-5, rtol=1e-4)
    back = DCGANDiscriminator(32, 1, base_width=8, norm="group", seed=3).eval()
    _, back_summary = adapt_state_dict(d3.state_dict(), back)
    assert back_summary.adapted == {"stem.0.weight": "channels 3 -> 1: summed"}
    back.load_state_dict(adapt_state_dict(d3.state_dict(), back)[0])
    torch.testing.assert_close(back(grey), d1(grey), atol=1e-5, rtol=1e-4)


def test_generator_64_to_32_px_and_grey_to_colour() -> None:
    g64 = DCGANGenerator(64, 1, latent_dim=16, base_width=4, seed=1)
    g32 = DCGANGenerator(32, 3, latent_dim=16, base_width=4, seed=2)
    fresh_stem = g32.stem[0].weight.clone()
    summary = load_adapted_(g32, g64.state_dict())
    assert set(summary.adapted) == {"head.0.weight", "head.0.bias"}
    assert "stem.0.weight" in summary.skipped and "not adaptable" in summary.skipped["stem.0.weight"]
    assert "blocks.0.0.weight (from blocks.1.0.weight)" in summary.copied
    assert "blocks.0.0.weight" in summary.unused
    assert torch.equal(g32.blocks[0][0].weight, g64.blocks[1][0].weight)
    assert torch.equal(g32.blocks[1][0].weight, g64.blocks[2][0].weight)
    assert torch.equal(g32.stem[0].weight, fresh_stem)  # skipped: initialisation kept
    assert g32(_z(2, 16)).shape == (2, 3, 32, 32)


def test_generator_32_to_64_px_keeps_new_coarse_block() -> None:
    g32 = DCGANGenerator(32, 1, latent_dim=16, base_width=4, seed=1)
    g64 = DCGANGenerator(64, 1, latent_dim=16, base_width=4, seed=2)
    summary = load_adapted_(g64, g32.state_dict())
    assert "blocks.0.0.weight" in summary.missing
    assert torch.equal(g64.blocks[1][0].weight, g32.blocks[0][0].weight)
    assert torch.equal(g64.head[0].weight, g32.head[0].weight)


def test_discriminator_64_to_28_px_aligns_from_the_image_side() -> None:
    d64 = DCGANDiscriminator(64, 3, base_width=4, seed=1)
    d28 = DCGANDiscriminator(28, 3, base_width=4, seed=2)
    summary = load_adapted_(d28, d64.state_dict())
    assert torch.equal(d28.stem[0].weight, d64.stem[0].weight)
    assert torch.equal(d28.blocks[0][0].weight, d64.blocks[0][0].weight)
    assert "head.weight" in summary.skipped
    assert "blocks.2.0.weight" in summary.unused


def test_unconditional_to_conditional_starts_equal_to_source() -> None:
    g = DCGANGenerator(32, 3, latent_dim=16, base_width=4, seed=1).eval()
    gc = DCGANGenerator(32, 3, latent_dim=16, base_width=4, num_classes=5, embed_dim=6, seed=2).eval()
    summary = load_adapted_(gc, g.state_dict())
    assert summary.adapted["stem.0.weight"] == "input rows 16 -> 22: first 16 copied, rest zero"
    assert summary.missing == ["embed.weight"]
    assert float(gc.embed.weight.detach().abs().sum()) > 0  # kept random so gradients can flow
    z = _z(5, 16)
    for y in range(5):
        torch.testing.assert_close(gc(z, torch.full((5,), y)), g(z))
    d = DCGANDiscriminator(32, 3, base_width=4, seed=1).eval()
    dc = DCGANDiscriminator(32, 3, base_width=4, num_classes=5, seed=2).eval()
    d_summary = load_adapted_(dc, d.state_dict())
    assert "embed.weight" in d_summary.adapted
    x = g(z)
    torch.testing.assert_close(dc(x, torch.arange(5)), d(x))


def test_batch_to_group_norm_copies_affine_and_drops_running_stats() -> None:
    src = DCGANDiscriminator(32, 3, base_width=8, norm="batch", seed=1)
    dst = DCGANDiscriminator(32, 3, base_width=8, norm="group", seed=2)
    summary = load_adapted_(dst, src.state_dict())
    assert torch.equal(dst.blocks[0][1].weight, src.blocks[0][1].weight)
    assert "blocks.0.1.running_mean" in summary.unused
    assert not summary.skipped and not summary.missing


def test_summary_is_loggable_and_serialisable(caplog: pytest.LogCaptureFixture) -> None:
    g64 = DCGANGenerator(64, 1, latent_dim=16, base_width=4)
    g32 = DCGANGenerator(32, 3, latent_dim=16, base_width=4)
    with caplog.at_level(logging.INFO, logger="fedsilo.models.dcgan_transfer"):
        summary = load_adapted_(g32, g64.state_dict())
    assert json.loads(json.dumps(summary.as_dict()))["adapted"]["head.0.weight"] == "channels 1 -> 3: replicated"
    assert summary.lines()[0].startswith(f"copied {len(summary.copied)}, adapted 2, skipped")
    assert "DCGANGenerator: adapted head.0.weight: channels 1 -> 3: replicated" in caplog.text
    assert str(summary).count("\n") == len(summary.lines()) - 1


def test_adapt_errors() -> None:
    with pytest.raises(ValueError, match="dst_model must be a DCGANGenerator or DCGANDiscriminator"):
        adapt_state_dict({"a": torch.zeros(1)}, torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="src_state must be a non-empty state dict"):
        adapt_state_dict({}, DCGANGenerator(32, 1, base_width=4))
