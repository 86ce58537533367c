"""Prefect flows (wiring only) and the `energy-loop` CLI."""
