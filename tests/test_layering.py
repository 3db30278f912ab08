"""The package's layering (README "Layout"): imports go down only, and there is no import cycle.

Every module under src/expocorr is parsed with `ast`; its imports of expocorr modules, function-local ones
included (a lazy import that hides a cycle is still a cycle), are edges of a graph that must be acyclic.
Layers, bottom to top: infrastructure at the root and `imaging/`; `models/`, `baselines/`, `metrics/`;
`sources/`; `stages/`; `cli` (and the `__main__` entry points) over all. A function-local import is allowed
only where LAZY lists it: for start-up speed (torch, cv2, MLflow kept out of a command that does not need
them), never to hide a cycle, and pointing down like any other import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "expocorr"

# Function-local imports (importer -> imported) kept for start-up speed; each points down.
LAZY = {
    # torch and the models: only when a model (not a baseline) is loaded
    ("expocorr.methods", "expocorr.baselines"),
    ("expocorr.methods", "expocorr.inference"),
    ("expocorr.methods", "expocorr.models"),
    ("expocorr.methods", "expocorr.plugins"),
    ("expocorr.corrector", "expocorr.imaging.guided_upsampling"),
    ("expocorr.inference", "expocorr.checkpoints"),
    ("expocorr.checkpoints", "expocorr.models"),
    ("expocorr.checkpoints", "expocorr.models.msec"),
    ("expocorr.checkpoints", "expocorr.models.zerodce"),
    ("expocorr.checkpoints", "expocorr.models.zerodce_pp"),
    ("expocorr.params", "expocorr.checkpoints"),
    ("expocorr.plugins", "expocorr.models.registry"),
    ("expocorr.tracking", "expocorr.sampling"),
    ("expocorr.metrics.noref", "expocorr.metrics.inception_score"),
    # rawpy: only for a camera raw file
    ("expocorr.imaging.photo_io", "expocorr.imaging.raw"),
    # `expocorr correct` and the stages: torch, cv2 and the baselines on use
    ("expocorr.stages.evaluate", "expocorr.inference"),
    ("expocorr.stages.pretrained", "expocorr.inference"),
}
# The `expocorr correct` command imports everything on use (its --help starts without torch or cv2).
LAZY_MODULES = {"expocorr.stages.correct"}

# Layers, bottom to top: a module may import its own layer or a lower one, never a higher one.
# Root modules: plain infrastructure (0), or built on the models (2: params validates the plugin models'
# arch schemas and the published checkpoints; methods and inference run them); cli over all.
LAYERS = {"imaging": 1, "models": 2, "baselines": 2, "metrics": 2, "sources": 3, "stages": 4}
ROOT = {"expocorr.cli": 5, **dict.fromkeys(
    ["expocorr.sampling", "expocorr.schedules", "expocorr.plugins", "expocorr.params", "expocorr.checkpoints",
     "expocorr.machine", "expocorr.tracking", "expocorr.corrector", "expocorr.methods", "expocorr.inference",
     "expocorr.external"], 2)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """The module `name` refers to: itself, or its package (`expocorr.stages.render.IMAGES` is not one)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported expocorr module, function-local?, line) for every import statement of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((resolve(a.name), local, child.lineno) for a in child.names if a.name.startswith("expocorr"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if base == "expocorr" or base.startswith("expocorr."):
                    for alias in child.names:  # `from expocorr.stages import render` imports a submodule
                        target = f"{base}.{alias.name}"
                        found.append((target if target in MODULES else resolve(base), local, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return [(m, local, line) for m, local, line in found if m != module]


GRAPH = {m: imports(m) for m in MODULES}


def layer(module: str) -> int:
    if module.endswith(".__main__"):
        return 6  # an entry point (`python -m`): over all, like cli
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS[parts[1]]
    return ROOT.get(module, 0)


def test_the_graph_sees_every_module():
    assert {"expocorr.cli", "expocorr.stages.render", "expocorr.imaging.colour", "expocorr.sources.files",
            "expocorr.stages.report"} <= MODULES.keys()
    assert ("expocorr.imaging.colour", False) in {(m, local) for m, local, _ in GRAPH["expocorr.stages.render"]}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    up = [f"line {line}: {target}" for target, _, line in GRAPH[module]
          if target in MODULES and layer(target) > layer(module)]
    assert not up, f"{module} (layer {layer(module)}) imports a higher layer: {up}"


def test_lower_layers_never_import_stages_sources_or_cli():
    for module, edges in GRAPH.items():
        if module.endswith(".__main__"):  # an entry point (`python -m expocorr.metrics`): over all, like cli
            continue
        for target, _, line in edges:
            if module.startswith(("expocorr.imaging", "expocorr.metrics", "expocorr.baselines", "expocorr.models")):
                assert not target.startswith(("expocorr.stages", "expocorr.sources")), (module, line, target)
            if module.startswith("expocorr.sources"):
                assert not target.startswith("expocorr.stages"), (module, line, target)
            if target == "expocorr.cli":
                assert module.endswith("__main__"), (module, line)


def test_lazy_imports_are_listed():
    """A function-local import is either listed in LAZY (start-up speed) or in a module of LAZY_MODULES."""
    unlisted = sorted({(m, t, line) for m, edges in GRAPH.items() if m not in LAZY_MODULES
                       for t, local, line in edges if local and (m, t) not in LAZY})
    assert not unlisted, f"function-local imports not in LAZY (import at the top, or list why): {unlisted}"


def test_lazy_list_is_current():
    """Every LAZY entry is a function-local import that exists: the list does not outlive the code."""
    local = {(m, t) for m, edges in GRAPH.items() for t, is_local, _ in edges if is_local}
    assert not LAZY - local, f"LAZY lists imports that are no longer function-local: {sorted(LAZY - local)}"


def test_no_import_cycle():
    """Depth-first search over every import (function-local ones included): the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target, _, _ in GRAPH.get(module, []):
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)
