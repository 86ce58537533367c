"""The cooling loop's stages (Prefect tasks), and the plain work behind `run_attempt`.

Caching is off everywhere (`NO_CACHE`): energy is a measurement. No retries: training is not
idempotent and a blind retry of half-done tracking calls would duplicate runs. Tasks pass paths
and plain records, never live models: an agent is a folder with its state dict and a JSON spec.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from registry import cooling as registry
from registry import keys
from tasks.common import progress
from tasks.common.stages import LoopOutcome, outcome
from tasks.cooling import dqn as dqn_mod
from tasks.cooling import keys as attempt_keys
from tasks.cooling import plots
from tasks.cooling.baselines import Comparison, compare
from tasks.cooling.fast_eval import Controller, run, warm_up
from tasks.cooling.inputs import CheckedInputs, check_request
from tasks.cooling.protocol import Tuned, tune
from tasks.meters.base import EnergyMeter
from tasks.meters.select import shared_meter
from thresholds.cooling.env import MINUTES_PER_DAY, MINUTES_PER_MONTH, MINUTES_PER_YEAR, DQNConfig, RoomConfig
from thresholds.cooling.policy import Attempt, Final, Kind, Next, decide, passed, summary
from thresholds.cooling.request import CoolingRequest
from thresholds.cooling.schema import CoolingScenario
from thresholds.errors import InputError
from thresholds.request import parse


class Evaluation(BaseModel):
    """An agent against the baselines over the scenario's evaluation trajectories (one per seed)."""

    comparisons: list[Comparison]
    energy_saved_pct: float  # mean over seeds
    energy_saved_pct_min: float
    energy_saved_pct_max: float
    minutes_outside_band: int  # summed over seeds
    builtin_minutes_outside_band: int
    steps_per_s: float
    # room: against the controllers tuned on the training years (protocol.py), on the held-out years
    saved_vs_best_controller_pct: float | None = None  # mean over the held-out years
    best_controller_minutes_outside_band: int | None = None  # summed over the held-out years
    vs_mpc_pct: float | None = None  # mean over the held-out years: the agent's kWh beyond the perfect-forecast MPC's


def horizon_minutes(s: CoolingScenario) -> int:
    return s.evaluation.days * MINUTES_PER_DAY if s.evaluation.days else s.evaluation.months * MINUTES_PER_MONTH


def tuned_controllers(s: CoolingScenario) -> Tuned | None:
    """The room's controllers tuned on the scenario's training years (None for the seed environment)."""
    cfg = s.env_config()
    if not isinstance(cfg, RoomConfig):
        return None
    return tune(cfg, tuple(s.evaluation.training_years), horizon_minutes(s))


def evaluate(s: CoolingScenario, net: dqn_mod.QNetwork, bar: bool = False) -> Evaluation:
    """The agent on every held-out year beside the baselines (the room's tuned on the training years, and the
    perfect-forecast MPC)."""
    cfg = s.env_config()
    tuned = tuned_controllers(s)
    comparisons = []
    for seed in s.evaluation.seeds:
        traj = dqn_mod.make_trajectory(cfg, horizon_minutes(s), seed)
        comparisons.append(compare(cfg, traj, net.weights(), bar=bar, tuned=tuned, with_mpc=tuned is not None)[0])
    saved = [c.rows[0].saved_pct for c in comparisons]
    room: dict[str, Any] = {}
    if tuned is not None:
        room = {
            "saved_vs_best_controller_pct": float(np.mean([c.vs_best_controller_pct for c in comparisons])),
            "best_controller_minutes_outside_band": sum(c.best_row().minutes_outside_band for c in comparisons),
            "vs_mpc_pct": float(np.mean([c.vs_mpc_pct for c in comparisons])),
        }
    return Evaluation(
        comparisons=comparisons,
        energy_saved_pct=float(np.mean(saved)),
        energy_saved_pct_min=float(min(saved)),
        energy_saved_pct_max=float(max(saved)),
        minutes_outside_band=sum(c.rows[0].minutes_outside_band for c in comparisons),
        builtin_minutes_outside_band=sum(c.rows[1].minutes_outside_band for c in comparisons),
        steps_per_s=float(np.median([c.agent_steps_per_s for c in comparisons])),
        **room,
    )


