"""Typed, validated experiment configs from TOML, with ``--set key=value`` overrides.

The schema is a tree of dataclasses (see :mod:`fedsilo.config.schema`). Each field carries its
documentation and constraints in ``field(metadata=...)`` made by :func:`param`, so one source
of truth drives validation, error messages and the generated config reference.

Errors are raised before any work starts and name the key, the allowed values and, for
misspelt keys, the closest match::

    ConfigError: unknown key 'federation.strategy.nam', did you mean 'name'?
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import tomli_w
import tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what was expected."""


def param(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare a config field with its documentation and numeric bounds.

    Parameters
    ----------
    default
        Default value (lists are copied per instance).
    doc
        One sentence for the generated config reference.
    ge, gt, le, lt
        Inclusive / exclusive bounds for numbers (and for every item of a list of numbers).
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[T], doc: str) -> Any:
    """Declare a nested config section (a dataclass) with its documentation."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "table"
    if tp is type(None):
        return "none"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _check_bounds(key: str, value: float, meta: Mapping[str, Any]) -> None:
    checks = (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    )
    for name, ok, symbol in checks:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key} must be {symbol} {bound}, got {value!r}")


def _coerce(key: str, tp: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against type ``tp``; return it (ints widened to float where needed)."""
    origin = get_origin(tp)
    if tp is Any:  # passed through as TOML gave it (e.g. simulation.ray_init_args)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table (section), got {value!r}")
        return _build(tp, value, key)
    if origin in (types.UnionType, typing.Union):
        errors = []
        for option in get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(key, option, value, meta)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}{hint}"
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(f"{key}[{i}]", item_tp, v, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        key_tp, val_tp = get_args(tp)
        return {
            _coerce(f"{key}.{k}", key_tp, k, {}): _coerce(f"{key}.{k}", val_tp, v, meta)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        _check_bounds(key, value, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
        if value != value:  # NaN
            raise ConfigError(f"{key} must be a number, got nan")
        _check_bounds(key, value, meta)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # schema bug, not user error


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f", did you mean {close[0]!r}?" if close else ""
            allowed = f" (allowed keys: {', '.join(fields)})" if not close else ""
            raise ConfigError(f"unknown key {where!r}{hint}{allowed}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(key, hints[name], data[name], f.metadata)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build and validate a config dataclass ``cls`` from a plain nested dict."""
    return _build(cls, data)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass; ``None`` values are left out (TOML has no null)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(dataclasses.asdict(obj))


def dumps(obj: Any) -> str:
    """TOML text of a config dataclass (the resolved config written into each run folder)."""
    return tomli_w.dumps(to_dict(obj))


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``).

    A bare word that is not valid TOML (``fedavg``) is taken as a string.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (in place, returned).

    Unknown keys are not rejected here; validation of the resulting dict names them.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        parts = [p.strip() for p in dotted.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"override key {dotted!r} must look like section.key")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {dotted!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = parse_value(text.strip())
    return data


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; errors name the file and the position of the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None


def iter_fields(cls: type, prefix: str = "") -> Iterable[tuple[str, Any, Any, str]]:
    """Yield ``(dotted_key, type, default, doc)`` for every leaf of a config schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key)  # type: ignore[arg-type]
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # pragma: no cover - every field has a default
            default = None
        yield key, tp, default, f.metadata.get("doc", "")


def type_name(tp: Any) -> str:
    """Human-readable name of a schema type (for docs and error messages)."""
    return _type_name(tp)
