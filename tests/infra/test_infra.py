"""The team stack's contract, read from the files (no Docker engine here): auth on, no secret
committed, health checks, named volumes, and deployments with their schedules."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"
SECRET_KEYS = re.compile(r"PASSWORD|SECRET|AUTH_STRING|ACCESS_KEY")
REQUIRED = re.compile(r"\$\{(\w+):\?")


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {k: v for k, v in pairs}


def test_every_long_running_service_has_a_health_check_and_data_lives_in_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker"} <= set(services)
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot setup jobs
        assert "healthcheck" in service or name == "worker", name
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in services.items()}
    assert (
        "postgres-data" in mounts["postgres"] and "minio-data" in mounts["minio"] and "worker-data" in mounts["worker"]
    )
    assert {"postgres-data", "minio-data", "worker-data"} <= set(compose["volumes"])
    for service in services.values():  # published ports are loopback only
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_mlflow_runs_with_basic_auth_and_s3_artifacts() -> None:
    mlflow = _compose()["services"]["mlflow"]
    assert "/app/infra/mlflow-server.sh" in mlflow["command"]
    script = (INFRA / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in script
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "PREFECT_SERVER_API_AUTH_STRING" in _compose()["services"]["prefect-server"]["environment"]


def test_no_credential_is_committed_and_every_required_one_is_documented() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    for service in _compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEYS.search(key):
                assert str(value).startswith("${"), f"{key} must come from infra/.env, not the compose file"
    example = _env_example()
    for var in set(REQUIRED.findall(text)):
        assert var in example, f"{var} is required by the compose file but missing from .env.example"
    for key, value in example.items():
        if SECRET_KEYS.search(key):
            assert "CHANGE-ME" in value, f"{key} in .env.example must be a placeholder"
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "infra/.env must be git-ignored"


def test_the_auth_script_refuses_to_start_without_credentials() -> None:
    result = subprocess.run(
        ["sh", str(INFRA / "mlflow-server.sh")],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "MLFLOW_BACKEND_STORE_URI" in result.stderr


def test_deployments_carry_schedules_and_the_work_pool() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["dev-cpu"]["schedules"][0]["cron"] == "0 2 * * *"
    for d in deployments.values():
        assert d["work_pool"]["name"] == "energy-loop"
        assert d["entrypoint"].startswith("flows/")


def test_every_deployment_passes_its_flow_one_valid_request() -> None:
    """A flow takes one parameter, `request` (thresholds/request.py): a deployment's parameters are its options,
    checked here as the flow run's first task will check them."""
    from thresholds.cooling.request import CoolingRequest
    from thresholds.energy.request import LoopRequest
    from thresholds.request import parse

    models = {"flows/energy_loop.py:energy_loop": LoopRequest, "flows/cooling.py:cooling_loop": CoolingRequest}
    for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        assert set(d["parameters"]) == {"request"}, d["name"]
        parse(models[d["entrypoint"]], d["parameters"]["request"])


def test_the_champion_guard_runs_in_the_stack_and_registers_its_webhook() -> None:
    services = _compose()["services"]
    receiver, register = services["webhook"], services["webhook-register"]
    assert receiver["command"][:3] == ["energy-loop", "webhook", "serve"] and "/health" in " ".join(
        receiver["healthcheck"]["test"]
    )
    assert receiver["ports"] == ["127.0.0.1:${WEBHOOK_PORT:-8765}:8765"]
    assert register["restart"] == "no" and register["depends_on"]["webhook"]["condition"] == "service_healthy"
    port = receiver["command"][receiver["command"].index("--port") + 1]
    assert (
        register["command"][:3] == ["energy-loop", "webhook", "register"]
        and f"http://webhook:{port}/webhooks/mlflow" in register["command"]
    )
    for service in (receiver, register):  # the same secret on both sides, from infra/.env only
        assert service["environment"]["ENERGY_LOOP_WEBHOOK_SECRET"].startswith("${ENERGY_LOOP_WEBHOOK_SECRET:?")
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"].startswith("${MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY:?")
    assert (
        mlflow["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
        and mlflow["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    )
    example = _env_example()
    assert (
        "CHANGE-ME" in example["ENERGY_LOOP_WEBHOOK_SECRET"]
        and "CHANGE-ME" in example["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
    )


def test_the_stack_serves_the_champion_behind_a_token_and_keeps_its_feedback() -> None:
    compose = _compose()
    serve = compose["services"]["serve"]
    command = serve["command"]
    assert command[:2] == ["energy-loop", "serve"] and command[2].endswith("@champion")  # follows the champion
    assert command[2].startswith("${SERVE_MODEL:?") and "--feedback-dir" in command
    port = command[command.index("--port") + 1]
    assert serve["ports"] == [f"127.0.0.1:${{SERVE_PORT:-{port}}}:{port}"]
    assert f"localhost:{port}/health" in " ".join(serve["healthcheck"]["test"])
    environment = serve["environment"]
    assert environment["ENERGY_LOOP_API_KEY"].startswith("${ENERGY_LOOP_API_KEY:?")  # the token from infra/.env only
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    feedback = command[command.index("--feedback-dir") + 1]
    volume, mount = serve["volumes"][0].split(":")
    assert volume in compose["volumes"] and feedback.startswith(mount + "/")
    assert serve["depends_on"]["mlflow"]["condition"] == "service_healthy"
