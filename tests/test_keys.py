"""Keys as a contract: every MLflow tag, metric and parameter key the code writes or reads is a constant declared in a
`keys.py` module of the layer that owns it.

Read from the source (ast), like tests/test_imports.py. A key is looked at where MLflow is called (`set_tag`,
`log_metric`, `RunTag(...)`, `tags=...`, ...) and where the dicts that become tags, metrics or params are built or read
(`tags[...]`, `tags.get(...)`, `{...}` bound to `tags`, `metrics`, `params`, `series`, `hints`): a key there is a
declared constant (an UPPER_CASE name of a keys module), never a string literal, or an f-string or `+` that starts with
a declared `..._PREFIX` constant (families such as `detail.<key>` or `inference_ratio_at_batch_<size>`).

Outside the contract: the loop run's params named after the scenario's fields (`targets.min_accuracy`, flattened from
the schema) and the benchmark runs (`log_benchmark`), whose params are a benchmark's own result line."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("flows", "tasks", "registry", "thresholds", "benchmarks")
# MLflow calls whose second-to-last positional argument is the key (client: run/model first; fluent: key first).
TAG_SETTERS = {"set_tag", "set_model_version_tag", "set_registered_model_tag", "log_param", "set_experiment_tag"}
ENTITIES = {"RunTag", "Metric", "Param"}  # mlflow.entities: the key is the first argument
DICT_WRITERS = {"set_tags", "log_metrics", "log_params"}  # the last positional argument is a dict of keys
LOOP_OPENERS = {"open_loop"}  # (..., params, tags): the loop run's params beyond the scenario's fields, and its tags
DICT_KEYWORDS = {"tags", "metrics", "params"}  # `create_run(..., tags={...})`, `log_batch(..., params=[...])`
# Names of the dicts that become an MLflow run's, version's or logged model's tags, metrics or params.
RECORD = re.compile(r"(^|_)(tags|metrics|params|series|hints)$")
KEY_FORM = re.compile(r"^(mlflow\.[a-zA-Z]+|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*)$")  # MLflow's own keys are camelCase
PREFIX_FORM = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*[._]$")
CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def key_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("keys.py"))


def declarations(path: Path) -> dict[str, str]:
    """A keys module's constants: UPPER_CASE name -> string value (module-level assignments)."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
    return found


def declared() -> tuple[set[str], set[str], set[str]]:
    """(keys, prefixes, constant names) over every keys module."""
    keys, prefixes, names = set(), set(), set()
    for path in key_modules():
        for name, value in declarations(path).items():
            names.add(name)
            (prefixes if name.endswith("_PREFIX") else keys).add(value)
    return keys, prefixes, names


