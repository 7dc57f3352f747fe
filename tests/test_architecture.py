"""The package's layers, read from its imports: nothing may import upwards, nothing may cycle.

Layers, lowest first (an import may point to its own layer or below; see the README's layout):
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, ...]] = [
    ("fedsilo", "fedsilo.config", "fedsilo.seeding", "fedsilo.progress", "fedsilo.rounds", "fedsilo.fileio",
     "fedsilo.registry"),
    ("fedsilo.data", "fedsilo.models", "fedsilo.augment"),
    ("fedsilo.privacy",),
    ("fedsilo.tasks",),
    ("fedsilo.training",),
    ("fedsilo.federation",),
    ("fedsilo.run",),
    ("fedsilo.report",),
    ("fedsilo.audit", "fedsilo.inference"),
    ("fedsilo.sweep", "fedsilo.demo", "fedsilo.deploy", "fedsilo.cli", "fedsilo.__main__"),
]
__doc__ += "\n".join(f"{i}. {', '.join(names)}" for i, names in enumerate(LAYERS))

#: Longest module allowed (lines), so that each reads in one sitting.
MAX_LINES = 400


def layer_of(module: str) -> int:
    """The layer of a dotted module name (its longest listed prefix)."""
    best, layer = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            # the package itself ("fedsilo", its __init__) is no prefix: new modules must be placed
            prefix = name != "fedsilo" and module.startswith(name + ".")
            if (module == name or prefix) and len(name) > best:
                best, layer = len(name), i
    if layer < 0:
        raise AssertionError(f"{module} is in no layer; add its package to LAYERS")
    return layer


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "fedsilo").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fedsilo modules ``name`` imports, at any depth of the file (function-level imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != "fedsilo":
                continue
            while target not in known and "." in target:
                target = target.rpartition(".")[0]  # a name imported from a module
            found.add(target)
            break
    found.discard(name)
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_every_module_is_in_a_layer():
    for name in GRAPH:
        layer_of(name)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import in ``graph`` that points to a higher layer, as a sentence."""
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_points_up_the_layers():
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_there_are_no_import_cycles():
    assert not import_cycles(GRAPH), "\n".join(" <-> ".join(c) for c in import_cycles(GRAPH))


def test_an_upward_import_and_a_cycle_would_be_caught():
    graph = {**GRAPH, "fedsilo.privacy.dp": GRAPH["fedsilo.privacy.dp"] | {"fedsilo.federation.messages"},
             "fedsilo.federation.messages": GRAPH["fedsilo.federation.messages"] | {"fedsilo.privacy.dp"}}
    assert upward_imports(graph) == ["fedsilo.privacy.dp (layer 2) imports fedsilo.federation.messages (layer 5)"]
    assert ["fedsilo.federation.messages", "fedsilo.privacy.dp"] in import_cycles(graph)
    with pytest.raises(AssertionError, match="fedsilo.nowhere is in no layer"):
        layer_of("fedsilo.nowhere")


def test_no_module_is_longer_than_one_sitting():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
