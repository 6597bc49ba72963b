"""The package's layout: no import circle between wsseg's modules, and few modules left at its top.

Imports are read from the source with `ast`, at module level and inside functions alike (a circle through a lazy
import is still a circle), with relative imports resolved. `from package import name` counts as an import of the
module `package.name` where there is one, else of the package. Importing `a.b.c` also runs the packages `a` and
`a.b`; those implicit edges are not counted, as every submodule has them.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import wsseg

PACKAGE_ROOT = Path(wsseg.__file__).parent
MAX_TOP_LEVEL_MODULES = 12


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> source file of every module of the package in `root` (a package by its `__init__.py`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that the module `name` (source at `path`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `a.b.attribute` -> `a.b`; outside the package -> ""
                target = target.rpartition(".")[0]
            if target and target != name:
                imported.add(target)
    return imported


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = package_modules(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def import_circles(root: Path, package: str) -> list[list[str]]:
    """One circle per strongly connected group of modules, as the path `[a, b, ..., a]`; [] when there is none."""
    graph = import_graph(root, package)
    return [_shortest_circle(graph, sorted(group)) for group in _strongly_connected(graph) if len(group) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _shortest_circle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group."""
    start = group[0]
    came_from = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node] & set(group)):
            if successor == start:
                path = [node]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    raise AssertionError(f"{group} is not strongly connected")


def test_no_import_circle_between_wsseg_modules():
    circles = import_circles(PACKAGE_ROOT, "wsseg")
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_the_checker_finds_a_planted_circle_through_a_function_level_relative_import(tmp_path):
    package = tmp_path / "planted"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from planted.sub import b\n\nVALUE = 1\n")
    (package / "sub" / "b.py").write_text("def late():\n    from ..a import VALUE\n\n    return VALUE\n")
    (package / "c.py").write_text("import planted.a\n")  # imports into the circle, is not part of it

    assert import_graph(package, "planted")["planted.sub.b"] == {"planted.a"}
    assert import_circles(package, "planted") == [["planted.a", "planted.sub.b", "planted.a"]]
    (package / "sub" / "b.py").write_text("VALUE = 2\n")
    assert import_circles(package, "planted") == []


def test_the_checker_names_the_shortest_circle_of_a_larger_group(tmp_path):
    package = tmp_path / "ring"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, imports in {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["b"]}.items():
        (package / f"{module}.py").write_text("".join(f"from ring import {name}\n" for name in imports))

    assert import_circles(package, "ring") == [["ring.a", "ring.b", "ring.c", "ring.a"]]


def test_at_most_a_dozen_modules_sit_at_the_top_of_the_package():
    top_level = sorted(path.name for path in PACKAGE_ROOT.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level
