# Shortcuts for the README's commands. Each one sets up .venv first.
PY ?= python3
VENV := .venv

.PHONY: setup run test lint bench clean
setup:
	$(PY) -m venv $(VENV) && $(VENV)/bin/pip install -e '.[dev]'

run: setup
	$(VENV)/bin/energy-loop run --scenario dev-cpu --dataset mnist1d

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy flows tasks thresholds registry benchmarks \
		&& $(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml && $(VENV)/bin/zizmor --offline --no-progress .github/workflows

bench: setup
	$(VENV)/bin/python benchmarks/loop.py --scenario dev-cpu --dataset mnist1d

clean:
	rm -rf .energy-loop mlflow.db mlartifacts
