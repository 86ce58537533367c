"""Pages generated at build time (mkdocs.yml `hooks:`), so the reference never drifts from the code.

- reference/commands.md          every subcommand and flag, from the CLI's argparse parser (flows/cli/app.py)
- reference/scenario.md          every section and field of the energy scenario (thresholds/energy/schema.py)
- reference/cooling-scenario.md  the same for the cooling scenario (thresholds/cooling/schema.py)
- results.md                     the newest result of each benchmark, from benchmarks/results/*.json

and, where a page holds the marker `<!-- generated: NAME -->`, NAME's insert:

- `rungs`              the ladder's rung table as the code has it (`RUNGS`, thresholds/energy/policy)
- `bundled-scenarios`  the scenario files in thresholds/ with their descriptions
- `layout`             every package and module with the first sentence of its docstring

Each generator is a plain function returning markdown (tests/test_docs.py checks what they name, too).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MARKER = "<!-- generated: {} -->"


# --- mkdocs events -------------------------------------------------------------------------------------------------


def generated_pages() -> dict[str, str]:
    """src path in the docs -> markdown."""
    from thresholds.cooling.schema import CoolingScenario
    from thresholds.energy.schema import Scenario

    return {
        "reference/commands.md": commands_page(),
        "reference/scenario.md": scenario_page(
            Scenario,
            "Energy scenario reference",
            "A scenario file of the energy loop (`energy-loop run --scenario`, `energy-loop validate`): "
            "[Scenarios](../scenarios.md) explains them.",
        ),
        "reference/cooling-scenario.md": scenario_page(
            CoolingScenario,
            "Cooling scenario reference",
            "A scenario file of the cooling agent (`energy-loop cooling run --scenario`, `energy-loop cooling "
            "validate`): [The cooling agent](../cooling-agent.md) explains them.",
        ),
        "results.md": results_page(),
    }


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for src, content in generated_pages().items():
        files.append(File.generated(config, src, content=content))
    return files


def inserts() -> dict[str, Any]:
    """marker name -> the function that renders it."""
    return {
        "rungs": rungs_table,
        "cooling-rungs": cooling_rungs_table,
        "bundled-scenarios": bundled_scenarios,
        "layout": layout,
    }


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for name, render in inserts().items():
        if MARKER.format(name) in markdown:
            markdown = markdown.replace(MARKER.format(name), render())
    return markdown


# --- the command reference -----------------------------------------------------------------------------------------


def commands_page() -> str:
    from flows.cli.app import build_parser

    lines = [
        "# Command reference",
        "",
        "Generated from the command's own parser (`flows/cli/`) when the docs are built. Exit codes: 0 the loop "
        "ended `PASSED` (or the command did what it says), 1 it did not pass or a server failed, 2 bad input (one line "
        "naming the field, the value and what was expected), 130 / 143 stopped by Ctrl-C / SIGTERM (one line; a loop's "
        "run marked KILLED, nothing registered). `energy-cooling ARGS` is `energy-loop cooling ARGS`.",
        "",
    ]
    lines += _command(build_parser(), 2)
    return "\n".join(lines) + "\n"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (its parser, its one-line help), in the parser's order."""
    found: dict[str, tuple[argparse.ArgumentParser, str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found[name] = (sub, helps.get(name, ""))
    return found


def _command(parser: argparse.ArgumentParser, level: int, summary: str = "") -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary or parser.description:
        lines += [_md(summary or parser.description or ""), ""]
    formatter = argparse.HelpFormatter(parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    lines += ["```", formatter.format_help().strip(), "```", ""]
    rows = [action for action in parser._actions if _shown_action(action)]
    if rows:
        lines += ["| argument | value | default | what it does |", "|---|---|---|---|"]
        for action in rows:
            lines.append(
                f"| {_argument(action)} | {_value(action)} | {_default(action)} | {_md(_help(formatter, action))} |"
            )
        lines.append("")
    for sub, help_text in subcommands(parser).values():
        lines += _command(sub, min(level + 1, 4), help_text)
    return lines


def _shown_action(action: argparse.Action) -> bool:
    return (
        not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and action.help != argparse.SUPPRESS
    )


def _argument(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.metavar or action.dest}`"
    return names + (" (required)" if action.required and action.option_strings else "")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "flag"
    if action.choices:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    kind = getattr(action.type, "__name__", None) if action.type else None
    value = f"`{action.metavar}`" if action.metavar else {"int": "integer", "float": "number"}.get(kind or "", "text")
    return value + (" (repeatable)" if isinstance(action, argparse._AppendAction) else "")


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, "", [], argparse.SUPPRESS) or not action.option_strings:
        return ""
    return f"`{action.default}`"


def _help(formatter: argparse.HelpFormatter, action: argparse.Action) -> str:
    return formatter._expand_help(action) if action.help else ""


# --- the scenario references ---------------------------------------------------------------------------------------


def scenario_page(model: type, title: str, intro: str) -> str:
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "Generated from the pydantic schema (`" + _source_path(model) + "`) when the docs are built. Unknown keys, "
        'NaN and infinities are errors everywhere; *strict* sections do not coerce values either (`"3"` is not a '
        "number). Every field is optional unless its default says *required*.",
        "",
    ]
    for path, section in _sections(model, ()):
        lines += _section(path, section)
    return "\n".join(lines) + "\n"


def _sections(model: type, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], type]]:
    """The model itself, then every nested section, depth first, in field order."""
    yield path, model
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        if _is_section(field.annotation):
            yield from _sections(field.annotation, (*path, name))


def _is_section(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section(path: tuple[str, ...], model: type) -> list[str]:
    title = ".".join(path) if path else "top level"
    lines = [f"## `{title}`" if path else "## Top level", ""]
    doc = model.__dict__.get("__doc__")
    if doc:
        lines += [_md(inspect.cleandoc(doc)), ""]
    config = getattr(model, "model_config", {})
    if config.get("strict"):
        lines += ["*Strict*: values are not coerced.", ""]
    lines += ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    checks = _field_checks(model)
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        if _is_section(field.annotation):
            key = ".".join((*path, name))
            lines.append(f"| `{name}` | section | | | see [`{key}`](#{_anchor(key)}) |")
            continue
        constraints = [*_constraints(field.metadata), *checks.get(name, [])]
        lines.append(
            f"| `{name}` | {_type(field.annotation)} | {_field_default(field)} | {_md('; '.join(constraints))} | "
            f"{_md(field.description or '')} |"
        )
    lines.append("")
    together = _model_checks(model)
    if together:
        lines += ["Checked together: " + "; ".join(f"{_md(c)}" for c in together) + ".", ""]
    return lines


def _anchor(key: str) -> str:
    """The id Python-Markdown's toc gives the heading `## \\`key\\``."""
    return "".join(ch for ch in key.lower() if ch.isalnum() or ch in "_-")


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is tuple and args and Ellipsis not in args:
        kinds = dict.fromkeys(_type(a) for a in args)
        return f"list of {len(args)}: " + " or ".join(kinds)
    if origin in (list, tuple):
        kinds = dict.fromkeys(_type(a) for a in args if a is not Ellipsis)
        return "list of " + (" or ".join(kinds) or "values")
    if origin is dict:
        return "mapping"
    return {"int": "integer", "float": "number", "str": "text", "bool": "true/false"}.get(
        getattr(annotation, "__name__", ""), str(annotation)
    )


def _field_default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"


def _constraints(metadata: list[Any]) -> list[str]:
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for item in metadata:
        for attr, symbol in symbols.items():
            if getattr(item, attr, None) is not None:
                out.append(f"{symbol} {getattr(item, attr)}")
        if getattr(item, "min_length", None) is not None:
            out.append(f"length ≥ {item.min_length}")
        if getattr(item, "max_length", None) is not None:
            out.append(f"length ≤ {item.max_length}")
    return out


def _field_checks(model: type) -> dict[str, list[str]]:
    """field -> the messages of its own validators (what a bad value is told)."""
    checks: dict[str, list[str]] = {}
    for decorator in model.__pydantic_decorators__.field_validators.values():  # type: ignore[attr-defined]
        for field in decorator.info.fields:
            checks.setdefault(field, []).extend(_raised(decorator.func))
    return checks


def _model_checks(model: type) -> list[str]:
    messages: list[str] = []
    for name, decorator in model.__pydantic_decorators__.model_validators.items():  # type: ignore[attr-defined]
        messages += _raised(decorator.func) or [name.strip("_").replace("_", " ")]
    return messages


def _raised(func: Any) -> list[str]:
    """The messages of the ValueErrors a validator raises (an f-string's values shown as their field or …),
    following helper functions of its module one call deep."""
    func = getattr(func, "__func__", func)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError):
        return []
    module = sys.modules.get(func.__module__)
    messages = _messages(tree, {})
    if module is not None:
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if not isinstance(call.func, ast.Name):
                continue
            helper = getattr(module, call.func.id, None)
            if not inspect.isfunction(helper):
                continue
            params = list(inspect.signature(helper).parameters)
            bound = {p: _shown(arg) for p, arg in zip(params, call.args, strict=False)}
            messages += _messages(ast.parse(textwrap.dedent(inspect.getsource(helper))), bound)
    return messages


def _messages(tree: ast.AST, bound: dict[str, str]) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            if getattr(node.exc.func, "id", None) != "ValueError":
                continue
            text = _text(node.exc.args[0], bound)
            if text:
                out.append(text)
    return out


def _text(node: ast.expr, bound: dict[str, str]) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(part, bound) for part in node.values)
    if isinstance(node, ast.FormattedValue):
        return bound.get(getattr(node.value, "id", ""), _shown(node.value))
    return ""


def _shown(node: ast.expr) -> str:
    """A value in a message: a quoted name as itself, anything else (the value given) as …."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return "…"


def _source_path(model: type) -> str:
    return str(Path(inspect.getfile(model)).resolve().relative_to(ROOT))


# --- the layout ----------------------------------------------------------------------------------------------------

PACKAGES = ("flows", "tasks", "registry", "thresholds", "benchmarks", "examples")


def layout() -> str:
    """Each package's modules with the first sentence of their docstrings; tasks/ by subpackage, after its own
    docstring (the layers)."""
    lines: list[str] = []
    for package in PACKAGES:
        folder = ROOT / package
        lines += [
            f"### `{package}/`",
            "",
            _md(_summary(folder / "__init__.py")) if (folder / "__init__.py").exists() else "",
        ]
        if package == "tasks":
            doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
            lines += ["", "```", doc.split("\n\n", 1)[-1] if "\n\n" in doc else doc, "```", ""]
            for sub in sorted(p for p in folder.iterdir() if (p / "__init__.py").exists()):
                lines += [f"#### `tasks/{sub.name}/`", "", *_module_table(sub), ""]
        else:
            lines += ["", *_module_table(folder), ""]
    return "\n".join(lines) + "\n"


def _module_table(folder: Path) -> list[str]:
    rows = ["| module | what it is |", "|---|---|"]
    for path in sorted(folder.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == folder:
            continue
        rel = path.relative_to(ROOT)
        shown = rel.parent if path.name == "__init__.py" else rel
        rows.append(f"| `{shown}` | {_md(_summary(path))} |")
    return rows


def _summary(path: Path) -> str:
    """The first sentence of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n", 1)[0].split())
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`])", first)
    return first if end is None else first[: end.start() + 1]


# --- the bundled scenarios ---------------------------------------------------------------------------------------


def bundled_scenarios() -> str:
    """Every scenario file shipped in thresholds/: its name, pipeline and description."""
    import yaml

    from thresholds import SCENARIO_DIR
    from thresholds.cooling.schema import BUNDLED

    lines = ["| name | pipeline | what it asks |", "|---|---|---|"]
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        pipeline = "cooling agent" if path.stem in BUNDLED else "energy loop"
        lines.append(
            f"| `{path.stem}` (`thresholds/{path.name}`) | {pipeline} | {_md(str(doc.get('description', '')))} |"
        )
    return "\n".join(lines) + "\n"


# --- the rung table ------------------------------------------------------------------------------------------------


def rungs_table(rungs_module: str = "thresholds.energy.policy") -> str:
    """`RUNGS` in order: each entry's kind and its other plain fields (whatever the table holds)."""
    import importlib

    rungs = list(importlib.import_module(rungs_module).RUNGS)
    names = _entry_fields(rungs[0])
    label = "kind" if "kind" in names else names[0]
    fields = [f for f in names if f != label and not _callable_field(rungs, f)]
    lines = [
        "| " + " | ".join(["#", "rung kind", *(f.replace("_", " ") for f in fields)]) + " |",
        "|" + "---|" * (2 + len(fields)),
    ]
    for i, rung in enumerate(rungs, 1):
        cells = [str(i), f"`{getattr(rung, label)}`", *(_cell(getattr(rung, f)) for f in fields)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cooling_rungs_table() -> str:
    """The cooling escalation's `RUNGS` (thresholds/cooling/rungs.py), as the energy loop's."""
    return rungs_table("thresholds.cooling.rungs")


def _entry_fields(entry: Any) -> list[str]:
    """The fields of a table entry: a NamedTuple, a dataclass or a pydantic model."""
    import dataclasses

    if hasattr(type(entry), "_fields"):
        return list(type(entry)._fields)
    if dataclasses.is_dataclass(entry):
        return [f.name for f in dataclasses.fields(entry)]
    if hasattr(type(entry), "model_fields"):
        return list(type(entry).model_fields)
    return list(vars(entry))


def _callable_field(rungs: Any, field: str) -> bool:
    return any(callable(getattr(r, field)) for r in rungs)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and " " in value:  # prose (what a rung makes): as written, not as code
        return value.replace("|", "\\|")
    if isinstance(value, tuple | list | set | frozenset):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


# --- the results page ----------------------------------------------------------------------------------------------


def benchmark_scripts() -> dict[str, str]:
    """script name -> the first sentence of its docstring, for every benchmark script."""
    return {
        path.stem: _summary(path)
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        if not path.stem.startswith("_") and path.stem != "results"
    }


def results_page(directory: Path | None = None) -> str:
    if str(ROOT) not in sys.path:  # benchmarks/ is no installed package (mkdocs restores sys.path after loading hooks)
        sys.path.insert(0, str(ROOT))
    from benchmarks.results import load

    records = load(directory)
    lines = [
        "# Results",
        "",
        "Generated from the result files in `benchmarks/results/` when the docs are built: each benchmark script "
        "writes one per run (`benchmarks/results.py`), with the machine, the commit and the command. Nothing here is "
        "typed by hand. Energy on a machine without RAPL or NVML is CodeCarbon's estimate (load × TDP): each result "
        "says so in its `energy_source` / `energy_estimated` fields where it measured energy. "
        "[Benchmarks](benchmarks.md) says what each script measures.",
        "",
    ]
    for script, summary in benchmark_scripts().items():
        mine = [r for r in records if r.get("benchmark") == script]
        lines += [f"## {script}", "", f"`benchmarks/{script}.py`: {_md(summary)}", ""]
        if not mine:
            lines += [
                f"No result yet: `python benchmarks/{script}.py` on a quiet machine writes one.",
                "",
            ]
            continue
        lines += _result(mine[0])
        if len(mine) > 1:
            lines += ["Older results:", ""]
            lines += [f"- {_when(r)}: `benchmarks/results/{r['file']}`, {_commit(r)}" for r in mine[1:]]
            lines.append("")
    return "\n".join(lines) + "\n"


def _result(record: dict[str, Any]) -> list[str]:
    lines = [f"Newest: **{_when(record)}**, {_commit(record)}, on {_machine(record.get('machine') or {})}.", ""]
    if record.get("source"):
        lines += [f"Source: {_md(str(record['source']))}.", ""]
    if record.get("command"):
        lines += [f"Command: `{record['command']}` (file `benchmarks/results/{record['file']}`)", ""]
    result = record.get("result") or {}
    scalars = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    flat = {k: v for k, v in result.items() if isinstance(v, dict) and all(_scalar(x) for x in v.values())}
    if scalars or flat:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| `{k}` | {_md(_value_text(v))} |" for k, v in scalars.items()]
        lines += [
            f"| `{k}` | {_md(', '.join(f'{a}: {_value_text(b)}' for a, b in v.items()))} |" for k, v in flat.items()
        ]
        lines.append("")
    for key, value in result.items():
        rows = _rows(value) if key not in flat else None
        if rows:
            lines += [f"`{key}`:", "", *_table(rows), ""]
    lines += [
        '??? note "The whole result file"',
        "",
        "    ```json",
        *("    " + line for line in json.dumps(record, indent=2).splitlines()),
        "    ```",
        "",
    ]
    return lines


