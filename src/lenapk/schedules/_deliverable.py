"""Deliverable schedules: the capsule strengths, escalation grid and days-on options a clinic can
give, their labels, and their hard (clinical) endpoints."""

from __future__ import annotations

import math

import numpy as np

from .._core import Regimen

DEFAULT_DAYS_ON = (21, 28)


def floor_to(x: float, grid) -> float:
    grid = np.asarray(grid, dtype=float)
    below = grid[grid <= x + 1e-9]
    return float(below[-1]) if below.size else float(grid[0])


def ceil_to(x: float, grid) -> float:
    grid = np.asarray(grid, dtype=float)
    above = grid[grid >= x - 1e-9]
    return float(above[0]) if above.size else float(grid[-1])


def deliverable_regimen(
    start_mg: float,
    escalation_mg: float,
    days_on: int,
    *,
    n_cycles: int,
    cycle_days: int = 28,
    escalate_every_days: int = 28,
    capsules,
    max_mg: float | None = None,
) -> Regimen:
    """A clinically deliverable schedule: :meth:`Regimen.cycles` (``start_mg``, +``escalation_mg``
    every ``escalate_every_days`` up to ``max_mg``, ``days_on`` of each ``cycle_days``) with
    every daily dose rounded down to a capsule strength.  Named by :func:`describe_doses`."""
    caps = np.asarray(capsules, dtype=float)
    reg = Regimen.cycles(
        start_mg,
        n_cycles=n_cycles,
        cycle_days=cycle_days,
        days_on=int(days_on),
        escalation_mg=escalation_mg,
        escalate_every_days=escalate_every_days if escalation_mg > 0 else None,
        max_mg=max(caps[-1] if max_mg is None else max_mg, start_mg),
    )
    d = np.asarray(reg.doses)
    idx = np.searchsorted(caps, d + 1e-9, side="right") - 1
    snapped = np.where(d > 0, caps[np.clip(idx, 0, None)], 0.0)
    return Regimen.from_daily_doses(snapped, cycle_days=cycle_days, name=describe_doses(snapped, cycle_days))


def describe_doses(doses, cycle_days: int = 28) -> str:
    """A short label of a cyclic schedule, e.g. ``"d1-21/28: 10 mg c1-2, 15 mg c3+"``: the days on
    of the first cycle, then the highest daily dose of each cycle, run-length encoded."""
    d = np.asarray(doses, dtype=float)
    n_cyc = -(-d.size // cycle_days)
    first = d[:cycle_days] > 0
    on = int(first.sum())
    contiguous = on == 0 or (first[:on].all() and not first[on:].any())
    pattern = f"d1-{on}/{cycle_days}" if contiguous else f"{on}/{cycle_days} days"
    per = [float(d[c * cycle_days : (c + 1) * cycle_days].max()) for c in range(n_cyc)]
    runs: list[list] = []
    for c, x in enumerate(per):
        if runs and runs[-1][0] == x:
            runs[-1][2] = c
        else:
            runs.append([x, c, c])
    parts = []
    for i, (x, a, b) in enumerate(runs):
        if len(runs) == 1:
            parts.append(f"{x:g} mg")
        elif i == len(runs) - 1 and b > a:
            parts.append(f"{x:g} mg c{a + 1}+")
        else:
            parts.append(f"{x:g} mg c{a + 1}" + (f"-{b + 1}" if b > a else ""))
    return f"{pattern}: " + ", ".join(parts)


def hard_metrics(at_visits: dict, end_ratio, visits, given, planned, spec, held=None, event=math.nan) -> dict:
    """Hard endpoints from the observables at ``visits`` (which start with day 0), as in
    :func:`lenapk.cohort` with ``visits="protocol"``: toxicity = the limiting grade at an
    on-treatment visit; response = best response CR or PR (:meth:`ResponseCriteria.best`);
    ``event``: the hazard event's expected incidence over the horizon (computed by the caller;
    NaN without one)."""
    on = np.asarray(visits) > 0
    values = {k: np.asarray(v) for k, v in at_visits.items()}
    tox = spec.toxicity.grade(values[spec.toxicity.observable][:, on]).max(axis=1) >= spec.toxicity.severe_grade
    label, _ = spec.response.best(values, np.arange(len(visits)))
    plan = float(np.sum(planned))
    return {
        "response": float(np.isin(label, ("CR", "PR")).mean()),
        "toxicity": float(tox.mean()),
        "event": float(event),
        "mean_log_marker_ratio": float(np.mean(np.log(np.asarray(end_ratio)))),
        "dose_intensity": float(np.mean(np.asarray(given).sum(axis=-1) / plan)) if plan > 0 else math.nan,
        "days_held": float(np.mean((np.asarray(held) > 0).sum(axis=-1))) if held is not None else 0.0,
        "n": int(len(label)),
    }
