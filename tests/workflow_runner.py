"""A local stand-in for GitHub's runner, just enough to run the job of .github/workflows/retrain.yml as CI would.

Real, as on GitHub:
- the job's `env` mapping, its `${{ }}` expressions evaluated from the secrets and inputs given (an unset
  secret or input is an empty string, as there); an expression this module cannot evaluate fails the test;
- every `run:` step, in order, written to a file and run by `bash --noprofile --norc -eo pipefail FILE`
  (GitHub's `shell: bash`) in a subprocess, from a clean environment (nothing of the test process leaks
  in), with RUNNER_TEMP, GITHUB_PATH and GITHUB_ENV honoured; the job stops at the first failing step.

Replaced (each replacement is named, so a new step the runner cannot stand in for fails the test):
- `actions/checkout`: the steps run in this checkout (ROOT) as it is on disk;
- `actions/setup-python`: a directory holding `python` and `python3`, linked to this machine's Python of
  the version the step asks for, put first on PATH (its pip cache is an optimisation and is skipped);
- the `Install the client` step, unless install="real": tests run offline, so instead of downloading the
  `client` dependency group into a new venv, it puts the scripts directory of the interpreter running
  the tests on PATH and, through PYTHONPATH, tests/fixtures/client-only/sitecustomize.py, which makes the
  training stack unimportable (torch, numpy, numba, ...), so a step that needs more than the client group
  still fails. install="real" runs the step as written (it needs the package index).
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
JOB = "retrain"
INSTALL_STEP = "Install the client"
CLIENT_ONLY = ROOT / "tests" / "fixtures" / "client-only"
SUPPORTED_JOB_KEYS = {"name", "runs-on", "timeout-minutes", "environment", "env", "steps"}
SUPPORTED_STEP_KEYS = {"name", "run", "uses", "with"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
SECRET = re.compile(r"secrets\.(\w+)")
INPUT = re.compile(r"inputs\.(\w+)(?:\s*\|\|\s*'([^']*)')?")


def job() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())["jobs"][JOB]
    return spec


def secret_names() -> dict[str, str]:
    """Job env key -> the secret it is read from."""
    names: dict[str, str] = {}
    for key, value in job()["env"].items():
        match = EXPRESSION.fullmatch(str(value))
        secret = SECRET.fullmatch(match[1]) if match else None
        if secret:
            names[key] = secret[1]
    return names


def evaluate(value: object, secrets: dict[str, str], inputs: dict[str, str]) -> str:
    """One `env` value as GitHub would expand it, for the expression forms the workflow uses."""
    text = str(value)
    match = EXPRESSION.fullmatch(text)
    if match is None:
        assert "${{" not in text, f"cannot evaluate {text!r}: only whole-value expressions are supported"
        return text
    if secret := SECRET.fullmatch(match[1]):
        return secrets.get(secret[1], "")
    if given := INPUT.fullmatch(match[1]):
        return inputs.get(given[1], "") or (given[2] or "")
    raise AssertionError(f"the local runner cannot evaluate {text!r}")


@dataclass
class Step:
    name: str
    returncode: int
    output: str


@dataclass
class JobResult:
    returncode: int
    steps: list[Step] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(step.output for step in self.steps)

    @property
    def failed_step(self) -> str | None:
        return self.steps[-1].name if self.steps and self.steps[-1].returncode != 0 else None


def _setup_python(version: str, tool_dir: Path) -> Path:
    python = Path(getattr(sys, "_base_executable", sys.executable))
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version, (
        f"setup-python asks for {version}, tests run on {sys.version}"
    )
    bin_dir = tool_dir / "python" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(python)
    return bin_dir


def run_job(
    secrets: dict[str, str],
    inputs: dict[str, str],
    tmp_path: Path,
    install: Literal["substitute", "real"] = "substitute",
    timeout_s: float = 900,
) -> JobResult:
    spec = job()
    unsupported = set(spec) - SUPPORTED_JOB_KEYS
    assert not unsupported, f"the local runner does not support job keys {unsupported}"
    runner_temp = tmp_path / "runner-temp"
    home = tmp_path / "home"
    runner_temp.mkdir(parents=True)
    home.mkdir()
    github_path, github_env = runner_temp / "github-path", runner_temp / "github-env"
    github_path.touch()
    github_env.touch()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(ROOT),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_PATH": str(github_path),
        "GITHUB_ENV": str(github_env),
    }
    env.update({key: evaluate(value, secrets, inputs) for key, value in spec["env"].items()})
    result = JobResult(returncode=0)
    for number, step in enumerate(spec["steps"]):
        unsupported = set(step) - SUPPORTED_STEP_KEYS
        assert not unsupported, f"the local runner does not support step keys {unsupported}"
        name = step.get("name") or step.get("uses") or f"step {number}"
        if "uses" in step:
            action = step["uses"].split("@")[0]
            if action == "actions/checkout":
                continue  # the steps already run in this checkout
            if action == "actions/setup-python":
                env["PATH"] = (
                    f"{_setup_python(str(step['with']['python-version']), tmp_path / 'toolcache')}:{env['PATH']}"
                )
                continue
            raise AssertionError(f"the local runner has no stand-in for {step['uses']}")
        script = step["run"]
        if name == INSTALL_STEP and install == "substitute":
            script = (
                f'echo "{sysconfig.get_path("scripts")}" >> "$GITHUB_PATH"\n'
                f'echo "PYTHONPATH={CLIENT_ONLY}" >> "$GITHUB_ENV"\n'
            )
        script_file = runner_temp / f"step-{number}.sh"
        script_file.write_text(script)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
        )
        result.steps.append(Step(name, proc.returncode, proc.stdout))
        if proc.returncode != 0:
            result.returncode = proc.returncode
            return result
        # What the step asked for through the runner's files, as the runner applies it before the next step.
        for line in github_path.read_text().splitlines():
            env["PATH"] = f"{line}:{env['PATH']}"
        for line in github_env.read_text().splitlines():
            key, sep, value = line.partition("=")
            assert sep and "<<" not in key, (
                f"the local runner supports only KEY=VALUE lines in GITHUB_ENV, not {line!r}"
            )
            env[key] = value
        github_path.write_text("")
        github_env.write_text("")
    return result
