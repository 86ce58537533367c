"""The CI retraining workflow's contract, read from the files: the job's secrets are the client variables of
infra/.env.example (and of the team-setup docs), inputs never reach a `run:` line as text, every deployment of
prefect.yaml can be dispatched, and the job installs only the `client` dependency group, pinned as the
project pins. The steps themselves run against real servers in tests/integration/test_retrain_workflow.py."""

from __future__ import annotations

import importlib
import re
import tomllib

import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.workflow_runner import INSTALL_STEP, WORKFLOW, job, secret_names

CLIENTS_MARKER = "# Clients:"
CLIENT_PREFIXES = ("PREFECT_API_", "MLFLOW_TRACKING_")  # the names Prefect's and MLflow's clients read


def _env_example() -> tuple[list[str], list[str]]:
    """(server-only keys, client keys): the file's `# Clients:` comment starts the client part."""
    server: list[str] = []
    client: list[str] = []
    part = server
    for line in (ROOT / "infra" / ".env.example").read_text().splitlines():
        if line.startswith(CLIENTS_MARKER):
            part = client
        elif line.strip() and not line.startswith("#"):
            part.append(line.split("=", 1)[0])
    return server, client


def test_the_jobs_secrets_are_the_client_variables_of_env_example() -> None:
    server, client = _env_example()
    assert client, f"infra/.env.example has no part starting with {CLIENTS_MARKER!r}"
    secrets = secret_names()
    assert all(key == name for key, name in secrets.items()), f"each secret must be named as its variable: {secrets}"
    only_job, only_example = set(secrets) - set(client), set(client) - set(secrets)
    assert not only_job, f"the job reads {sorted(only_job)}, which the client part of infra/.env.example lacks"
    assert not only_example, (
        f"infra/.env.example names client variables {sorted(only_example)}, which the job does not pass"
    )
    misfiled = [key for key in server if key.startswith(CLIENT_PREFIXES)]
    assert not misfiled, f"{misfiled} are client variables: move them below {CLIENTS_MARKER!r} and pass them in the job"


def test_the_team_setup_docs_and_the_compose_clients_use_the_same_names() -> None:
    page = (ROOT / "docs" / "team-setup.md").read_text()
    exported = set(
        re.findall(r"\b([A-Z][A-Z0-9_]+)=", "\n".join(line for line in page.splitlines() if line.startswith("export ")))
    )
    missing = sorted(set(secret_names()) - exported)
    assert not missing, f"docs/team-setup.md's export lines lack {missing}"
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    assert set(secret_names()) <= set(compose["x-client-env"]), "the worker and the CI job must read the same variables"


def test_the_secrets_are_checked_first_by_name_and_inputs_only_through_env() -> None:
    steps = job()["steps"]
    check = steps[0]
    assert "run" in check, "the secrets are checked before anything is checked out or installed"
    for name in secret_names():
        assert re.search(rf"\b{name}\b", check["run"]), f"the check step does not test {name}"
    for step in steps:
        assert "${{" not in step.get("run", ""), (
            f"step {step.get('name')!r}: an expression inside run: is a script injection"
        )
    inputs_in_env = [key for key, value in job()["env"].items() if "inputs." in str(value)]
    assert inputs_in_env, "the dispatch inputs reach the steps through env"


def test_every_deployment_of_prefect_yaml_can_be_dispatched() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = set()
    for deployment in spec["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        deployments.add(f"{flow.name}/{deployment['name']}")
    dispatch = yaml.safe_load(WORKFLOW.read_text())[True]["workflow_dispatch"]["inputs"][
        "deployment"
    ]  # YAML 1.1 reads `on` as True
    assert set(dispatch["options"]) == deployments
    assert any(d.startswith("cooling-loop/") for d in dispatch["options"]) and any(
        d.startswith("energy-loop/") for d in dispatch["options"]
    )
    assert f"inputs.deployment || '{dispatch['default']}'" in job()["env"]["DEPLOYMENT"], (
        "a push runs the dispatch default"
    )


def test_the_job_installs_the_client_group_pinned_as_the_project_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    client = [Requirement(r) for r in pyproject["dependency-groups"]["client"]]
    same_release_as = {"prefect-client": "prefect", "mlflow-skinny": "mlflow"}
    for requirement in client:
        assert not requirement.name.startswith("torch"), "the CI job only triggers: no torch"
        pinned = project[same_release_as.get(requirement.name, requirement.name)]
        assert requirement.specifier == pinned.specifier, f"client group {requirement} vs project {pinned}"
    install = next(step["run"] for step in job()["steps"] if step.get("name") == INSTALL_STEP)
    pip_lines = [line for line in install.splitlines() if "pip install" in line]
    assert any("--group client" in line for line in pip_lines)
    assert all("--group client" in line or '"pip>=' in line for line in pip_lines), (
        f"the job installs the client group only: {pip_lines}"
    )
