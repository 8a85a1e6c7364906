"""The package's layers: each folder is one layer, imports only point down, no cycles.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a
cycle hidden from the interpreter is still one for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.core.test_purity import IO_LIBRARIES

PACKAGE = Path(__file__).resolve().parent.parent / "speculate"
# Lowest first. A module may import its own layer and the layers below it. The top-level
# modules (errors, settings) are the foundation every layer may use.
LAYERS = [
    {"speculate.assets", "speculate.errors", "speculate.settings", "speculate.version"},
    {"speculate.core"},
    {"speculate.policy"},
    {"speculate.storage", "speculate.backends"},
    {"speculate.engine"},
    {"speculate.server", "speculate.client"},  # the server, and a client of its protocol
    {"speculate.bench"},  # benchmarks and the doubles they share with tests
    {"speculate.cli"},  # the command: serve, ask, bench, report, ...
]
PURE = ("speculate.core", "speculate.policy")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # "from speculate.backends import models" imports that module; "from
            # speculate.core.protocol import Event" imports the module it names.
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            known = submodules & KNOWN
            found.update(known or {node.module})
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
KNOWN = set(MODULES)
GRAPH = {
    name: {m for m in imports_of(path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def layer(module: str) -> int:
    for index, homes in enumerate(LAYERS):
        if any(module == home or module.startswith(home + ".") for home in homes):
            return index
    if module == "speculate":
        return len(LAYERS)  # the package's __init__: above everything
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS")


def test_every_module_belongs_to_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_imports_only_point_down() -> None:
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(PURE)))
def test_pure_layers_import_no_io_library(module: str) -> None:
    libraries = {name.split(".")[0] for name in imports_of(MODULES[module])}
    assert not libraries & IO_LIBRARIES, libraries & IO_LIBRARIES


def test_the_checker_sees_an_import_hidden_under_type_checking(tmp_path: Path) -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from speculate.x import y\n"
    (tmp_path / "m.py").write_text(source)
    assert "speculate.x" in imports_of(tmp_path / "m.py")
