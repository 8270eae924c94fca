"""The package graph of `app/` flows one way: entry -> domains -> queues -> core.

Imports are read with `ast` (nothing is imported): function-level imports count, imports
under `if TYPE_CHECKING:` do not (they never run). A node is a top-level package or module
of `app` (`jobs`, `core`, `bootstrap`, ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# `client` is the typed HTTP client of the API (the CLI uses it): above the domains it speaks for;
# so is `migrate`, which submits other systems' jobs through that client.
ENTRY = {"__main__", "main", "cli", "client", "migrate", "bootstrap", "models", "settings"}
DOMAINS = {
    "admission",
    "consumer",
    "dashboard",
    "handlers",
    "jobs",
    "observability",
    "outbox",
    "scheduler",
    "tenants",
    "webhooks",
}
# What the lower layers may import (besides themselves).
# `__init__` is app/__init__.py (the version), which imports nothing.
ALLOWED_BELOW = {
    "core": {"__init__"},
    "queues": {"__init__", "core"},
    "emulator": {"__init__", "core", "queues"},
}

Graph = dict[str, dict[str, set[str]]]  # source node -> target node -> files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, package: list[str]) -> Iterator[str]:
    """Absolute dotted names imported anywhere in `tree`, except under TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imported(ast.Module(body=[child], type_ignores=[]), package)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            yield base
            if base == "app":  # `from app import jobs` imports the package `jobs`
                yield from (f"app.{alias.name}" for alias in node.names)
        yield from _imported(node, package)


def _node(parts: tuple[str, ...]) -> str:
    return parts[1].removesuffix(".py")


def import_graph(root: Path = APP) -> Graph:
    graph: Graph = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).parts
        source = _node(parts)
        graph.setdefault(source, {})
        package = list(parts[:-1])  # for relative imports: the module's package
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported(tree, package):
            dotted = name.split(".")
            if dotted[0] != "app" or len(dotted) < 2:
                continue
            target = dotted[1]
            if not (root / target).is_dir() and not (root / f"{target}.py").is_file():
                target = "__init__"  # a name defined in app/__init__.py (`__version__`)
            if target != source:
                files = graph[source].setdefault(target, set())
                files.add(str(path.relative_to(root.parent)))
    return graph


def edges(graph: Graph) -> list[str]:
    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a])]


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def _explain(graph: Graph, pairs: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})" for a, b in pairs)


def test_no_package_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    inside = [(a, b) for c in found for a in c for b in graph[a] if b in c]
    assert not found, f"package cycles {found}:\n{_explain(graph, inside)}"


def test_nothing_imports_the_entry_points() -> None:
    graph = import_graph()
    bad = [(a, b) for a in graph for b in graph[a] if b in ENTRY and a not in ENTRY]
    assert not bad, "only main, cli, bootstrap and settings wire the app:\n" + _explain(graph, bad)


def test_core_queues_and_emulator_import_no_domain() -> None:
    graph = import_graph()
    bad = [
        (a, b) for a, allowed in ALLOWED_BELOW.items() for b in graph.get(a, {}) if b not in allowed
    ]
    assert not bad, "a lower layer imports a higher one:\n" + _explain(graph, bad)


def test_every_package_has_a_layer() -> None:
    """A new top-level package must be placed in a layer here before the rules see it."""
    assert set(import_graph()) <= ENTRY | DOMAINS | set(ALLOWED_BELOW) | {"__init__"}


def test_the_checker_sees_function_level_imports_and_skips_type_checking(
    tmp_path: Path,
) -> None:
    root = tmp_path / "app"
    for package in ("core", "jobs", "queues"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from app.queues import b\n"
        "def f():\n"
        "    from app.jobs.x import y\n"
    )
    (root / "jobs" / "x.py").write_text("from ..core import a\n")
    (root / "queues" / "b.py").write_text("from app import core\n")
    graph = import_graph(root)
    assert edges(graph) == ["core -> jobs", "jobs -> core", "queues -> core"]
    assert cycles(graph) == [["core", "jobs"]]


def test_cycles_are_found_across_several_packages() -> None:
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


if __name__ == "__main__":  # `python -m tests.test_import_graph` prints the edges
    print("\n".join(edges(import_graph())))
