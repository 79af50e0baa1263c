"""The house's rules, checked: no import circles (type-only and deferred imports count),
no module over 600 lines, and every folder of ``gateway/`` says what it holds."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600


def modules(package: str) -> dict[str, tuple[Path, bool]]:
    """Every module of a package: dotted name -> (file, whether it is a package)."""
    found = {}
    for file in (ROOT / package).rglob("*.py"):
        parts = list(file.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Which module imports which, counting every import wherever it stands."""
    known = modules(package)

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (file, is_package) in known.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(file.read_text())):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [owner(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                parent = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    child = f"{parent}.{alias.name}"
                    targets.append(child if child in known else owner(parent))
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", ["gateway", "bench"])
def test_no_import_circles(package):
    assert circles(import_graph(package)) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["gateway", "bench"])
def test_no_module_over_600_lines(package):
    long = {
        str(file.relative_to(ROOT)): n
        for file, _ in modules(package).values()
        if (n := len(file.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_folder_says_what_it_holds():
    for file, is_package in modules("gateway").values():
        if is_package:
            doc = ast.get_docstring(ast.parse(file.read_text()))
            assert doc and "TODO" not in doc, file


def test_the_public_surface_imports():
    import gateway

    for name in gateway.__all__:
        assert getattr(gateway, name) is not None
    for path in ("gateway.examples.hooks", "gateway.config", "gateway.servers.granian"):
        importlib.import_module(path)
