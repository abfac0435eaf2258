"""The package's structure, read from the code's imports: layers (data/ and blocks/ at the bottom, then models/
and clip/, then pretrain/ and methods/), no import cycles, training does not depend on evaluation, safe
checkpoint loading."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fsslib"
LAYERS = {"data": 0, "blocks": 0, "metrics": 1, "viz": 1, "models": 1, "clip": 1, "pretrain": 2, "methods": 2,
          "config": 3, "engine": 3, "notebook": 3, "zoo": 3, "tables": 3, "train": 4, "evaluate": 4, "compare": 4, "runs": 4, "predict": 4,
          "papers": 1, "lessons": 4, "fetch": 4, "rates": 3, "launch": 4, "plan": 4, "docs": 4, "speed": 3}  # a subpackage or module: its layer
GROUND = {"errors", "paths", "provenance", "device"}  # modules every layer may use


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, typing_only: bool) -> set[str]:
    """fsslib modules imported anywhere (function bodies too); ``if TYPE_CHECKING:`` blocks only if ``typing_only``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING" and not typing_only:
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsslib"):
            found.add(node.module)  # `from fsslib import evaluate` imports the module fsslib.evaluate too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fsslib"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(typing_only: bool = False) -> dict[str, set[str]]:
    """Module -> the fsslib modules it imports at run time (and for type checking too, if ``typing_only``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(ast.parse(path.read_text()), typing_only):
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


def test_no_import_cycles_even_for_type_checking():
    assert find_cycle(import_graph(typing_only=True)) is None


def test_lower_layers_never_import_higher_ones():
    graph = import_graph(typing_only=True)
    top_level = {module.split(".")[1] for module in graph if module != "fsslib"}
    assert top_level <= set(LAYERS) | GROUND, f"give {sorted(top_level - set(LAYERS) - GROUND)} a layer"

    def layer(module: str) -> int:
        return LAYERS.get(module.split(".")[1], -1)  # ground modules: below every layer

    upward = [(module, target) for module, targets in graph.items() if module != "fsslib"
              for target in targets if target != "fsslib" and layer(target) > layer(module)]
    assert not upward, f"imports that run up the layers {LAYERS}: {upward}"


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


def test_a_toy_run_without_clip_imports_neither_torchvision_nor_open_clip():
    """Importing torchvision costs a process about a CPU-second (it imports torch._dynamo); the toy tier's CNN methods
    and their training augmentation (the blur too, and the base learner's) need none of it, and every grid run, launch
    worker and lesson kernel of theirs would pay it. Nor do the toy world's scenes and QGNet's prior pretraining (open_clip
    with torchvision and timm: about 2 CPU-seconds)."""
    import subprocess
    import sys

    script = ("import sys\nimport numpy as np\nimport torch\nfrom fsslib.config import make_config\n"
              "from fsslib.methods import build_method\nimport fsslib.train\nimport fsslib.pretrain.base_learner.data\n"
              "from fsslib.data.episodes import random_augment\nimport fsslib.pretrain.qgnet_prior.train\n"
              "from fsslib.pretrain.scenes import render_scenes\nrender_scenes(2, 0, 0)\n"
              "for method in ('prototype', 'pfenet', 'bam', 'hdmnet', 'qgnet'):\n"
              "    build_method(make_config(method=method))\n"
              "rng = np.random.default_rng(0)\n"
              "for _ in range(8):\n    random_augment(torch.rand(3, 32, 32), torch.zeros(32, 32), rng)\n"
              "print(sorted(m for m in ('torchvision', 'open_clip') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


def test_reading_a_notebook_builds_no_iri_grammar():
    """Every grid run, papermill and nbval process reads notebooks with nbformat, which validates them with jsonschema.
    From jsonschema 4.24 on, its format checkers import rfc3987_syntax, which builds a lark grammar: about 1.2
    CPU-seconds per process that no notebook's schema uses. constraints.txt pins jsonschema 4.23."""
    import subprocess
    import sys

    script = ("import sys, nbformat\nnbformat.validate(nbformat.v4.new_notebook())\n"
              "print(sorted(m for m in ('rfc3987_syntax', 'lark') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]", "install under constraints.txt (make install): jsonschema 4.23"
