"""The package layout of DESIGN.md, checked by walking every import in src/kinema (those inside functions too):
imports go one way only (no cycle), each package imports only the layers below it, and no module imports a
private name of another."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# What each part of kinema may import, besides itself. cli and serve sit above inference; inference above the
# models, diffusion, eval and media; frames, config, devices, errors and kinema (its version) sit at the bottom.
BOTTOM = {"kinema", "kinema.frames", "kinema.config", "kinema.devices", "kinema.errors"}
ALLOWED = {
    # the package itself: its version, and the Python API's names, which it loads by name on first use (importlib),
    # so that importing kinema imports nothing else
    "kinema": set(),
    "kinema.frames": set(),
    "kinema.config": {"kinema.errors"},
    "kinema.devices": {"kinema.errors"},
    "kinema.errors": set(),
    "kinema.media": BOTTOM,
    "kinema.weights": BOTTOM,
    "kinema.world": BOTTOM | {"kinema.media"},
    "kinema.models": BOTTOM,
    "kinema.diffusion": BOTTOM,
    "kinema.data": BOTTOM | {"kinema.media", "kinema.world"},
    "kinema.eval": BOTTOM | {"kinema.media", "kinema.world"},
    "kinema.inference": BOTTOM | {"kinema.media", "kinema.world", "kinema.models", "kinema.diffusion", "kinema.eval",
                                  "kinema.weights"},
    "kinema.train": BOTTOM | {"kinema.media", "kinema.world", "kinema.models", "kinema.diffusion", "kinema.data",
                              "kinema.inference.pipeline", "kinema.inference.settings",
                              "kinema.inference.longvideo"},  # distillation records a teacher's long videos
    "kinema.serve": BOTTOM | {"kinema.media", "kinema.inference", "kinema.eval"},
    "kinema.cli": {"*"},
    "kinema.__main__": {"kinema.cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from kinema... import name``, and (module, "") for every ``import kinema...``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kinema":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "kinema"]
    return found


def is_module(path: Path) -> bool:
    """A module of the package, not a Python file shipped as data (a model folder's pipeline.py for diffusers)."""
    return all(part.isidentifier() for part in path.relative_to(SRC).with_suffix("").parts)


def graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, str]]]]:
    modules = {module_name(p): p for p in (SRC / "kinema").rglob("*.py") if is_module(p)}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    raw = {}
    for name, path in modules.items():
        raw[name] = imports(path)
        for module, imported in raw[name]:
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            if target != name:
                edges[name].add(target)
    return edges, raw


def part_of(module: str) -> str:
    """The entry of ALLOWED a module belongs to: the longest one that is the module or a package above it."""
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def allowed(source: str, target: str) -> bool:
    own = part_of(source)
    rules = ALLOWED[own]
    return "*" in rules or part_of(target) == own or any(target == r or target.startswith(r + ".") for r in rules)


def test_no_import_cycle():
    edges, _ = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_each_part_imports_only_the_layers_below_it():
    edges, _ = graph()
    unplaced = [m for m in edges if m != "kinema" and part_of(m) == "kinema"]
    assert not unplaced, f"new top-level modules {unplaced}: give each a place in ALLOWED (and in DESIGN.md)"
    wrong = sorted(f"{s} -> {t}" for s, targets in edges.items() for t in targets if not allowed(s, t))
    assert not wrong, wrong


def test_world_and_models_import_nothing_above_them():
    edges, _ = graph()
    above = ("kinema.inference", "kinema.eval", "kinema.serve", "kinema.cli", "kinema.train", "kinema.data")
    wrong = sorted(f"{s} -> {t}" for s, targets in edges.items() if s.startswith(("kinema.world", "kinema.models"))
                   for t in targets if t.startswith(above))
    assert not wrong, wrong


def test_no_module_imports_a_private_name_of_another():
    _, raw = graph()
    wrong = sorted(f"{source}: from {module} import {name}" for source, found in raw.items()
                   for module, name in found if name.startswith("_") and not name.startswith("__"))
    assert not wrong, wrong
