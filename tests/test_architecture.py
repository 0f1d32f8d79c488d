"""docs/ARCHITECTURE.md, checked: what each room may import, no import cycle, no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "softtok"
MAX_LINES = 600

# room -> rooms it may import (its own included); see docs/ARCHITECTURE.md, "Rooms"
ALLOWED: Dict[str, Set[str]] = {
    "common": {"common"},
    "tokenizers": {"common", "tokenizers"},
    "downstream": {"common", "tokenizers", "downstream"},
    "reporting": {"common", "tokenizers", "reporting"},
    "analysis": {"common", "tokenizers", "downstream", "reporting", "analysis"},
    "adapters": {"common", "tokenizers", "downstream", "adapters"},
    "inference": {"common", "tokenizers", "downstream", "adapters", "inference"},
    "recipes": {"common", "tokenizers", "downstream", "reporting", "inference", "recipes"},
    "cli": {"common", "tokenizers", "downstream", "reporting", "analysis", "adapters", "inference", "recipes", "cli",
            "package"},
    "package": {"package", "inference"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """``softtok.<room>...``; the top-level modules are rooms of their own (``softtok`` itself is 'package')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def resolve(name: str, modules: Set[str]) -> str:
    """The package module an import names (``from softtok.a import b`` is ``softtok.a.b`` if that is a module)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports, at any depth of its code (function-level imports included)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("softtok"):
                targets |= {resolve(f"{node.module}.{a.name}", modules) for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name, modules) for a in node.names if a.name.startswith("softtok")}
        graph[name] = targets - {name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_rooms_import_only_downwards():
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() for t in sorted(targets)
           if room(t) not in ALLOWED[room(m)]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_the_size_limit():
    sizes = {p.relative_to(PACKAGE.parent): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > MAX_LINES} == {}
