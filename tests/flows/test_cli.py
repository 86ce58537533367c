"""CLI input errors exit 2 with one line, before any run is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--scenario", "nope.yaml", "--dataset", "digits"], "scenario = 'nope.yaml'"),
        (["run", "--scenario", "dev-cpu", "--dataset", "imagenet"], "dataset = 'imagenet'"),
        (["run", "--scenario", "dev-cpu", "--dataset", "missing.csv"], "existing .csv"),
        (["run", "--scenario", "dev-cpu", "--dataset", "digits", "--samples", "3"], "--samples = 3"),
        (["run", "--scenario", "dev-cpu", "--dataset", "digits", "--parallel", "many"], "--parallel = 'many'"),
        (["run", "--scenario", "dev-cpu", "--dataset", "digits", "--parallel", "0"], "--parallel = '0': expected auto or an integer"),
        (["validate", "nope.yaml"], "expected an existing YAML file"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], mlflow_store: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1
    assert not Path("mlflow.db").exists()  # nothing was started or written


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--dataset", "digits"])
    assert info.value.code == 2
    assert "--scenario" in capsys.readouterr().err


def test_validate_prints_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "dev-cpu"]) == 0
    assert '"max_inference_energy_vs_baseline": 0.75' in capsys.readouterr().out


def test_meters_lists_what_auto_picks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["meters"]) == 0
    out = capsys.readouterr().out
    assert "auto -> " in out and "codecarbon" in out


@pytest.mark.parametrize(("extra", "expected"), [([], "auto"), (["--parallel", "3"], "3"), (["--parallel", "1"], "1")])
def test_parallel_defaults_to_auto_and_a_number_forces_it(extra: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, mlflow_store: str) -> None:
    import flows.cli
    import flows.energy_loop

    seen: dict[str, object] = {}
    monkeypatch.setattr(flows.energy_loop, "energy_loop", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(flows.cli, "run_loop", lambda prog, loop: loop() or 0)
    assert main(["run", "--scenario", "dev-cpu", "--dataset", "iris", *extra]) == 0
    assert seen["parallel"] == expected and seen["dask_address"] is None
