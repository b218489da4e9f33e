"""``simulate()``: one patient's course under a regimen, as a pandas DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import jax.numpy as jnp

from .cll import LenalidomideCLL
from .model import Model
from .parameters import ParameterSet
from .regimen import Regimen
from .rules import DoseRules
from .solve import SolverSettings, check_trajectory, gather_outputs, output_grid, solve_days_jit

DEFAULT_MODEL = LenalidomideCLL()

COLUMNS = ("day", "dose_mg", "conc_ng_ml", "alc", "anc", "platelets", "igg", "igm", "iga")


def planned_doses(regimen: Regimen, days: int | None) -> jnp.ndarray:
    """The regimen's planned doses over ``days`` days (zeros after the regimen ends)."""
    if not isinstance(regimen, Regimen):
        raise ValueError(f"regimen must be a lenapk.Regimen, got {type(regimen).__name__}")
    if days is None:
        return regimen.doses
    if not (isinstance(days, (int, np.integer)) and days >= 1):
        raise ValueError(f"days must be a whole number of days >= 1, got {days!r}")
    d = regimen.doses[..., :days]
    pad = days - d.shape[-1]
    return jnp.pad(d, [(0, 0)] * (d.ndim - 1) + [(0, pad)]) if pad > 0 else d


def simulate(
    regimen: Regimen,
    params: ParameterSet | None = None,
    *,
    days: int | None = None,
    times=None,
    rules: DoseRules | None = None,
    model: Model = DEFAULT_MODEL,
    settings: SolverSettings = SolverSettings(),
) -> pd.DataFrame:
    """Simulate one patient.

    Main arguments:
        regimen: the planned dosing (:class:`lenapk.Regimen`).
        params: a :class:`lenapk.ParameterSet` (default: the model's typical values).
    Other arguments:
        days: days to simulate (default: the regimen's length; zero doses after it ends).
        times: output times in days (default ``0, 1, ..., days``).  Values at whole days are
            pre-dose (troughs); the dose of day d is given at time d.
        rules: dose-modification rules evaluated at the start of each day.
        model, settings: the model (default lenalidomide-CLL) and solver tolerances.

    Returns one row per output time with ``day``, ``dose_mg`` (the dose given that day) and the
    model's observables (``conc_ng_ml``, ``alc``, ``anc``, ``platelets``, ``igg``, ``igm``,
    ``iga``, ...).  Raises :class:`lenapk.SolverError` if the solve fails.
    """
    params = model.default_params() if params is None else params
    if not isinstance(params, ParameterSet):
        raise ValueError(f"params must be a lenapk.ParameterSet, got {type(params).__name__}")
    model.validate(params)
    planned = planned_doses(regimen, days)
    n_days = int(planned.shape[-1])
    times = np.arange(n_days + 1, dtype=float) if times is None else times
    sub_ts, index = output_grid(times, n_days)
    traj = solve_days_jit(model, params, planned, jnp.asarray(sub_ts), rules, settings)
    check_trajectory(traj)
    out = gather_outputs(traj, index, model.observable_names)
    doses = np.asarray(traj.doses)
    day_idx = np.array([e[1] for e in index])
    df = pd.DataFrame(
        {
            "day": np.asarray(times, dtype=float),
            "dose_mg": np.where(day_idx < n_days, doses[np.minimum(day_idx, n_days - 1)], 0.0),
            **out,
        }
    )
    for name, rec in traj.rule_records.items():
        rec = np.asarray(rec)
        df[name] = np.where(day_idx < n_days, rec[np.minimum(day_idx, n_days - 1)], rec[-1] * 0)
    return df
