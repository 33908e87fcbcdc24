"""builder's import graph: arrows point down (CLI -> stages -> plumbing), with no cycles.

Every `import builder...` and `from builder... import` counts, at the top of a module or
inside a function (a deferred import is still a dependency), relative ones too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import builder

PACKAGE = Path(builder.__file__).resolve().parent
# Plumbing: what every stage may use, and what imports no stage.
PLUMBING = {
    f"builder.{name}"
    for name in (
        "errors",
        "log",
        "files",
        "settings",
        "yamlnodes",
        "proc",
        "resources",
        "platforms",
        "records",
        "engine",  # the container-engine protocol and its Docker implementation
        "gitsource",  # app.git clones, cached by commit
        "requirements",  # requirement files by pip's rules, for the matrix and check -r
    )
} | {"builder"}  # the package itself holds only __version__


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The builder modules a module's source imports (a name imported from a package counts
    as its submodule when there is one)."""
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "builder")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != "builder":
                continue
            for alias in node.names:
                yield sub if (sub := f"{base}.{alias.name}") in known else base


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found = imported(tree, module, path.name == "__init__.py", set(paths))
        graph[module] = {m for m in found if m != module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_builder_modules_import_each_other_even_through_others() -> None:
    assert cycles(import_graph()) == []


def test_plumbing_modules_import_only_plumbing() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module in PLUMBING
        for target in targets
        if target not in PLUMBING
    )
    assert upward == []


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    source = "from builder import proc\nfrom . import rules\ndef f():\n    import builder.lock\n"
    known = {"builder.proc", "builder.lock", "builder.check.rules"}
    found = imported(ast.parse(source), "builder.check", True, known)
    assert sorted(found) == ["builder.check.rules", "builder.lock", "builder.proc"]


def test_a_cycle_through_three_modules_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