def inference_energy_j_per_year(s: CoolingScenario, net: dqn_mod.QNetwork, meter: EnergyMeter) -> tuple[float, int]:
    """Energy of the agent's compiled evaluation alone, repeated for at least `min_inference_window_s`,
    scaled to one simulated year (518,400 decisions). Returns (J/year, simulated minutes measured)."""
    cfg = s.env_config()
    traj = dqn_mod.make_trajectory(cfg, min(horizon_minutes(s), MINUTES_PER_YEAR), s.evaluation.seeds[0])
    controller = Controller.network(net.weights())
    run(cfg, traj, controller)  # compiled and cached before the window opens
    steps = 0
    with meter.window("cooling-inference") as w:
        start = time.perf_counter()
        while time.perf_counter() - start < s.measurement.min_inference_window_s:
            steps += run(cfg, traj, controller).steps
    return w.measurement.energy_j / steps * MINUTES_PER_YEAR, steps


def _dqn_config(s: CoolingScenario, step: Next) -> DQNConfig:
    fields = s.training.model_dump(exclude={"early_stopping_on"})
    fields.update(hidden_units=step.hidden_units, max_episodes=step.max_episodes, epsilon=step.epsilon)
    fields["seed"] = s.training.seed + step.seed_offset
    return DQNConfig(**fields)


