"""The package's dependency rules: no import cycles, imports at module top, layers that point one way.

The graph is read from the source (every ``import`` statement, also those inside functions; imports under
``if TYPE_CHECKING:`` are types only and do not count), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prefrl"

#: third-party modules that may be imported inside functions: optional extras and rendering backends
LAZY_ALLOWED = ("ray", "pygame", "minari")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for n in ast.walk(node))
    return ids


def _imported_modules(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    # `from prefrl import analysis` imports the submodule prefrl.analysis, not the package's __init__
    subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    return subs if len(subs) == len(node.names) else [base, *subs]


def _parse_package() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """``(graph of prefrl-internal imports, [(module, line, imported) for imports inside functions])``."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    inner: list[tuple[str, int, str]] = []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        types_only = _type_checking_nodes(tree)
        in_function = {
            id(n)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in types_only:
                continue
            targets = _imported_modules(node, set(files))
            graph[name].update(t for t in targets if t in files and t != name)
            if id(node) in in_function:
                inner.extend((name, node.lineno, t) for t in targets)
    return graph, inner


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


GRAPH, INNER = _parse_package()


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_imports_are_at_module_top() -> None:
    lazy = [(m, line, t) for m, line, t in INNER if t.split(".")[0] not in LAZY_ALLOWED]
    assert lazy == []


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # evaluation scores any policy: it must not know the agents it scores
        ("prefrl.evaluation", "prefrl.agents"),
        # the regret rater and the datasets load oracles: loading must not pull in training or agents
        ("prefrl.oracle.loading", "prefrl.oracle.training"),
        ("prefrl.oracle.loading", "prefrl.agents"),
        ("prefrl.oracle.loading", "prefrl.config"),
        # raters, rollouts and reward models sit below the agents
        ("prefrl.raters", "prefrl.agents"),
        ("prefrl.rollout", "prefrl.agents"),
        ("prefrl.reward_model", "prefrl.agents"),
        ("prefrl.reward_learning", "prefrl.agents"),
        # only the command line parses arguments and prints
        ("prefrl.experiment", "prefrl.cli"),
        ("prefrl.sweep", "prefrl.cli"),
    ],
)
def test_layers_point_one_way(module: str, forbidden: str) -> None:
    reached = _reachable(GRAPH, module)
    assert not {m for m in reached if m == forbidden or m.startswith(forbidden + ".")}


def test_only_the_cli_parses_arguments() -> None:
    users = {m for m, targets in GRAPH.items() for t in targets if t == "argparse"}
    parsers = set()
    for path in PACKAGE.rglob("*.py"):
        if "argparse" in path.read_text():
            parsers.add(_module_name(path))
    assert users == set()  # argparse is not a prefrl module: nothing in the graph
    assert {m for m in parsers if not m.startswith("prefrl.cli")} == set()


def test_only_the_cli_prints() -> None:
    printing = set()
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        if any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
            for n in ast.walk(tree)
        ):
            printing.add(module)
    assert {m for m in printing if not m.startswith("prefrl.cli")} == set()
