"""The config reference, generated from the schema (docs/CONFIG.md is this text; a test keeps it in sync)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, get_args, get_origin

from fedsilo.config.loader import type_name
from fedsilo.config.schema import ExperimentConfig

HEADER = """# Config reference

Every key an experiment TOML file (or `--set section.key=value`) may set, generated from the
schema in `src/fedsilo/config/` by `fedsilo config-docs` (do not edit by hand). Unknown keys
and values outside the stated ranges are rejected before any work starts.
"""


def _default(value: Any) -> str:
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    return f"`{value}`"


def _bounds(meta: dict[str, Any]) -> str:
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]}")
    return f" ({', '.join(parts)})" if parts else ""


def _section_rows(cls: type, prefix: str, out: list[str], sections: list[tuple[str, type, str]]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(tp):
            sections.append((key, tp, doc))
            continue
        if get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            sections.append((f"{key}[]", get_args(tp)[0], doc + " (an array of tables: `[[" + key + "]]`)"))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        cells = [f"`{key}`", f"{type_name(tp)}{_bounds(dict(f.metadata))}", _default(default), doc]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")


def config_reference() -> str:
    """Markdown reference of every config key (one table per section)."""
    lines = [HEADER]
    todo: list[tuple[str, type, str]] = [(name, tp, doc) for name, tp, doc in _top_sections()]
    while todo:
        name, cls, doc = todo.pop(0)
        rows: list[str] = []
        nested: list[tuple[str, type, str]] = []
        _section_rows(cls, name, rows, nested)
        title = f"[[{name[:-2]}]]" if name.endswith("[]") else f"[{name}]"
        lines += [f"## `{title}`", "", doc, ""]
        if rows:
            lines += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
        todo = nested + todo
    return "\n".join(lines).rstrip() + "\n"


def _top_sections() -> list[tuple[str, type, str]]:
    hints = typing.get_type_hints(ExperimentConfig)
    return [(f.name, hints[f.name], f.metadata.get("doc", "")) for f in dataclasses.fields(ExperimentConfig)]
