"""Config loading: typed validation, unknown keys with close matches, overrides, round trip."""

from __future__ import annotations

import pytest

from fedsilo.config import ConfigError, config_from_dict, config_from_toml_text, dumps, iter_fields, load_config
from fedsilo.config.loader import apply_overrides, parse_value
from helpers import REPO_ROOT

REPO = REPO_ROOT


def test_defaults_and_override_types():
    cfg = config_from_dict({}, ["federation.strategy.name=fedprox", "train.lr=0.01", "federation.rounds=7",
                                "data.preprocess.clahe=true", "federation.site_names=['a','b','c']"])
    assert cfg.federation.strategy.name == "fedprox"
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.federation.rounds == 7
    assert cfg.data.preprocess.clahe is True
    assert cfg.federation.site_names == ["a", "b", "c"]


def test_int_is_accepted_where_float_expected():
    cfg = config_from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"federation": {"strategy": {"nam": "fedavg"}}}, "unknown key 'federation.strategy.nam', did you mean 'name'?"),
        ({"federaton": {}}, "unknown key 'federaton', did you mean 'federation'?"),
        ({"train": {"zzz": 1}}, "unknown key 'train.zzz' (allowed keys: local_epochs"),
        ({"experiment": {"mode": "federate"}}, "experiment.mode must be one of 'federated', 'centralised', 'local', "
                                                "got 'federate'; did you mean 'federated'?"),
        ({"federation": {"strategy": {"name": "fedavgg"}}}, "did you mean 'fedavg'?"),
        ({"federation": {"rounds": 0}}, "federation.rounds must be >= 1, got 0"),
        ({"federation": {"rounds": 2.5}}, "federation.rounds must be an integer, got 2.5"),
        ({"federation": {"rounds": True}}, "federation.rounds must be an integer, got True"),
        ({"train": {"lr": "fast"}}, "train.lr must be a number, got 'fast'"),
        ({"train": {"lr": 0}}, "train.lr must be > 0.0, got 0.0"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction must be < 1.0, got 1.0"),
        ({"data": {"preprocess": {"clahe": "yes"}}}, "data.preprocess.clahe must be true or false, got 'yes'"),
        ({"data": {"preprocess": {"quantise_levels": 1}}}, "quantise_levels must be 0 (off) or 2..256, got 1"),
        ({"data": {"phantom": {"grade_weights": [1, 2]}}}, "grade_weights must be 5 non-negative numbers"),
        ({"data": {"phantom": {"grade_weights": [1, 2, 3, 4, -1]}}}, "grade_weights[4] must be >= 0.0, got -1.0"),
        ({"experiment": {"device": "gpu"}}, "experiment.device must be one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"),
        ({"experiment": {"name": ""}}, "experiment.name must be a non-empty name"),
        ({"federation": {"num_sites": 2, "min_sites": 3}}, "federation.min_sites must be <= federation.num_sites (2)"),
        ({"federation": {"num_sites": 2, "site_names": ["a"]}}, "site_names must name all 2 sites"),
        ({"federation": {"num_sites": 2, "site_names": ["a", "a"]}}, "site_names must be unique"),
        ({"partition": {"name": "severity", "sites_per_class": 4}}, "partition.sites_per_class must be <= "),
        ({"partition": {"name": "pathological", "classes_per_site": 6}}, "classes_per_site must be <= 5"),
        ({"data": {"source": "medmnist"}}, "data.path must name the medmnist data"),
        ({"federation": "x"}, "federation must be a table (section), got 'x'"),
        ({"federation": {"site_names": "a"}}, "federation.site_names must be a list of str, got 'a'"),
    ],
)
def test_bad_values_name_key_and_expectation(data, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides({}, ["federation.rounds"])
    with pytest.raises(ConfigError, match="must look like section.key"):
        apply_overrides({}, ["federation..rounds=3"])
    with pytest.raises(ConfigError, match="federation.rounds is a value, not a section"):
        apply_overrides({"federation": {"rounds": 3}}, ["federation.rounds.x=3"])


def test_parse_value():
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("fedavg") == "fedavg"
    assert parse_value('"x y"') == "x y"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\nrounds = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[federation.strategy]\nnam = 'fedavg'\n")
    with pytest.raises(ConfigError, match=r"unknown.toml: unknown key 'federation.strategy.nam', did you mean 'name'\?"):
        load_config(unknown)


def test_resolved_toml_round_trip():
    cfg = config_from_dict({"federation": {"site_names": ["x", "y", "z"]}}, ["train.lr=0.05"])
    again = config_from_toml_text(dumps(cfg))
    assert again == cfg


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_only_the_tours_quick_configs_are_marked_as_smoke_tests():
    marked = {p.name for p in (REPO / "configs").glob("*.toml") if load_config(p).experiment.smoke_test}
    assert marked == {"quick-classify.toml", "quick-fedgan.toml", "quick-fedgin.toml"}


def test_every_field_is_documented():
    from fedsilo.config import ExperimentConfig

    fields = list(iter_fields(ExperimentConfig))
    assert len(fields) > 40
    undocumented = [key for key, _, _, doc in fields if not doc]
    assert undocumented == []


def test_config_reference_is_in_sync_with_the_schema():
    from fedsilo.config.docs import config_reference

    committed = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert committed == config_reference(), "docs/CONFIG.md is stale: run `fedsilo config-docs --out docs/CONFIG.md`"
    from fedsilo.config import ExperimentConfig

    for key, tp, _, _ in iter_fields(ExperimentConfig):
        is_table_array = getattr(tp, "__origin__", None) is list and hasattr(tp.__args__[0], "__dataclass_fields__")
        assert (f"[[{key}]]" if is_table_array else f"`{key}`") in committed
