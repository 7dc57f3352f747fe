"""The GAN's model-level options: the per-round weight EMA, a spectrally normalised or shallower
discriminator, and pre-trained weights moving across spectral normalisation."""

from __future__ import annotations

import pytest
import torch

from fedsilo.models.dcgan import DCGANDiscriminator
from fedsilo.models.dcgan_transfer import adapt_state_dict
from fedsilo.models.ema import WeightEMA


def test_ema_math_on_a_tiny_state():
    ema = WeightEMA(0.5, prefix="generator.")
    rounds = [{"generator.w": torch.tensor([1.0, 2.0]), "generator.n": torch.tensor(1), "discriminator.w": torch.tensor(9.0)},
              {"generator.w": torch.tensor([3.0, 6.0]), "generator.n": torch.tensor(2), "discriminator.w": torch.tensor(8.0)},
              {"generator.w": torch.tensor([7.0, 2.0]), "generator.n": torch.tensor(3), "discriminator.w": torch.tensor(7.0)}]
    ema.update(rounds[0])
    torch.testing.assert_close(ema.released(rounds[0])["generator.w"], torch.tensor([1.0, 2.0]))  # starts at round 1
    ema.update(rounds[1])
    ema.update(rounds[2])
    out = ema.released(rounds[2])
    # 0.5 * (0.5 * w1 + 0.5 * w2) + 0.5 * w3
    torch.testing.assert_close(out["generator.w"], torch.tensor([4.5, 3.0]))
    assert int(out["generator.n"]) == 3  # integer counters are copied, not averaged
    assert float(out["discriminator.w"]) == 7.0  # outside the prefix: the raw weights
    final = ema.final(rounds[2])
    assert torch.equal(final["model"]["generator.w"], out["generator.w"]) and final["ema_decay"] == 0.5
    assert torch.equal(final["model_raw"]["generator.w"], rounds[2]["generator.w"])
    # checkpoint round trip, then one more round on both copies
    again = WeightEMA(0.5, prefix="generator.")
    again.load_state_dict(ema.state_dict())
    nxt = {**rounds[2], "generator.w": torch.tensor([0.5, 1.0])}
    ema.update(nxt)
    again.update(nxt)
    assert torch.equal(ema.released(nxt)["generator.w"], again.released(nxt)["generator.w"])
    torch.testing.assert_close(again.released(nxt)["generator.w"], torch.tensor([2.5, 2.0]))


def test_inactive_ema_releases_the_raw_weights():
    ema = WeightEMA(0.0, prefix="generator.")
    state = {"generator.w": torch.tensor([1.0])}
    ema.update(state)
    assert not ema.active and ema.average is None
    assert ema.final(state) == {"model": state}
    with pytest.raises(ValueError, match="decay must be in \\[0, 1\\)"):
        WeightEMA(1.0)


def test_spectral_norm_discriminator_has_unit_spectral_norms_and_is_seeded():
    d = DCGANDiscriminator(28, 3, 8, "none", num_classes=5, seed=3, spectral_norm=True)
    assert "stem.0.parametrizations.weight.original" in d.state_dict()
    assert "embed.parametrizations.weight.0._u" in d.state_dict()
    x, y = torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 2, 3])
    for _ in range(30):  # the power iteration converges over training forwards
        d(x, y)
    for name in ("stem.0", "blocks.0.0", "head", "embed"):
        w = d.get_submodule(name).weight
        top = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
        assert abs(float(top) - 1.0) < 1e-2, name
    again = DCGANDiscriminator(28, 3, 8, "none", num_classes=5, seed=3, spectral_norm=True)
    fresh = DCGANDiscriminator(28, 3, 8, "none", num_classes=5, seed=3, spectral_norm=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in again.state_dict().items())


def test_shallower_discriminator_is_smaller_and_scores_a_batch():
    full = DCGANDiscriminator(32, 3, 8, "group", seed=0)
    small = DCGANDiscriminator(32, 3, 8, "group", seed=0, blocks=0)
    assert len(small.blocks) == 0 and small.head.kernel_size == (16, 16)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 2
    assert small(torch.randn(5, 3, 32, 32)).shape == (5,)
    assert DCGANDiscriminator(28, 1, 8, "none", blocks=0).head.kernel_size == (14, 14)
    with pytest.raises(ValueError, match="blocks must be in \\[0, 2\\] at 32 px, got 3"):
        DCGANDiscriminator(32, 3, 8, blocks=3)


def test_pretrained_weights_cross_spectral_normalisation_both_ways():
    sn = DCGANDiscriminator(28, 1, 8, "none", seed=1, spectral_norm=True)
    x = torch.randn(3, 1, 28, 28)
    for _ in range(5):
        sn(x)
    sn.eval()
    plain = DCGANDiscriminator(28, 1, 8, "none", seed=2)
    state, summary = adapt_state_dict(sn.state_dict(), plain)
    plain.load_state_dict(state, strict=True)
    assert not summary.missing and not summary.skipped
    with torch.no_grad():  # the spectral norm is folded into the weights: the same function
        torch.testing.assert_close(plain.eval()(x), sn(x), rtol=1e-4, atol=1e-5)
    back = DCGANDiscriminator(28, 1, 8, "none", seed=3, spectral_norm=True)
    state, summary = adapt_state_dict(plain.state_dict(), back)
    back.load_state_dict(state, strict=True)
    assert torch.equal(state["stem.0.parametrizations.weight.original"], plain.state_dict()["stem.0.weight"])
    assert {k for k in summary.missing} == {k for k in back.state_dict() if k.endswith(("._u", "._v"))}
