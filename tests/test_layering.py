"""The layers import one way, no module imports its way round in a circle, and files stay small.

Every module of the package is parsed (not imported), and every import of a
stemreg module is an edge, wherever it sits: at the top of the file or inside
a function. Lazy imports of heavy third-party libraries are fine; a lazy
stemreg import that closes a cycle is not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> the import package it installs as (pyproject.toml's package-dir).
FOLDERS = {"api": "stemreg", "acquisition": "stemreg.acquisition", "models": "stemreg.models",
           "tuning": "stemreg.tuning", "platform": "stemreg.platform"}
#: Rank of each layer: imports may point to the same or a lower rank only. `stemreg.errors` (api/errors.py)
#: is the bottom: every layer's errors derive from its base.
RANK = {"stemreg.errors": -1, "stemreg.acquisition": 0, "stemreg.models": 0, "stemreg.tuning": 1, "stemreg.platform": 2, "stemreg": 3}
#: Layers of the same rank that must not import each other.
APART = {("stemreg.acquisition", "stemreg.models"), ("stemreg.models", "stemreg.acquisition")}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    return max((p for p in RANK if module == p or module.startswith(p + ".")), key=len)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(module: str, path: Path) -> set[str]:
    """The stemreg modules `module` imports (a package's __init__ counts as the package)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = set()
        for target in _imports(module, path):
            # Importing a.b.c runs a.b's __init__ too, unless it is one of our own packages.
            mine = set(_ancestors(module)) | ({module} if path.name == "__init__.py" else set())
            edges |= {t for t in [*_ancestors(target), target] if t in MODULES and t not in mine}
        graph[module] = edges - {module}
    return graph


def test_every_layer_folder_is_found():
    assert {_layer(m) for m in MODULES} == set(RANK)
    assert "stemreg.platform.cli" in MODULES and "stemreg.models.config" in MODULES


def test_no_import_points_upward_or_across_acquisition_and_models():
    bad = []
    for module, path in MODULES.items():
        for target in _imports(module, path):
            src, dst = _layer(module), _layer(target)
            if RANK[dst] > RANK[src] or (src, dst) in APART:
                bad.append(f"{path.relative_to(ROOT)}: {module} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    graph = _graph()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_click_lives_in_the_cli_only():
    users = [m for m, path in MODULES.items() if not m.startswith("stemreg.platform.cli")
             and any(isinstance(n, (ast.Import, ast.ImportFrom))
                     and any((a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0] == "click"
                             for a in n.names)
                     for n in ast.walk(ast.parse(path.read_text())))]
    assert not users, f"click imported outside the CLI: {users}"


def test_platform_has_no_init_but_its_subpackages_do():
    assert not (ROOT / "platform" / "__init__.py").exists()
    for folder in (p for p in (ROOT / "platform").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (folder / "__init__.py").is_file(), folder


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_package_file_is_longer_than_about_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines; split it by concern"
