"""The import graph of ``src/pgvault``, read from the source with ``ast`` (nothing is imported).

Each edge is one module naming another of pgvault's modules, classified as ``module`` (a
run-time import at module level), ``lazy`` (a run-time import inside a function) or
``typing`` (under ``if TYPE_CHECKING:``). A package's ``__init__`` running because a submodule
is imported is not an edge: only what a module names is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "pgvault"
KINDS = ("module", "lazy", "typing")


def module_names() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    names: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["pgvault", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, kind: str, package: str) -> Iterator[tuple[str, list[str], str]]:
    """(module named, names imported from it, kind) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), "typing", package)
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), kind, package)
            continue
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield alias.name, [], kind
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - child.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            yield base, [a.name for a in child.names], kind
        inner = (
            "lazy"
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            and kind == "module"
            else kind
        )
        yield from _imports(child, inner, package)


def edges() -> set[tuple[str, str, str]]:
    """(importer, imported, kind) for every pgvault-internal import."""
    names = module_names()
    found: set[tuple[str, str, str]] = set()
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for target, imported, kind in _imports(tree, "module", package):
            if not target.startswith("pgvault"):
                continue
            targets = [f"{target}.{n}" for n in imported if f"{target}.{n}" in names]
            rest = [n for n in imported if f"{target}.{n}" not in names]
            if rest or not imported:
                targets.append(target)
            for t in targets:
                if t in names and t != name:
                    found.add((name, t, kind))
    return found


def cycles(graph_edges: Iterable[tuple[str, str, str]], kinds: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module, over edges of ``kinds``."""
    graph: dict[str, set[str]] = {}
    for a, b, kind in graph_edges:
        if kind in kinds:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(result)


if __name__ == "__main__":
    all_edges = edges()
    for label, kinds in (
        ("runtime, module level", {"module"}),
        ("runtime incl. function-local", {"module", "lazy"}),
        ("all incl. TYPE_CHECKING", {"module", "lazy", "typing"}),
    ):
        found = cycles(all_edges, kinds)
        print(f"{label}: {len(found)} circle(s)")
        for c in found:
            print(f"  {len(c)}: {' '.join(m.removeprefix('pgvault.') for m in c)}")
