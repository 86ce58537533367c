"""The champion as the reference a run must beat, judged on this run's terms where its record is not.

A champion's figures were recorded by the run that made it: on that run's test split, at its batch sizes, with its
meter. A retrain on other data, or measured at the batch sizes production observed (the production automation), would
otherwise compare J per 1k at batch 1 with J per 1k at batch 4096, or accuracies over different rows. Where
`rescore_reason` finds the records not comparable, the champion's model is downloaded and measured exactly as a
candidate is (`measure_step`: this run's test split, batch sizes, meter, idle power, paired with this run's baseline),
and the champion rule judges the chosen candidate against those figures.
"""

from __future__ import annotations

import logging
from pathlib import Path

from registry import energy as registry
from registry import keys
from tasks.energy_loop import keys as flow_keys
from tasks.energy_loop.measure import measure_step
from tasks.meters.base import EnergyMeter
from thresholds.energy import keys as detail
from thresholds.energy.policy import (
    CandidateResult,
    Comparable,
    RescoredChampion,
    Step,
    StepKind,
    rescore_reason,
)
from thresholds.energy.schema import Scenario

log = logging.getLogger(__name__)


def rescore_champion(
    scenario: Scenario,
    model_name: str,
    data_path: str,
    meter: EnergyMeter,
    idle_power_w: float,
    baseline: CandidateResult | None,
) -> RescoredChampion | None:
    """The champion measured as this run measures its candidates, where its record is not comparable; None without a
    champion, or where its record is comparable (or its model cannot be measured here: said in the log)."""
    work = Path(data_path).parent.parent / "champion"
    found = registry.champion_model(model_name, work)
    if found is None:
        return None
    version, tags, recorded, model_dir = found
    this_run = Comparable(
        Path(data_path).name,
        ",".join(str(b) for b in scenario.measurement.batch_sizes_served),
        meter.source,
    )
    champion = Comparable(
        tags.get(flow_keys.DATA_KEY), tags.get(detail.SERVING_BATCH_SIZES), tags.get(keys.ENERGY_SOURCE)
    )
    reason = rescore_reason(champion, this_run)
    if reason is None:
        return None
    produced = CandidateResult(
        index=-1, step=Step(kind=StepKind.BASELINE), energy_source=meter.source, estimated=meter.estimated,
        model_dir=str(model_dir),
    )  # fmt: skip
    reference = baseline.model_dir if baseline is not None and baseline.ok else None
    measured = measure_step(scenario, produced, data_path, meter, idle_power_w, reference)
    if measured.inference_energy_j_per_1k is None:
        log.warning(
            "champion version %s not re-scored (%s): its recorded figures stand", version, measured.rejected_reason
        )
        return None
    # What this run measured replaces what the champion's own run measured; its training cost is history.
    figures = recorded._replace(
        energy_source=measured.energy_source,
        inference_energy_j_per_1k=measured.inference_energy_j_per_1k,
        inference_energy_sem_j_per_1k=measured.inference_energy_sem_j_per_1k,
        accuracy=measured.accuracy,
        rmse=measured.rmse,
        params=measured.params or recorded.params,
    )
    return RescoredChampion(version, figures, reason)
