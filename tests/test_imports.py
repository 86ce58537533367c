"""The top-level packages import each other in one direction only: flows -> tasks -> registry -> thresholds.

Read from the source (every `import` and `from ... import`, at any depth, lazy ones included), so a
cycle fails here in CI before it can fail at import time somewhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = ("flows", "tasks", "registry", "thresholds")  # each may import only those to its right


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the files that import it."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in LAYERS}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in LAYERS and top != package:
                        graph[package].setdefault(top, []).append(str(path.relative_to(ROOT)))
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    found = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path:
                walk(nxt, [*path, nxt])

    for start in graph:
        walk(start, [start])
    return found


def test_no_import_cycle_between_top_level_packages() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_one_way_only() -> None:
    upward = [
        f"{package} imports {imported} (in {', '.join(sorted(set(files)))})"
        for package, targets in import_graph().items()
        for imported, files in targets.items()
        if LAYERS.index(imported) < LAYERS.index(package)
    ]
    assert not upward, "; ".join(upward)


def test_the_check_sees_a_cycle(tmp_path: Path) -> None:
    graph = {"a": {"b": ["a/x.py"]}, "b": {"c": ["b/y.py"]}, "c": {"a": ["c/z.py"]}}
    assert _cycles(graph)[0] == ["a", "b", "c", "a"]