def run_attempt_plain(
    s: CoolingScenario, step: Next, history: list[Attempt], work_dir: Path, meter: EnergyMeter, log: Any = print
) -> tuple[Attempt, dict[str, Any]]:
    """Train (or distil) one agent with its energy measured, save it, evaluate it. Returns the record and
    the extra figures/series for the tracking run (also written to the agent folder as evaluation.json).
    Says its progress line as it goes: `[2/3] #1 retrain 16-8  training… 41.2 s  evaluating… 6.3 s  PASS`."""
    index = len(history)
    cfg = s.env_config()
    dqn = _dqn_config(s, step)
    attempt = Attempt(
        index=index,
        kind=step.kind,
        hidden_units=step.hidden_units,
        max_episodes=step.max_episodes,
        epsilon=step.epsilon,
        parent=step.parent,
    )
    line = progress.numbered(
        index, s.budget.max_attempts, f"{step.kind.value} {step.hidden_units[0]}-{step.hidden_units[1]}", step.parent
    )

    def episode(
        message: str,
    ) -> None:  # dqn.train's one line per episode: all of it to the logs, a few counters to the console
        log(message)
        ticker(f"{message.partition(':')[0]}…")

    warm_up()  # compile outside the measured window
    extra: dict[str, Any] = {"metrics": {}, "series": {}, "tags": {}}
    progress.say(line, "distilling…" if step.kind == Kind.DISTIL else "training…")
    ticker = progress.Ticker(line)  # from here: the compile before is not training
    started = time.perf_counter()
    try:
        with meter.window(f"cooling-train-{index}") as w:
            if step.kind == Kind.DISTIL and step.parent is not None:
                teacher, _ = dqn_mod.load_agent(Path(history[step.parent].agent_dir or ""))
                net, mse = dqn_mod.distil(cfg, teacher, step.hidden_units, dqn.seed)
                extra["metrics"][attempt_keys.DISTIL_MSE] = mse
                episodes = 0
            else:
                result = dqn_mod.train(cfg, dqn, s.training.early_stopping_on, log=episode)
                net, episodes = result.network, result.episodes_run
                extra["series"] = {
                    attempt_keys.EPISODE_REWARD: result.episode_rewards,
                    attempt_keys.VALIDATION_SCORE: result.validation_scores,
                }
                extra["metrics"].update(
                    {
                        attempt_keys.GRADIENT_STEPS: result.gradient_steps,
                        attempt_keys.ENV_STEPS: result.env_steps,
                        attempt_keys.BEST_EPISODE: result.best_episode,
                    }
                )
    except Exception as exc:  # a crashed attempt is a record; the loop decides what comes next
        log(f"attempt #{index} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        attempt = attempt.model_copy(update={"failed_reason": f"{type(exc).__name__}: {exc}"[:500]})
        progress.say(line, f"{time.perf_counter() - started:.1f} s  {gate_word(s, attempt)}", end=True)
        return attempt, extra
    trained_s = time.perf_counter() - started
    progress.say(line, f"{trained_s:.1f} s  evaluating…")
    m = w.measurement
    own_j = m.energy_j
    lineage_j = own_j + (
        history[step.parent].train_energy_j or 0.0 if step.kind == Kind.DISTIL and step.parent is not None else 0.0
    )
    agent_dir = work_dir / f"attempt-{index}"
    obs_dim, n_actions = dqn_mod.dims(cfg)
    dqn_mod.save_agent(
        agent_dir,
        net,
        {
            "env": s.env,
            "obs_dim": obs_dim,
            "n_actions": n_actions,
            "hidden_units": list(step.hidden_units),
            "kind": step.kind.value,
            "parameters": net.parameter_count(),
        },
    )
    evaluation = evaluate(s, net)
    inference_j, measured_minutes = inference_energy_j_per_year(s, net, meter)
    attempt = attempt.model_copy(
        update={
            "energy_saved_pct": evaluation.energy_saved_pct,
            "minutes_outside_band": evaluation.minutes_outside_band,
            "builtin_minutes_outside_band": evaluation.builtin_minutes_outside_band,
            "saved_vs_best_controller_pct": evaluation.saved_vs_best_controller_pct,
            "best_controller_minutes_outside_band": evaluation.best_controller_minutes_outside_band,
            "vs_mpc_pct": evaluation.vs_mpc_pct,
            "train_energy_j": lineage_j,
            "spent_energy_j": own_j,
            "inference_energy_j_per_year": inference_j,
            "episodes_run": episodes,
            "energy_source": m.source,
            "energy_estimated": m.estimated,
            "agent_dir": str(agent_dir),
        }
    )
    extra["metrics"].update(
        {
            keys.TRAIN_S: m.duration_s,
            attempt_keys.WALL_S: time.perf_counter() - started,
            attempt_keys.STEPS_PER_S: evaluation.steps_per_s,
            attempt_keys.ENERGY_SAVED_PCT_MIN: evaluation.energy_saved_pct_min,
            attempt_keys.ENERGY_SAVED_PCT_MAX: evaluation.energy_saved_pct_max,
            attempt_keys.INFERENCE_MEASURED_MINUTES: measured_minutes,
            attempt_keys.PARAMETERS: net.parameter_count(),
        }
    )
    extra["tags"] = {
        keys.ENERGY_SOURCE: m.source,
        keys.ENERGY_ESTIMATED: str(m.estimated).lower(),
        **{attempt_keys.METER_DETAIL_PREFIX + k: v for k, v in m.details.items()},
    }
    (agent_dir / "evaluation.json").write_text(evaluation.model_dump_json(indent=2))
    (agent_dir / "comparison.md").write_text(
        "\n\n".join(
            f"seed {sd}:\n\n{c.table()}" for sd, c in zip(s.evaluation.seeds, evaluation.comparisons, strict=True)
        )
    )
    log(f"attempt #{index} {step.kind.value} {step.hidden_units}: {summary(s.targets, attempt)}")
    progress.say(line, f"{time.perf_counter() - started - trained_s:.1f} s  {gate_word(s, attempt)}", end=True)
    return attempt, extra


def meter_for(s: CoolingScenario, meter_name: str) -> EnergyMeter:
    return shared_meter(meter_name, s.measurement.fixed_power_w, s.measurement.codecarbon_country)


def verdict(s: CoolingScenario, a: Attempt) -> str:
    return summary(s.targets, a)


def gate_word(s: CoolingScenario, a: Attempt) -> str:
    """`PASS`, `miss: <the targets missed>` or `failed: <why>`: the gates' word on one attempt, its progress line's
    end."""
    if a.failed_reason:
        return f"failed: {a.failed_reason}"
    return "PASS" if passed(s.targets, a) else f"miss: {verdict(s, a)}"


def attempts_table(s: CoolingScenario, history: list[Attempt]) -> str:
    head = (
        "| # | step | hidden | episodes | epsilon | saved vs built-in | saved vs best tuned controller | "
        "minutes outside (built-in) | train energy J | inference J/year | verdict |"
    )
    rows = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for a in history:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        rows.append(
            f"| {a.index} | {a.kind.value} | {a.hidden_units[0]}-{a.hidden_units[1]} | {a.episodes_run} | "
            f"{a.epsilon:g} | {fmt(a.energy_saved_pct, '.1f')} % | {fmt(a.saved_vs_best_controller_pct, '+.1f')} % | "
            f"{fmt(a.minutes_outside_band, ',')} "
            f"({fmt(a.builtin_minutes_outside_band, ',')}) | {fmt(a.train_energy_j, ',.1f')} | "
            f"{fmt(a.inference_energy_j_per_year, ',.2f')} | {verdict(s, a)} |"
        )
    return "\n".join(rows)


# ---- Prefect tasks ------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def check_inputs(request: object) -> CheckedInputs | InputError:
    """The flow's first stage: the request (a `CoolingRequest`, or the mapping a deployment or a Python caller
    passed) and every input it names checked (`inputs.check_request`, as the CLI does) before a run is opened.

    A problem comes back as the `InputError`, not raised, so no log holds a traceback; the flow ends
    Failed with its one line."""
    try:
        return check_request(parse(CoolingRequest, request))
    except InputError as exc:
        return exc


@task(cache_policy=NO_CACHE)
def plan_next(s: CoolingScenario, history: list[Attempt]) -> Next | Final:
    return decide(s, history)


@task(cache_policy=NO_CACHE, task_run_name="attempt-{step.kind}")
def run_attempt(s: CoolingScenario, step: Next, history: list[Attempt], work_dir: str, meter_name: str) -> Attempt:
    logger = get_run_logger()
    attempt, extra = run_attempt_plain(s, step, history, Path(work_dir), meter_for(s, meter_name), log=logger.info)
    if attempt.agent_dir:
        (Path(attempt.agent_dir) / "tracking.json").write_text(json.dumps(extra))
    else:
        failed_dir = Path(work_dir) / f"attempt-{attempt.index}-failed"
        failed_dir.mkdir(parents=True, exist_ok=True)
        (failed_dir / "tracking.json").write_text(json.dumps(extra))
    return attempt


@task(cache_policy=NO_CACHE)
def log_attempt(s: CoolingScenario, loop_run_id: str, attempt: Attempt, work_dir: str) -> Attempt:
    folder = Path(attempt.agent_dir) if attempt.agent_dir else Path(work_dir) / f"attempt-{attempt.index}-failed"
    extra = (
        json.loads((folder / "tracking.json").read_text())
        if (folder / "tracking.json").exists()
        else {"metrics": {}, "series": {}, "tags": {}}
    )
    tags = {keys.ENVIRONMENT: s.env, **extra.get("tags", {})}
    run_id = registry.log_attempt(
        loop_run_id, attempt, verdict(s, attempt), extra.get("metrics", {}), extra.get("series", {}), tags
    )
    return attempt.model_copy(update={"run_id": run_id})


def _plots(s: CoolingScenario, attempt: Attempt | None, work_dir: Path) -> list[Path]:
    if attempt is None or not attempt.agent_dir:
        return []
    net, _ = dqn_mod.load_agent(Path(attempt.agent_dir))
    cfg = s.env_config()
    traj = dqn_mod.make_trajectory(cfg, horizon_minutes(s), s.evaluation.seeds[0])
    _, runs = compare(cfg, traj, net.weights(), traces=True, tuned=tuned_controllers(s))
    unit = "energy units" if s.env == "seed" else "kWh"
    title = f"{s.name}: attempt #{attempt.index} ({attempt.hidden_units[0]}-{attempt.hidden_units[1]})"
    return [
        plots.week_plot(runs, cfg, work_dir / "week.png", traj.start_month, f"{title}, one week"),
        plots.monthly_bars(runs, work_dir / "monthly_energy.png", unit, f"{title}, energy per month"),
    ]


@task(cache_policy=NO_CACHE)
def close_loop(
    s: CoolingScenario,
    final: Final,
    history: list[Attempt],
    loop_run_id: str,
    work_dir: str,
    common_tags: dict[str, str],
) -> LoopOutcome:
    shown = (
        history[final.chosen] if final.chosen is not None else next((a for a in reversed(history) if a.agent_dir), None)
    )
    artifacts = _plots(s, shown, Path(work_dir))
    table = attempts_table(s, history)
    if shown is not None and shown.agent_dir:
        table += (
            f"\n\nAttempt #{shown.index} against the baselines:\n\n"
            + (Path(shown.agent_dir) / "comparison.md").read_text()
        )
    summary_json = {
        "state": final.state.value,
        "reason": final.reason,
        "chosen": final.chosen,
        "attempts": [a.model_dump(mode="json") for a in history],
    }
    record = registry.close_loop(
        loop_run_id,
        s.model_name,
        final,
        history,
        registry.LoopReport(
            [verdict(s, a) for a in history],
            [passed(s.targets, a) for a in history],
            table,
            artifacts,
            summary_json,
            vs_best_controller=s.targets.min_saved_vs_best_controller_pct is not None,
        ),
        common_tags,
    )
    return outcome("Cooling loop", f"cooling-loop-{s.env}", final, record, s.model_name, loop_run_id, table, history)
