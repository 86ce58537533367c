"""Threshold schema, the escalation policy, and the named YAML scenarios beside them."""

from pathlib import Path

SCENARIO_DIR = Path(__file__).parent


def scenario_path(name_or_path: str) -> Path:
    """`dev-cpu` -> the bundled thresholds/dev-cpu.yaml; anything else is taken as a path."""
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    return bundled if bundled.is_file() and "/" not in name_or_path else Path(name_or_path)
