"""``simulate()``: one patient's course under a regimen, as a pandas DataFrame."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._model import AbstractModel, resolve_model
from ._parameters import ParameterSet
from ._plan import DosePlan, plan_regimen
from ._regimen import HOURS_PER_DAY, Regimen
from ._rules import AbstractDoseRules
from ._solve import SolverSettings, Trajectory, check_trajectory, solve_jit

TIME_COLUMN = {"day": "day", "h": "hour"}
_EPS = 1e-9  # model-time tolerance when matching an output time to a segment start


def plan_for(model: AbstractModel, regimen: Regimen, days: int | None = None) -> DosePlan:
    """``regimen`` (over ``days`` days when given) compiled for ``model``."""
    if not isinstance(regimen, Regimen):
        raise ValueError(f"regimen must be a lenapk.Regimen, got {type(regimen).__name__}")
    if days is not None:
        if not (isinstance(days, (int, np.integer)) and not isinstance(days, bool) and days >= 1):
            raise ValueError(f"days must be a whole number of days >= 1, got {days!r}")
        regimen = regimen.with_days(int(days))
    return plan_regimen(
        regimen, compartments=model.pk.compartments, time_unit_h=model.time_unit_h, closed_form=model.pk.closed_form
    )


def output_grid(times, plan: DosePlan, unit: str = "days"):
    """Map output times (model time unit) onto the plan's segments.

    Returns ``(sub_ts, index)``: ``sub_ts`` ``(S, K)`` holds within-segment local times and
    ``index`` lists ``("start", s)`` (segment ``s``'s start, pre-dose; ``s = S`` is the end of the
    horizon) or ``("sub", s, j)`` for each requested time."""
    t0 = np.asarray(plan.t0, dtype=float)
    end = float(t0[-1] + np.asarray(plan.length)[-1])
    t = np.asarray(times, dtype=float).reshape(-1)
    if t.size == 0:
        raise ValueError("times must contain at least one time")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times must be finite, got {t[~np.isfinite(t)][:3].tolist()}")
    if np.any(t < 0) or np.any(t > end + _EPS):
        bad = t[(t < 0) | (t > end + _EPS)][0]
        raise ValueError(f"times must lie in [0, {end:g}] {unit}, got {bad:g}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    starts = np.append(t0, end)
    per_seg: dict[int, list[float]] = {}
    index = []
    for ti in t:
        s = int(np.searchsorted(starts, ti + _EPS, side="right") - 1)
        if abs(ti - starts[s]) <= _EPS:
            index.append(("start", s))
        else:
            slots = per_seg.setdefault(s, [])
            index.append(("sub", s, len(slots)))
            slots.append(float(ti - t0[s]))
    k = max((len(v) for v in per_seg.values()), default=0)
    sub_ts = np.tile(np.asarray(plan.length, dtype=float)[:, None], (1, k))
    for s, v in per_seg.items():
        sub_ts[s, : len(v)] = v
    return sub_ts, index


def gather_outputs(traj: Trajectory, index, names) -> dict[str, np.ndarray]:
    """Observables at the requested times (one patient), following :func:`output_grid`'s index."""
    starts = traj.day_obs if traj.segment_obs is None else traj.segment_obs
    out = {}
    for name in names:
        at_start = np.asarray(starts[name])
        sub = np.asarray(traj.sub_obs[name]) if name in traj.sub_obs else None
        out[name] = np.stack([at_start[..., e[1]] if e[0] == "start" else sub[..., e[1], e[2]] for e in index], axis=-1)
    return out


def simulate(
    regimen: Regimen,
    params: ParameterSet | None = None,
    *,
    days: int | None = None,
    times=None,
    rules: AbstractDoseRules | None = None,
    model: AbstractModel | None = None,
    settings: SolverSettings = SolverSettings(),
) -> pd.DataFrame:
    """Simulate one patient.

    Main arguments:
        regimen: the planned dose events (:class:`lenapk.Regimen`; doses at any time).
        params: a :class:`lenapk.ParameterSet` (default: the model's typical values).
    Other arguments:
        days: days to simulate (default: the regimen's horizon; no doses after it ends).
        times: output times in the model's time unit (default: every unit, ``0, 1, ...``).
            A time at a dose is pre-dose (the dose of day d is given at its time).
        rules: dose-modification rules, deciding at the start of each day.
        model: the model (default: :func:`lenapk.default_model`, the package's flagship);
        settings: solver tolerances.

    Returns one row per output time: the time (column ``day`` or ``hour``, after the model's
    unit), ``dose_mg`` (the total given on that time's day) and the model's observables, plus
    the rule's records when rules are given.  Raises :class:`lenapk.SolverError` if the solve
    fails.
    """
    model = resolve_model(model)
    params = model.default_params() if params is None else params
    if not isinstance(params, ParameterSet):
        raise ValueError(f"params must be a lenapk.ParameterSet, got {type(params).__name__}")
    model.validate(params)
    if rules is not None:
        model.require_observables(rules.observables_read, who=f"rules {type(rules).__name__}")
    plan = plan_for(model, regimen, days)
    horizon = plan.n_days * HOURS_PER_DAY / model.time_unit_h
    times = np.arange(0.0, horizon + 0.5) if times is None else times
    sub_ts, index = output_grid(times, plan, unit=model.time_unit if model.time_unit == "h" else "days")
    traj = solve_jit(model, params, plan, rules, settings, jnp.asarray(sub_ts))
    check_trajectory(traj)
    out = gather_outputs(traj, index, model.observable_names)
    t = np.asarray(times, dtype=float)
    day = np.minimum(np.floor(t * model.time_unit_h / HOURS_PER_DAY + 1e-12).astype(int), plan.n_days)
    inside = day < plan.n_days
    last = np.minimum(day, plan.n_days - 1)
    df = pd.DataFrame(
        {TIME_COLUMN[model.time_unit]: t, "dose_mg": np.where(inside, np.asarray(traj.doses)[last], 0.0), **out}
    )
    for name, rec in traj.rule_records.items():
        rec = np.asarray(rec)
        df[name] = np.where(inside, rec[last], rec[-1] * 0)
    return df
