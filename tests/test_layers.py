"""The package layers, read from the code's imports: data/ and blocks/ at the bottom, then models/ and
clip/, then pretrain/; no import cycle among their modules."""
from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import fsslib

LAYERS = {"data": 0, "blocks": 0, "models": 1, "clip": 1, "pretrain": 2}
GROUND = {"errors", "paths", "provenance"}  # modules every layer may use
PACKAGE = Path(fsslib.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layered_imports() -> dict[str, set[str]]:
    """Module -> the fsslib modules it imports (anywhere in its body), for the modules of LAYERS."""
    every_module = {_module_name(path) for path in PACKAGE.rglob("*.py")}
    modules = {_module_name(path): path for layer in LAYERS for path in (PACKAGE / layer).rglob("*.py")}
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsslib"):
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in every_module else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("fsslib")}
        imports[name] = targets - {name}
    return imports


def test_lower_layers_never_import_higher_ones():
    upward = [(module, target) for module, targets in _layered_imports().items() for target in targets
              if target.split(".")[1] not in GROUND
              and LAYERS.get(target.split(".")[1], len(LAYERS)) > LAYERS[module.split(".")[1]]]
    assert not upward, f"imports that run up the layers {LAYERS}: {upward}"


def test_no_import_cycle():
    imports = _layered_imports()
    graph = {module: {t for t in targets if t in imports} for module, targets in imports.items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        raise AssertionError(f"import cycle: {error.args[1]}") from error
