"""Typed experiment configs: TOML files in ``configs/`` plus ``--set key=value`` overrides."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedsilo.config.loader import ConfigError, apply_overrides, dumps, from_dict, iter_fields, load_toml, to_dict
from fedsilo.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "absolute_paths",
    "config_from_dict",
    "config_hash",
    "config_from_toml_text",
    "dumps",
    "iter_fields",
    "load_config",
    "to_dict",
]


def config_from_dict(data: Mapping[str, Any], overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Validate a nested dict (after applying ``section.key=value`` overrides)."""
    data = apply_overrides(_deepcopy(dict(data)), overrides)
    return from_dict(ExperimentConfig, data)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Load, override and validate an experiment config file.

    Raises
    ------
    ConfigError
        With the file name for unreadable files, and the dotted key for invalid values.
    """
    try:
        return absolute_paths(config_from_dict(load_toml(path), overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def absolute_paths(cfg: ExperimentConfig, base: Path | None = None) -> ExperimentConfig:
    """Make relative data paths and tracker locations absolute (against ``base``, default the working directory).

    The resolved config then means the same thing in every process that reads it (Ray
    workers, resumed runs started elsewhere).
    """
    base = Path.cwd() if base is None else base

    def fix(p: str) -> str:
        return str((base / p).resolve()) if p and not Path(p).is_absolute() else p

    cfg.data.path = fix(cfg.data.path)
    for spec in [*cfg.data.sites, *cfg.data.test]:
        spec.path = fix(spec.path)
        spec.label_path = fix(spec.label_path)
        if spec.mapping.endswith(".toml"):
            spec.mapping = fix(spec.mapping)
    uri = cfg.experiment.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        cfg.experiment.tracking_uri = "sqlite:///" + fix(uri[len("sqlite:///"):])
    elif not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):  # a folder (tensorboard), not a URI
        cfg.experiment.tracking_uri = fix(uri)
    return cfg


def config_from_toml_text(text: str) -> ExperimentConfig:
    """Parse the resolved TOML text that travels in Flower messages and run folders."""
    import tomllib

    return config_from_dict(tomllib.loads(text))


def config_hash(cfg: ExperimentConfig, *sections: str) -> str:
    """Short stable hash of the whole config or of some of its sections (cache keys)."""
    data = to_dict(cfg)
    if sections:
        data = {s: data[s] for s in sections}
    return hashlib.sha256(repr(sorted(_flatten(data))).encode()).hexdigest()[:16]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key))
        else:
            out.append((key, repr(v)))
    return out


def _deepcopy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in data.items()}
