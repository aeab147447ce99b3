"""Structure guard (issue 15, item 5): each sandbox is a module of small handlers.

A sandbox keeps its state in a small class, its handlers as short methods and its routes in
an ``ENDPOINTS`` table; this fails when a handler grows back into a long closure.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import sandboxes
from sandboxes.server import SANDBOX_NAMES, create_sandbox_app

MAX_FUNCTION_LINES = 80
PACKAGE = Path(sandboxes.__file__).parent


def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append((node.name, length))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_sandbox_function_is_longer_than_80_lines(path: Path) -> None:
    # given / when
    found = long_functions(path)
    # then
    assert found == []


@pytest.mark.parametrize("name", SANDBOX_NAMES)
def test_every_route_of_a_sandbox_comes_from_its_endpoint_table(name: str) -> None:
    """The table is the whole API: no route is added by hand beside it (control routes
    come from the shared table in sandboxes.base)."""
    # given
    module = importlib.import_module(f"sandboxes.{name.replace('-', '_')}")
    app = create_sandbox_app(name)
    # when
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("sandbox_control.")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    # then
    assert served == {(e.method, e.rule) for e in module.ENDPOINTS}
