"""The package's structure: no import cycles, training does not depend on evaluation, safe checkpoint loading."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fsslib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> set[str]:
    """fsslib modules imported anywhere at run time (function bodies too), skipping ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsslib"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fsslib"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _runtime_imports(ast.parse(path.read_text())):
            while imported not in modules and "." in imported:  # `from fsslib.x import name`: the module is fsslib.x
                imported = imported.rsplit(".", 1)[0]
            if imported != name and imported in modules:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_training_does_not_import_evaluation():
    graph = import_graph()
    assert "fsslib.evaluate" not in graph["fsslib.train"] and "fsslib.engine" in graph["fsslib.train"]


def test_clip_and_models_hold_architecture_and_loading_only():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(("fsslib.clip", "fsslib.models", "fsslib.blocks", "fsslib.data")):
            assert not any(t.startswith(("fsslib.methods", "fsslib.train", "fsslib.evaluate")) for t in targets), name


def test_checkpoints_are_loaded_with_weights_only():
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert not offenders
