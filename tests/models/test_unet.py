"""2D U-Net with selectable normalisation, DSBN, and the keys of normalisation layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsilo.data.labels import NUM_CLASSES
from fedsilo.models import (
    DomainSpecificBatchNorm,
    build_unet,
    convert_to_dsbn,
    norm_key_domains,
    norm_parameter_keys,
    set_domain,
    use_domain,
)

SMALL = {"base_width": 8, "depth": 3, "num_res_units": 1}


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "dsbn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_unet_output_shape_for_every_norm(norm: str, in_channels: int) -> None:
    model = build_unet(in_channels=in_channels, norm=norm, **SMALL)
    x = torch.randn(2, in_channels, 16, 16)
    y = model(x, domain="ct") if norm == "dsbn" else model(x)
    assert y.shape == (2, NUM_CLASSES, 16, 16)


def test_unet_widths_and_norm_layer_types() -> None:
    model = build_unet(num_classes=4, norm="group", channels=(8, 16, 32))
    groups = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert groups and all(g.num_groups == 4 for g in groups)  # gcd(8, 16, 32, 4) = 4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 8
    inst = build_unet(norm="instance", **SMALL)
    assert any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in inst.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inst.modules())
    default = build_unet()
    assert [m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)][0] == 16


def test_norm_parameter_keys_on_a_hand_made_model() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.ReLU())
    assert norm_parameter_keys(model) == {
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked", "2.weight", "2.bias",
    }
    assert set(norm_key_domains(model).values()) == {None}


def test_norm_parameter_keys_of_the_batch_norm_unet() -> None:
    model = build_unet(norm="batch", **SMALL)
    keys = norm_parameter_keys(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(keys) == 5 * n_bn
    assert all(".adn.N." in k for k in keys)
    suffixes = {k.rsplit(".", 1)[1] for k in keys}
    assert suffixes == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    conv_keys = {k for k in model.state_dict() if k.endswith("conv.weight")}
    assert conv_keys and not conv_keys & keys


def test_dsbn_unet_state_dict_names_domain_parameters() -> None:
    model = build_unet(norm="dsbn", **SMALL)
    keys = norm_parameter_keys(model)
    ct, mr = norm_parameter_keys(model, "ct"), norm_parameter_keys(model, "mr")
    assert ct and mr and ct | mr == keys and not ct & mr
    assert all(".bns.ct." in k for k in ct) and all(".bns.mr." in k for k in mr)
    assert {k.replace(".bns.ct.", ".bns.mr.") for k in ct} == mr
    domains = norm_key_domains(model)
    assert all(domains[k] == "ct" for k in ct) and all(domains[k] == "mr" for k in mr)
    assert model.domains == ("ct", "mr")
    with pytest.raises(ValueError, match=r"domain must be one of the model's DSBN domains \['ct', 'mr'\], got 'pet'"):
        norm_parameter_keys(model, "pet")


def test_dsbn_training_on_mr_changes_only_mr_statistics_and_parameters() -> None:
    model = build_unet(norm="dsbn", domains=("ct", "mr"), **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 + 3
    loss = model(x, domain="mr").square().mean()
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    ct, mr = norm_parameter_keys(model, "ct"), norm_parameter_keys(model, "mr")
    assert not changed & ct
    stats = {k for k in mr if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert stats <= changed
    assert {k for k in mr if k.endswith("weight")} & changed
    assert changed - mr - ct  # the shared convolutions learn too


def test_dsbn_domains_normalise_differently_in_eval() -> None:
    model = build_unet(norm="dsbn", **SMALL)
    gen = torch.Generator().manual_seed(2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 1, 16, 16, generator=gen) * 5 + 10, domain="ct")
            model(torch.randn(4, 1, 16, 16, generator=gen), domain="mr")
    model.eval()
    x = torch.randn(2, 1, 16, 16, generator=gen)
    with torch.no_grad():
        assert not torch.allclose(model(x, domain="ct"), model(x, domain="mr"))
        set_domain(model, "mr")
        assert torch.equal(model(x), model(x, domain="mr"))


def test_use_domain_restores_the_previous_domain() -> None:
    model = build_unet(norm="dsbn", **SMALL)
    layers = [m for m in model.modules() if isinstance(m, DomainSpecificBatchNorm)]
    set_domain(model, "ct")
    with use_domain(model, "mr"):
        assert all(m.active_domain == "mr" for m in layers)
    assert all(m.active_domain == "ct" for m in layers)
    with pytest.raises(ZeroDivisionError), use_domain(model, "mr"):
        1 / 0
    assert all(m.active_domain == "ct" for m in layers)
    set_domain(model, None)
    with pytest.raises(RuntimeError, match="no active domain"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"domain must be one of \('ct', 'mr'\), got 'pet'"):
        set_domain(model, "pet")


def test_convert_to_dsbn_copies_the_batch_norm_state() -> None:
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(2.0)
    bn.weight.data.fill_(0.5)
    model = convert_to_dsbn(nn.Sequential(nn.Conv2d(1, 3, 1), bn), ["a", "b"])
    dsbn = model[1]
    assert isinstance(dsbn, DomainSpecificBatchNorm)
    for d in ("a", "b"):
        assert torch.equal(dsbn.bns[d].running_mean, torch.full((3,), 2.0))
        assert torch.equal(dsbn.bns[d].weight, torch.full((3,), 0.5))
    assert norm_parameter_keys(model, "a") == {f"1.bns.a.{n}" for n in
                                               ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


@pytest.mark.parametrize(
    ("domains", "match"),
    [
        ([], "domains must be a non-empty sequence of distinct identifiers"),
        (["ct", "ct"], "domains must be a non-empty sequence of distinct identifiers"),
        (["c.t"], "domains must be a non-empty sequence of distinct identifiers"),
    ],
)
def test_dsbn_rejects_bad_domains(domains: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DomainSpecificBatchNorm(4, domains)
    with pytest.raises(ValueError, match=match):
        build_unet(norm="dsbn", domains=domains, **SMALL)


def test_dsbn_rejects_bad_layer_arguments() -> None:
    with pytest.raises(ValueError, match=r"spatial_dims must be one of \(1, 2, 3\), got 4"):
        DomainSpecificBatchNorm(4, ["ct"], spatial_dims=4)
    with pytest.raises(ValueError, match="bn must be a BatchNorm1d/2d/3d, got SyncBatchNorm"):
        DomainSpecificBatchNorm.from_batchnorm(nn.SyncBatchNorm(4), ["ct"])


def test_domain_argument_rejected_without_dsbn() -> None:
    model = build_unet(norm="batch", **SMALL)
    with pytest.raises(ValueError, match="domain must be None for a model without DSBN layers, got 'ct'"):
        model(torch.randn(1, 1, 16, 16), domain="ct")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "layer"}, r"norm must be one of \('batch', 'instance', 'group', 'dsbn'\), got 'layer'"),
        ({"in_channels": 0}, "in_channels must be an int >= 1, got 0"),
        ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
        ({"base_width": 0}, "base_width must be an int >= 1, got 0"),
        ({"depth": 1}, "depth must be an int >= 2, got 1"),
        ({"num_res_units": -1}, "num_res_units must be an int >= 0, got -1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"channels": (16,)}, r"channels must hold at least 2 positive ints, got \(16,\)"),
        ({"domains": ("ct",)}, "domains is only used with norm='dsbn', got norm='batch'"),
        ({"num_groups": 4}, "num_groups is only used with norm='group', got norm='batch'"),
        ({"norm": "group", "num_groups": 3}, "num_groups must be a positive int dividing every width and num_classes"),
    ],
)
def test_build_unet_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_unet(**kwargs)
