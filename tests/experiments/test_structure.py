"""The run as a value: no import circles among the pipeline's modules or the science modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import advfeatures

PACKAGE = Path(advfeatures.__file__).parent


def imports_of(package: str) -> dict[str, set[str]]:
    """Module → the sibling modules it imports (at any depth of the file, lazily or not)."""
    folder = PACKAGE / package
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[name] = deps & names
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


@pytest.mark.parametrize("package", ["experiments", "science"])
def test_no_import_circle(package):
    graph = imports_of(package)
    assert find_cycle(graph) is None, find_cycle(graph)


def test_extras_and_report_do_not_import_the_pipeline():
    graph = imports_of("experiments")
    assert "pipeline" not in graph["extras"] | graph["report"]
    assert {"extras", "report"} <= graph["pipeline"]


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
