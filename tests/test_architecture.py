"""The import structure of lib/: no cycles and no upward imports, against the declared layers.

``lib.LAYERS`` lists the layers bottom-up, and within a layer the modules in the order of the flow;
a module may import modules of a lower layer, or of its own layer listed before it, never one
above it, and the import graph (imports inside functions included) has no cycle. A new module must be given a layer there (and in docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lib

LIB_DIR = Path(lib.__file__).parent


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(LIB_DIR.glob("*.py")) if p.stem != "__init__"}


def _lib_imports(path: Path) -> set[str]:
    """Names of the lib modules ``path`` imports anywhere (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "lib":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("lib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lib."))
    return found - {path.stem}


def _layer_of() -> dict[str, int]:
    return {module: level for level, (_, modules) in enumerate(lib.LAYERS) for module in modules}


def _position() -> dict[str, tuple[int, int]]:
    """(layer, place within the layer) of every declared module: the declared order."""
    return {module: (level, place) for level, (_, modules) in enumerate(lib.LAYERS)
            for place, module in enumerate(modules)}


def import_graph() -> dict[str, set[str]]:
    return {name: _lib_imports(path) & set(_modules()) for name, path in _modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_layer():
    layers = _layer_of()
    missing = sorted(set(_modules()) - set(layers))
    assert not missing, f"modules without a layer in lib.LAYERS: {missing}"
    stale = sorted(set(layers) - set(_modules()))
    assert not stale, f"lib.LAYERS names modules that do not exist: {stale}"


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def upward_imports(graph: dict[str, set[str]], position: dict[str, tuple[int, int]]) -> list[str]:
    return [f"{m} {position[m]} imports {t} {position[t]}"
            for m, targets in graph.items() for t in sorted(targets)
            if m in position and t in position and position[t] > position[m]]


def test_upward_import_finder_finds_a_planted_one():
    position = {"io": (0, 0), "data": (1, 0), "sampling": (1, 1)}
    assert upward_imports({"io": {"data"}, "data": set(), "sampling": {"data"}}, position) == [
        "io (0, 0) imports data (1, 0)"]
    assert upward_imports({"data": {"sampling"}}, position) == ["data (1, 0) imports sampling (1, 1)"]


def test_no_upward_import():
    upward = upward_imports(import_graph(), _position())
    assert not upward, "imports against the declared order (layer, place):\n" + "\n".join(upward)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_cycle_finder_finds_planted_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_imports_inside_functions_are_seen(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from lib.grid import x\n    import lib.report\n", encoding="utf-8")
    assert _lib_imports(module) == {"grid", "report"}


def test_the_import_graph_in_docs_is_current():
    """docs/architecture.md's diagram is generated from the imports (scripts/architecture_diagram.py)."""
    from scripts.architecture_diagram import DOC, render

    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "run: python scripts/architecture_diagram.py"


def test_the_diagram_keeps_only_edges_no_other_path_implies():
    from scripts.architecture_diagram import transitive_reduction

    graph = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert transitive_reduction(graph) == {"a": {"b"}, "b": {"c"}, "c": set()}
