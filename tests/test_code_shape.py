"""The code stays readable: no module over 600 lines and no function over 8 parameters, outside the numba kernels
(whose arrays and arguments numba needs flat)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "thresholds", "registry", "benchmarks")
MAX_MODULE_LINES = 600
MAX_PARAMETERS = 8


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _is_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A numba-compiled function: decorated with njit/jit (called or bare, under any module prefix)."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("njit", "jit"):
            return True
    return False


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = node.args
    return [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]


def test_the_scan_sees_the_packages_and_the_kernels() -> None:
    modules = _modules()
    assert len(modules) > 50
    kernels = [f.name for p in modules for f in _functions(ast.parse(p.read_text())) if _is_kernel(f)]
    assert "_room_run" in kernels and "_seed_run" in kernels


def test_no_module_over_600_lines_outside_the_numba_kernels() -> None:
    too_long = []
    for path in _modules():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and not any(_is_kernel(f) for f in _functions(ast.parse(text))):
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert too_long == [], too_long


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("def f(a, b, c, d, e, f, g, h): pass", False),
        ("def f(a, b, c, d, e, f, g, h, i): pass", True),
        ("class C:\n    def m(self, a, b, c, d, e, f, g, h): pass", False),
        ("def f(a, b, c, d, e, *, f, g, h, i): pass", True),
        ("@njit(cache=True)\ndef f(a, b, c, d, e, f, g, h, i): pass", False),
        ("@numba.njit\ndef f(a, b, c, d, e, f, g, h, i): pass", False),
    ],
)
def test_the_parameter_rule(source: str, flagged: bool) -> None:
    node = _functions(ast.parse(source))[0]
    assert (len(_parameters(node)) > MAX_PARAMETERS and not _is_kernel(node)) is flagged


def test_no_function_over_8_parameters_outside_the_numba_kernels() -> None:
    too_many = [
        f"{path.relative_to(ROOT)}:{f.lineno} {f.name}({len(_parameters(f))} parameters)"
        for path in _modules()
        for f in _functions(ast.parse(path.read_text()))
        if len(_parameters(f)) > MAX_PARAMETERS and not _is_kernel(f)
    ]
    assert too_many == [], too_many