def _name(node: ast.AST) -> str:
    """The identifier a container is reached by: `tags`, `c.tags` -> tags, `extra["metrics"]` -> metrics."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return ""


def _dict_keys(node: ast.AST | None) -> Iterator[ast.AST]:
    if isinstance(node, ast.Dict):
        yield from (k for k in node.keys if k is not None)
    elif isinstance(node, ast.DictComp):
        yield node.key
    elif isinstance(node, ast.IfExp):  # `{...} if x else {}`
        yield from _dict_keys(node.body)
        yield from _dict_keys(node.orelse)


def key_sites(tree: ast.AST) -> Iterator[ast.AST]:
    """Every expression used as an MLflow key (see the module docstring)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in TAG_SETTERS and len(node.args) >= 2:
                yield node.args[-2]
            elif called in ENTITIES and node.args:
                yield node.args[0]
            elif called in DICT_WRITERS and node.args:
                yield from _dict_keys(node.args[-1])
            elif called in LOOP_OPENERS:
                for arg in node.args[-2:]:
                    yield from _dict_keys(arg)
            for kw in node.keywords:
                if kw.arg in DICT_KEYWORDS:
                    yield from _dict_keys(kw.value)
            if isinstance(func, ast.Attribute) and RECORD.search(_name(func.value)):
                if func.attr in ("get", "pop", "setdefault") and node.args:
                    yield node.args[0]
                elif func.attr == "update":
                    for arg in node.args:
                        yield from _dict_keys(arg)
                    for kw in node.keywords:
                        if kw.arg is not None:
                            yield ast.Constant(kw.arg, lineno=node.lineno)
        elif isinstance(node, ast.Subscript) and RECORD.search(_name(node.value)):
            yield node.slice
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(RECORD.search(_name(t)) for t in targets):
                yield from _dict_keys(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and RECORD.search(node.name):
            for inner in ast.walk(node):  # `def meter_tags(...): return {...}`
                if isinstance(inner, ast.Return):
                    yield from _dict_keys(inner.value)
        elif isinstance(node, ast.Compare) and any(RECORD.search(_name(c)) for c in node.comparators):
            if isinstance(node.ops[0], (ast.In, ast.NotIn)):
                yield node.left


def problem(key: ast.AST, keys: set[str], names: set[str]) -> str | None:
    """Why `key` breaks the contract (None: it keeps it, or it is a variable the scan cannot follow)."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        if key.value in keys:
            return f"{key.value!r} is written as a literal (declared: use its constant)"
        return f"{key.value!r} is not declared"
    head = key.values[0] if isinstance(key, ast.JoinedStr) and key.values else None
    if isinstance(head, ast.FormattedValue):
        head = head.value
    if isinstance(key, ast.BinOp) and isinstance(key.op, ast.Add):
        head = key.left
    if isinstance(key, (ast.JoinedStr, ast.BinOp)):
        if head is not None and _name(head).endswith("_PREFIX"):
            return problem(head, keys, names)
        return f"{ast.unparse(key)} does not start with a declared ..._PREFIX constant"
    constant = _name(key) if isinstance(key, (ast.Name, ast.Attribute)) else ""
    if CONSTANT_NAME.match(constant) and constant not in names:
        return f"{constant} is not a constant of a keys module"
    return None


def undeclared(paths: list[Path]) -> list[str]:
    keys, _, names = declared()
    found = []
    for path in paths:
        for key in key_sites(ast.parse(path.read_text(encoding="utf-8"))):
            why = problem(key, keys, names)
            if why:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{where}:{getattr(key, 'lineno', '?')}: {why}")
    return found


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p.name != "keys.py")


def test_every_key_the_code_writes_or_reads_is_declared() -> None:
    found = undeclared(_sources())
    assert not found, "keys not declared in a keys.py module:\n" + "\n".join(found)


def test_declared_keys_are_unique_and_well_formed() -> None:
    seen: dict[str, str] = {}
    wrong = []
    for path in key_modules():
        for name, value in declarations(path).items():
            where = f"{path.relative_to(ROOT)}:{name}"
            form = PREFIX_FORM if name.endswith("_PREFIX") else KEY_FORM
            if not CONSTANT_NAME.match(name):
                wrong.append(f"{where}: a key's constant is named in UPPER_CASE")
            if not form.match(value):
                wrong.append(f"{where} = {value!r} does not match {form.pattern}")
            if value in seen:
                wrong.append(f"{where} = {value!r} is also {seen[value]}")
            seen[value] = where
    assert len(key_modules()) >= 3 and len(seen) > 50, "the scan found the keys modules"
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ('mc.set_tag(run_id, "made.up", "1")', "'made.up' is not declared"),
        ('mc.set_model_version_tag(name, v, "made_up", "1")', "'made_up' is not declared"),
        ('Metric("made_up", 1.0, 0, 0)', "'made_up' is not declared"),
        ('c.create_run(e, tags={"made_up": "x"})', "'made_up' is not declared"),
        ('tags["made_up"] = "x"', "'made_up' is not declared"),
        ('p.tags.update({"made_up": "x"})', "'made_up' is not declared"),
        ('extra["metrics"].update(made_up=1.0)', "'made_up' is not declared"),
        ('x = version_tags.get("made_up")', "'made_up' is not declared"),
        ('hints = {"made_up": "x"}', "'made_up' is not declared"),
        ('def meter_tags(m):\n    return {"made_up": m} if m else {}', "'made_up' is not declared"),
        ('open_loop(EXPERIMENT, name, {**settings, "made_up": 1}, tags)', "'made_up' is not declared"),
        ('mc.set_tag(run_id, f"made_up.{k}", v)', "does not start with a declared ..._PREFIX constant"),
        ('mc.set_tag(run_id, f"detail.{k}", v)', "does not start with a declared ..._PREFIX constant"),
        ('mc.set_tag(run_id, "accuracy", "1")', "'accuracy' is written as a literal (declared: use its constant)"),
        ("mc.set_tag(run_id, MADE_UP_PREFIX + k, v)", "MADE_UP_PREFIX is not a constant of a keys module"),
        ("mc.set_tag(run_id, MADE_UP_TAG, v)", "MADE_UP_TAG is not a constant of a keys module"),
    ],
)
def test_the_scan_catches_an_undeclared_key(tmp_path: Path, source: str, bad: str) -> None:
    module = tmp_path / "module.py"
    module.write_text(source + "\n")
    assert any(bad in line for line in undeclared([module]))


def test_declared_constants_and_prefixes_pass_the_scan(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "mc.set_tag(run_id, keys.ACCURACY, '1')\n"
        "tags[f'{keys.DETAIL_PREFIX}{k}'] = v\n"
        "tags[DETAIL_PREFIX + k] = v\n"
        "mc.set_tag(run_id, name, v)\n"  # a variable: the scan cannot follow it, the sites that build it are scanned
    )
    assert undeclared([module]) == []