def _rows(value: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """A mapping or list of records as (row name, record), else None."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(str(i), v) for i, v in enumerate(value, 1)]
    return None


def _table(rows: list[tuple[str, dict[str, Any]]], max_columns: int = 9) -> list[str]:
    columns: list[str] = []
    for _, record in rows:
        columns += [k for k, v in record.items() if _scalar(v) and k not in columns]
    columns = columns[:max_columns]
    out = ["| | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, record in rows:
        out.append(f"| {_md(name)} | " + " | ".join(_md(_value_text(record.get(c))) for c in columns) + " |")
    return out


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _value_text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _when(record: dict[str, Any]) -> str:
    return str(record.get("date", "undated")).replace("T", " ")


def _commit(record: dict[str, Any]) -> str:
    commit = record.get("commit") or {}
    if not commit.get("hash"):
        return "commit not recorded"
    return f"commit `{commit['hash'][:10]}`" + (" with uncommitted changes" if commit.get("dirty") else "")


def _machine(machine: dict[str, Any]) -> str:
    if machine.get("note"):
        return _md(str(machine["note"]))
    parts = [str(machine.get("cpu") or "an unnamed CPU")]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("memory_gib"):
        parts.append(f"{machine['memory_gib']} GiB")
    parts.append(", ".join(machine.get("gpus") or []) or "no GPU")
    return ", ".join(parts)


def _md(text: str) -> str:
    """Text safe in a table cell, on one line: outside code spans, pipes escaped and angle brackets as entities
    (inside them the table splitter leaves pipes alone and markdown escapes the rest)."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)
