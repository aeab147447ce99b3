"""Imports point one way: every module imports, and our packages' import graph has no cycle.

The graph counts every ``import`` statement in a module, the lazy ones inside functions
too: a circle closed by a function-level import still ties the modules together (one
cannot be read, moved or tested without the other), it only defers the failure.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webhooks", "tasks", "worker", "sandboxes", "rewardrelay", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """Every module of ours that ``name`` imports, at module level or inside a function."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module; otherwise the name is an
            # attribute of ``base`` and the edge goes to ``base``.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    return {name: set(_imported(name, path)) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert graph["tasks.runtime"], "the graph walker found no imports: it is broken"
    assert cycles(graph) == []


# The product's layers: each may import only the layers after it (STYLE.md: webhooks →
# tasks → worker); the command line, sandboxes and benchmarks sit on top of them.
LAYERS = ("webhooks", "tasks", "worker")


def test_imports_point_one_way_through_the_layers() -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if name.split(".")[0] in LAYERS
        and (
            target.split(".")[0] not in LAYERS
            or LAYERS.index(target.split(".")[0]) < LAYERS.index(name.split(".")[0])
        )
    )
    assert upward == []


def test_the_cycle_finder_finds_a_circle_closed_inside_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


# Process entry points: importing them reads the environment and builds the process
# (``celery -A worker.app``) or runs a command; the graph above still covers them.
ENTRY_MODULES = {"worker.app"}


@pytest.mark.parametrize(
    "name",
    [name for name in MODULES if not name.endswith("__main__") and name not in ENTRY_MODULES],
    ids=str,
)
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)
