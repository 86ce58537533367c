"""What can go wrong while the work runs: each error is a rejected candidate, not a crash.

Bad user input is `thresholds.errors.InputError` (re-exported here for older imports)."""

from __future__ import annotations

from thresholds.errors import InputError as InputError


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the candidate is rejected, the loop goes on."""

    partial_energy_j: float = 0.0  # energy spent before the divergence, when a meter was on


class RungNotApplicable(RuntimeError):
    """A rung cannot produce a candidate here (e.g. no architecture fits the search's energy cap)."""

    partial_energy_j: float = 0.0
