"""The docs name only what exists. README.md, every page of docs/ and the pages the build generates
(docs/hooks.py) are read for what they name in code (spans and blocks) and links:

- a repository path (`tasks/serving/scorer.py`, `thresholds/*.yaml`, `infra/`, `examples/x.py:load`) exists; a
  path git ignores is one a user or a run creates, and `<placeholders>` stand for any name;
- a module of the project (`tasks.models:mlp`, `flows.energy_loop.energy_loop`) exists and defines that name;
- an `energy-loop` command (`energy-loop cooling run --days 3`) names subcommands and flags the parser has;
- a benchmark command (`benchmarks/paper_table.py --repeats 5`) names flags its `--help` shows;
- a relative link points at a file.

Prose outside code is not read, and neither are commands of other tools.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

PACKAGES = ("flows", "tasks", "registry", "thresholds", "examples", "benchmarks")
ROOT_FILES = ("pyproject.toml", "prefect.yaml", "mkdocs.yml", "Makefile", "README.md")
BENCHMARK = re.compile(r"(?:^|(?<=[\s/`\"'(]))benchmarks/(\w+)\.py(.*)$")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+(?::\w+)?$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^([ \t]*)(```|~~~)[^\n]*\n(.*?)^\1\2[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)


@functools.cache
def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def documents() -> dict[str, str]:
    """Page name -> markdown: the README, the docs as written (generated inserts filled in), the generated pages."""
    found = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for path in sorted((ROOT / "docs").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for name, render in hooks().inserts().items():
            text = text.replace(hooks().MARKER.format(name), render())
        found[str(path.relative_to(ROOT))] = text
    for src, text in hooks().generated_pages().items():
        found[f"docs/{src} (generated)"] = text
    return found


def code_of(markdown: str) -> list[str]:
    """The text of every fenced block and inline code span."""
    blocks = [m.group(3) for m in FENCE.finditer(markdown)]
    rest = FENCE.sub("", markdown)
    return blocks + [m.group(2) for m in SPAN.finditer(rest)]


# --- paths -----------------------------------------------------------------------------------------------------------


@functools.cache
def tracked_tops() -> frozenset[str]:
    """The repository's top-level names, as git tracks them (a developer's .venv or site/ is no repository path)."""
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return frozenset(p.name for p in ROOT.iterdir())
    return frozenset(line.split("/", 1)[0] for line in done.stdout.splitlines())


def path_tokens(code: str) -> list[str]:
    """Tokens of a code text that name a repository path."""
    code = re.sub(r"<[^<>\n]*>", "<*>", code)  # a placeholder may hold spaces: `<script>-<UTC date-time>`
    tokens = []
    for token in re.split(r"[\s,;()'\"=`\[\]{}]+", code):
        token = token.rstrip(".:").removeprefix("./")
        top = token.split("/", 1)[0]
        if ("/" in token and top in tracked_tops()) or token in ROOT_FILES:
            tokens.append(token)
    return tokens


def ignored(paths: list[str]) -> set[str]:
    if not paths:
        return set()
    done = subprocess.run(
        ["git", "check-ignore", "--stdin"], cwd=ROOT, input="\n".join(paths), capture_output=True, text=True
    )
    return set(done.stdout.splitlines())


def defined_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top level (nested `if` and `try` blocks included)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            body += node.body + node.orelse + getattr(node, "finalbody", [])
    return names


def module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def path_problem(token: str) -> str | None:
    """Why a path token names nothing, or None."""
    token, _, name = token.partition(":") if re.search(r"\.py:\w", token) else (token, "", "")
    if "<*>" in token:  # a placeholder: the folder before it must exist
        folder = ROOT / token.split("<*>", 1)[0]
        return None if folder.parent.is_dir() or folder.is_dir() else f"no folder {folder.relative_to(ROOT)}"
    if "*" in token:
        return None if list(ROOT.glob(token)) else "matches no file"
    target = ROOT / token
    if not (target.exists() or (not target.suffix and target.with_suffix(".py").is_file())):
        if any(re.fullmatch(r"[A-Z][A-Z_]+", part.split(".")[0]) for part in Path(token).parts[1:]):
            return path_problem(re.sub(r"(?<=/)[A-Z][A-Z_]+(?=[./]|$)", "<*>", token))  # `benchmarks/NAME.py`
        return "does not exist"
    if name and name not in defined_names(target):
        return f"{target.name} defines no {name!r}"
    return None


def dotted_problem(token: str) -> str | None:
    """Why a `pkg.module:name` or `pkg.module.name` names nothing, or None."""
    module, _, name = token.partition(":")
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:cut]))
        if path is None:
            continue
        attribute = name or (parts[cut] if cut < len(parts) else "")
        if attribute and attribute not in defined_names(path):
            return f"{path.relative_to(ROOT)} defines no {attribute!r}"
        return None
    return "is no module of the project"


def path_problems(documents: dict[str, str]) -> list[str]:
    named: dict[str, set[str]] = {}
    for page, text in documents.items():
        for code in code_of(text):
            for token in path_tokens(code):
                named.setdefault(token, set()).add(page)
            for token in re.split(r"[\s,;()'\"=`\[\]{}]+", code):
                if DOTTED.match(token.rstrip(".:")):
                    named.setdefault(token.rstrip(".:"), set()).add(page)
    skip = ignored([t for t in named if not DOTTED.match(t) and "*" not in t])
    problems = []
    for token, pages in sorted(named.items()):
        if token in skip:
            continue
        problem = dotted_problem(token) if DOTTED.match(token) else path_problem(token)
        if problem:
            problems.append(f"{token}: {problem} (named in {', '.join(sorted(pages))})")
    return problems


def link_problems(documents: dict[str, str]) -> list[str]:
    generated = {ROOT / "docs" / src for src in hooks().generated_pages()}
    problems = []
    for page, text in documents.items():
        if page.endswith("(generated)"):
            continue  # its links are checked by `mkdocs build --strict`, against the generated pages too
        for target in LINK.findall(FENCE.sub("", text)):
            if re.match(r"^[a-z]+:|^#", target):
                continue
            where = (ROOT / page).parent / target.split("#", 1)[0]
            if not where.exists() and where.resolve() not in generated:
                problems.append(f"{page}: link to {target}: no such file")
    return problems


# --- commands --------------------------------------------------------------------------------------------------------


def command_lines(documents: dict[str, str]) -> list[tuple[str, str, str]]:
    """(page, the command's name, what follows it) for every `energy-loop` command a code text runs: the first word of
    a line or of a part after `&&`, `;` or `|` (after `VAR=value` settings and a folder such as `.venv/bin/`), or
    `python -m flows.cli`. A name elsewhere (`prefect work-pool create energy-loop`) is an argument, not a command."""
    found = []
    for page, text in documents.items():
        for code in code_of(text):
            for line in code.splitlines():
                for part in re.split(r"&&|;|\s\|\s|\|\|", line.split(" #", 1)[0]):
                    words = part.split()
                    while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
                        words.pop(0)
                    first = words[0].rsplit("/", 1)[-1] if words else ""
                    if first in ("energy-loop", "energy-cooling"):
                        found.append((page, first, " ".join(words[1:])))
                    elif first.startswith("python") and words[1:3] == ["-m", "flows.cli"]:
                        found.append((page, "energy-loop", " ".join(words[3:])))
    return found


def benchmark_lines(documents: dict[str, str]) -> list[tuple[str, str, str]]:
    """(page, script, what follows it on its line) for every `benchmarks/X.py` a code text names."""
    found = []
    for page, text in documents.items():
        for code in code_of(text):
            for line in code.splitlines():
                for match in BENCHMARK.finditer(line.split(" #", 1)[0]):
                    found.append((page, match.group(1), re.split(r"&&|;|\s\|\s", match.group(2))[0]))
    return found


def _words(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def placeholder(word: str) -> bool:
    """`<sub>`, `{run,validate}`, `...`, `MODEL`: a stand-in, not a name to check."""
    return bool(re.search(r"[<>{}]|\.\.\.|…", word)) or (word.isupper() and word.isalpha())


def command_problem(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """Why `words` (after the command's name) are not subcommands and flags of `parser`, or None."""
    words = [w for w in (word.strip("[]") for word in words) if w]
    subs = hooks().subcommands(parser)
    while subs and words and not words[0].startswith("-"):
        word = words.pop(0)
        if placeholder(word):
            return None
        names = word.split("|")
        unknown = [n for n in names if n not in subs]
        if unknown:
            return f"no subcommand {unknown[0]!r} in {parser.prog} (has {', '.join(subs)})"
        if len(names) > 1:
            return None  # alternatives: each exists; what follows may belong to any of them
        parser = subs[names[0]][0]
        subs = hooks().subcommands(parser)
    options = {s for action in parser._actions for s in action.option_strings}
    for word in words:
        for flag in word.split("|"):
            flag = flag.strip("[]").split("=", 1)[0]
            if flag.startswith("-") and not placeholder(flag) and flag not in options:
                return f"no flag {flag} in {parser.prog}"
    return None


def command_problems(documents: dict[str, str]) -> list[str]:
    from flows.cli.app import build_parser

    root = build_parser()
    roots = {"energy-loop": root, "energy-cooling": hooks().subcommands(root)["cooling"][0]}
    problems = []
    for page, name, rest in command_lines(documents):
        problem = command_problem(roots[name], _words(rest))
        if problem:
            problems.append(f"{page}: `{name} {rest}`: {problem}")
    return sorted(set(problems))


@functools.cache
def benchmark_help(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"benchmarks/{script}.py --help exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def benchmark_problems(documents: dict[str, str]) -> list[str]:
    problems = []
    for page, script, rest in benchmark_lines(documents):
        if not (ROOT / "benchmarks" / f"{script}.py").is_file():
            continue  # the path check names it
        for word in _words(rest):
            flag = word.strip("[]\"',").split("=", 1)[0]  # a result file's JSON quotes its command line
            if flag.startswith("--") and not re.search(
                rf"(?<![\w-]){re.escape(flag)}(?![\w-])", benchmark_help(script)
            ):
                problems.append(f"{page}: benchmarks/{script}.py has no flag {flag}")
    return sorted(set(problems))


# --- the tests -------------------------------------------------------------------------------------------------------


def test_every_path_the_docs_name_exists() -> None:
    problems = path_problems(documents()) + link_problems(documents())
    assert not problems, "the docs name what does not exist:\n" + "\n".join(problems)


def test_every_command_and_flag_the_docs_name_is_in_the_parser() -> None:
    problems = command_problems(documents())
    assert not problems, "the docs name commands the parser does not have:\n" + "\n".join(problems)


def test_every_benchmark_flag_the_docs_name_is_in_the_script() -> None:
    problems = benchmark_problems(documents())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", sorted(hooks().benchmark_scripts()))
def test_every_benchmark_script_answers_help(script: str) -> None:
    assert "usage:" in benchmark_help(script)


def test_a_stale_path_a_command_and_a_flag_are_caught() -> None:
    page = {
        "docs/x.md": "See `tasks/serving/no_such.py`, `tasks.models:no_such` and run\n"
        "```\nenergy-loop no-such-command --port 1\nenergy-loop run --no-such-flag\n"
        "python benchmarks/loop.py --no-such\n```\n"
    }
    assert [p.split(":")[0] for p in path_problems(page)] == ["tasks.models", "tasks/serving/no_such.py"]
    assert len(command_problems(page)) == 2
    assert benchmark_problems(page) == ["docs/x.md: benchmarks/loop.py has no flag --no-such"]


def test_prose_and_other_tools_are_not_read() -> None:
    spans = [
        "energy-loop-<dataset>",
        "energy-loop.loop.failed",
        "energy-loop/dev-cpu",
        "train_energy_attribution.machine_energy_j",
        "energy-loop <command> --help",
        "infra/.env",
        "benchmarks/results/<script>-<UTC date-time>.json",
        "energy-loop webhook serve|register",
    ]
    block = [
        "pytest -m 'not browser'",
        "prefect work-pool create energy-loop --type process",
        "energy-loop run --scenario PATH|NAME [--model PKG.MODULE:FACTORY]",
    ]
    text = "The energy-loop run tasks/nothing.py in prose, " + ", ".join(f"`{s}`" for s in spans)
    page = {"docs/x.md": text + "\n```\n" + "\n".join(block) + "\n```\n"}
    assert path_problems(page) == []
    assert command_problems(page) == []


def test_the_generated_references_cover_every_field_subcommand_and_flag() -> None:
    from flows.cli.app import build_parser
    from thresholds.cooling.schema import CoolingScenario
    from thresholds.energy.schema import Scenario

    pages = hooks().generated_pages()
    for model, page in ((Scenario, "reference/scenario.md"), (CoolingScenario, "reference/cooling-scenario.md")):
        for path, section in hooks()._sections(model, ()):
            for field in section.model_fields:
                assert f"| `{field}` |" in pages[page], f"{'.'.join((*path, field))} is missing from {page}"

    def walk(parser: argparse.ArgumentParser) -> None:
        assert f"`{parser.prog}`" in pages["reference/commands.md"], parser.prog
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in pages["reference/commands.md"], f"{parser.prog} {option}"
        for sub, _ in hooks().subcommands(parser).values():
            walk(sub)

    walk(build_parser())


def test_the_results_page_shows_the_newest_result_and_lists_the_older(tmp_path: Path) -> None:
    import datetime as dt

    from benchmarks.results import save

    older = save({"passed": 8, "tried": 9}, "panel", tmp_path, ["benchmarks/panel.py"], dt.datetime(2026, 1, 1, 12))
    newer = save({"passed": 9, "tried": 9, "datasets": {"iris": {"state": "PASSED"}}}, "panel", tmp_path, ["x"])
    page = hooks().results_page(tmp_path)
    panel = page.split("## panel", 1)[1].split("\n## ", 1)[0]
    assert "| `passed` | 9 |" in panel and "| iris | PASSED |" in panel, panel
    assert f"Older results:\n\n- 2026-01-01 12:00:00Z: `benchmarks/results/{older.name}`" in panel, panel
    assert newer.name in panel
    assert "No result yet" in page.split("## loop", 1)[1].split("\n## ", 1)[0]


def test_the_readme_is_short_and_keeps_the_ci_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv .venv"))
    assert f"\n{test_command}\n" in readme, "the README's test command must be the one .ci/run runs, byte for byte"
