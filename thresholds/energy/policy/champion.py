"""The champion rule: whether a passing candidate replaces the registered champion (given the champion's recorded
figures), judged beyond the measurement noise, with the simpler and the cheaper-to-train model winning a tie."""

from __future__ import annotations

from typing import NamedTuple

from thresholds.core import significantly_less
from thresholds.energy.policy.records import CandidateResult


class ChampionFigures(NamedTuple):
    """The champion version's figures the rule compares (the registry reads them from the version's run metrics;
    None: not recorded)."""

    energy_source: str | None
    inference_energy_j_per_1k: float | None
    inference_energy_sem_j_per_1k: float = 0.0
    accuracy: float | None = None
    rmse: float | None = None
    params: int = 0  # 0: not recorded
    train_energy_j: float | None = None
    train_energy_sem_j: float = 0.0


class RescoredChampion(NamedTuple):
    """The champion judged as this run judges its candidates (its record was not comparable: why)."""

    version: str
    figures: ChampionFigures
    reason: str


class Comparable(NamedTuple):
    """What makes two loops' figures comparable: the prepared data (its cache key), the batch sizes the inference
    energy was measured at, and the meter it came from."""

    data_key: str | None
    batch_sizes: str | None
    energy_source: str | None


def rescore_reason(champion: Comparable, this_run: Comparable) -> str | None:
    """Why the champion's recorded figures cannot be compared with this run's candidates (None: they can): other
    data (its test split is not this run's), other batch sizes (J per 1k depends on them) or another meter."""
    why = []
    if champion.data_key != this_run.data_key:
        why.append(f"its data {champion.data_key or 'unrecorded'} is not this run's {this_run.data_key}")
    if champion.batch_sizes != this_run.batch_sizes:
        why.append(f"it was measured at batch sizes {champion.batch_sizes or '?'}, not {this_run.batch_sizes}")
    if champion.energy_source != this_run.energy_source:
        why.append(f"its energy is from {champion.energy_source or '?'}, not {this_run.energy_source}")
    return "; ".join(why) or None


def beats_champion(
    candidate: CandidateResult, champion: ChampionFigures | None, sigmas: float = 2.0
) -> tuple[bool, str]:
    """Whether a passing candidate should replace the champion (given the champion's figures).

    Quality may not be worse (1 pt accuracy / 1 % RMSE tolerance). Inference energies must
    come from the same source and differ by more than `sigmas` combined standard errors to
    count; within the noise the simpler model (fewer parameters) wins, then the one that was
    measurably cheaper to train, else the champion stays.
    """
    if champion is None:
        return True, "no champion yet"
    if champion.energy_source != candidate.energy_source:
        return (
            False,
            f"champion energy is from {champion.energy_source!r}, candidate from {candidate.energy_source!r}: "
            "not comparable",
        )
    champ_energy = champion.inference_energy_j_per_1k
    if champ_energy is None:
        return True, "champion has no recorded inference energy"
    energy = candidate.inference_energy_j_per_1k
    if energy is None:
        return False, "candidate has no measured inference energy"
    if (
        candidate.accuracy is not None
        and champion.accuracy is not None
        and candidate.accuracy < champion.accuracy - 0.01
    ):
        return (
            False,
            f"accuracy {candidate.accuracy:.4f} is more than 1 pt below the champion's {champion.accuracy:.4f}",
        )
    if candidate.rmse is not None and champion.rmse is not None and candidate.rmse > champion.rmse * 1.01:
        return False, f"rmse {candidate.rmse:.4g} is more than 1% above the champion's {champion.rmse:.4g}"
    champ_sem = champion.inference_energy_sem_j_per_1k
    err = candidate.inference_energy_sem_j_per_1k
    if significantly_less(energy, err, champ_energy, champ_sem, sigmas):
        return (
            True,
            f"inference energy {energy:.4g} < champion's {champ_energy:.4g} J/1k beyond noise, at no worse quality",
        )
    if significantly_less(champ_energy, champ_sem, energy, err, sigmas):
        return False, f"inference energy {energy:.4g} J/1k is above the champion's {champ_energy:.4g} J/1k beyond noise"
    tie = (
        f"inference energy {energy:.4g} vs champion's {champ_energy:.4g} J/1k is within {sigmas:g} combined "
        "standard errors"
    )
    champ_params = champion.params
    if candidate.params is not None and champ_params and candidate.params < champ_params:
        return True, f"{tie}; candidate is simpler ({candidate.params} < {champ_params} params)"
    if (
        candidate.params is not None
        and candidate.params == champ_params
        and candidate.train_energy_j is not None
        and champion.train_energy_j is not None
    ):
        champ_train = champion.train_energy_j
        if significantly_less(
            candidate.train_energy_j, candidate.train_energy_sem_j, champ_train, champion.train_energy_sem_j, sigmas
        ):
            return True, f"{tie}; candidate is cheaper to train ({candidate.train_energy_j:.4g} < {champ_train:.4g} J)"
    return False, f"{tie}; the champion is as simple and as cheap to train: it stays"
