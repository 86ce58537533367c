"""The import graph, read from the source: every `import` and `from ... import`, at any depth (imports inside
functions included, since they run too), so a cycle or a wrong-way import fails here in CI before it can fail at
import time somewhere else.

- Top-level packages point one way: flows -> tasks -> registry -> thresholds.
- Inside `tasks/`, the subpackages are layers too (`TASK_LAYERS`): each imports only the ones it lists.
- The two pipelines (the energy loop and the cooling agent) never import each other, in any package.
- No module imports Prefect except the stage modules (`stages.py`, `*_stages.py`) and the flows.
- No import cycle between any two modules of flows/, tasks/, registry/, thresholds/.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = ("flows", "tasks", "registry", "thresholds")  # each may import only those to its right
# What each subpackage of tasks/ may import, besides itself (the work below the stages).
TASK_LAYERS: dict[str, set[str]] = {
    "meters": set(),  # hardware behind one interface: it needs nothing of the project's
    "common": {"meters"},
    "data": {"common"},
    "models": {"common", "meters", "data"},
    "compression": {"common", "meters", "data", "models"},
    "serving": {"common", "meters", "data", "models", "compression"},
    "energy_loop": {"common", "meters", "data", "models", "compression", "serving"},
    "cooling": {"common", "meters"},
}
PIPELINES = ("energy", "cooling")  # thresholds/energy, registry/energy.py, tasks/energy_loop, flows/energy_loop.py ...


def modules() -> dict[str, Path]:
    """Every module of the four packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, here: str, known: dict[str, Path]) -> list[str]:
    """The modules of the project an import statement names (a `from P import m` names module P.m where it is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = here.split(".")[: -node.level]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    subs = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
    return subs if len(subs) == len(node.names) else [module, *subs]


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (third-party imports left out)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _imported(node, name, known):
                while target and target not in known:  # `import tasks.meters.base.X`: the module part
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _ancestors(module: str, known: dict[str, Path] | set[str]) -> list[str]:
    parts = module.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in known]


def runtime_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles Python can trip over: importing `a.b.c` runs the packages `a` and `a.b` first (implicit edges), so a
    package whose `__init__` re-exports a module joins that module's cycles. A cycle that stays inside one package and
    reaches the package only through those implicit edges is Python's ordinary start-up (the `__init__` is running,
    or done, when its modules import their parents), not a cycle."""
    with_parents = {m: set(edges) | set(_ancestors(m, graph)) for m, edges in graph.items()}
    found = []
    for component in cycles(with_parents):
        members = set(component)
        benign = any(
            all(m == package or m.startswith(package + ".") for m in members)
            and not any(package in graph[m] for m in members)  # reached only by implicit edges
            for package in members
        )
        if not benign:
            found.append(component)
    return found


def third_party(path: Path) -> set[str]:
    """Top-level names of everything a module imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _pipeline(module: str) -> str | None:
    parts = module.split(".")
    for part in parts[1:3]:
        for pipeline in PIPELINES:
            if part == pipeline or part.startswith(pipeline + "_"):
                return pipeline
    return None


def test_no_import_cycle_between_any_two_modules() -> None:
    found = runtime_cycles(import_graph())
    assert not found, "import cycles among: " + "; ".join(" <-> ".join(c) for c in found)


def test_top_level_packages_import_one_way_only() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if LAYERS.index(target.split(".")[0]) < LAYERS.index(module.split(".")[0])
    )
    assert not upward, "; ".join(upward)


def test_task_subpackages_import_only_the_layers_below() -> None:
    assert set(TASK_LAYERS) == {m.split(".")[1] for m in modules() if m.count(".") >= 1 and m.startswith("tasks.")}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith("tasks.")
        for target in targets
        if target.startswith("tasks.")
        and target.split(".")[1] != module.split(".")[1]
        and target.split(".")[1] not in TASK_LAYERS[module.split(".")[1]]
    )
    assert not wrong, "; ".join(wrong)


def test_the_two_pipelines_never_import_each_other() -> None:
    crossing = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if {_pipeline(module), _pipeline(target)} == set(PIPELINES)
    )
    assert not crossing, "; ".join(crossing)


def test_only_the_stage_modules_import_prefect() -> None:
    def is_stage(module: str) -> bool:
        last = module.rsplit(".", 1)[-1]
        return module.startswith("flows.") or last == "stages" or last.endswith("_stages")

    others = sorted(
        m for m, path in modules().items() if not is_stage(m) and {"prefect", "prefect_dask"} & third_party(path)
    )
    assert not others, "Prefect imported outside the stage modules: " + ", ".join(others)


def test_the_checks_see_what_they_look_for() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # a package re-exporting its module is no cycle; the same package reached from outside through its `__init__` is
    assert runtime_cycles({"p": {"p.m"}, "p.m": set()}) == []
    assert runtime_cycles({"p": {"p.m"}, "p.m": {"q"}, "q": {"p.n"}, "p.n": set()}) == [["p", "p.m", "p.n", "q"]]
    assert runtime_cycles({"p": {"p.m"}, "p.m": {"p"}}) == [["p", "p.m"]]
    assert _pipeline("tasks.energy_loop.stages") == "energy" and _pipeline("thresholds.cooling.policy") == "cooling"
    assert _pipeline("registry.energy") == "energy" and _pipeline("tasks.meters.base") is None
    graph = import_graph()
    # a function-level import counts: flows/cli/loops.py imports the loop's flow inside `run_energy_loop`
    assert "flows.energy_loop" in graph["flows.cli.loops"]
    assert "tasks.meters.base" in graph["tasks.meters.rapl"]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    tree = ast.parse("from . import b\nfrom .c import d\nfrom .. import e")
    known = {"p.q.b": Path(), "p.q.c": Path(), "p.e": Path()}
    found = [_imported(node, "p.q.a", known) for node in tree.body]
    assert found == [["p.q.b"], ["p.q.c"], ["p.e"]]
