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
