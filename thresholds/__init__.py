"""Threshold schema, the escalation policy, and the named YAML scenarios beside them."""

from pathlib import Path

SCENARIO_DIR = Path(__file__).parent


def scenario_path(name_or_path: str) -> Path:
    """`dev-cpu` -> the bundled thresholds/dev-cpu.yaml; anything else is taken as a path."""
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    return bundled if bundled.is_file() and "/" not in name_or_path else Path(name_or_path)


def scenario_with_overrides(
    name_or_path: str, overrides: dict[str, dict[str, object]], folder: Path, suffix: str = "smoke"
) -> Path:
    """The scenario's path, or a copy in `folder` with each section's `overrides` applied (benchmark runs)."""
    import yaml

    path = scenario_path(name_or_path)
    if not overrides:
        return path
    doc = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        doc.setdefault(section, {}).update(values)
    out = folder / f"{doc['name']}-{suffix}.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out
