"""Solve: a ``lax.scan`` over treatment days, one adaptive diffrax solve per day.

Each day d (local time s in [0, 1] day):

1. the patient's observables at the start of the day (pre-dose trough) go to the dose rule,
   which returns the dose given (see :mod:`lenapk.rules`);
2. the dose is added to the PK depot; the concentration during the day is the closed form of
   :mod:`lenapk.exposure` from that PK state, so only the slow PD states are integrated
   (Tsit5, PID step control on the max norm of the scaled error, so every state of every
   patient in a batch meets ``rtol``/``atol``);
3. the PK state is advanced 24 h in closed form.

Everything broadcasts over leading batch axes, so the same function solves one patient, runs
under ``vmap`` (one adaptive solve per patient) or solves a whole batch as one ODE with a shared
step (``planned`` of shape ``(n, days)`` and per-patient parameters of shape ``(n,)``).

Failures are not returned as silent NaN: each day's diffrax result code is kept and
:func:`check_trajectory` raises :class:`SolverError` naming the patient and day.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .exposure import advance, concentration
from .model import Model
from .parameters import ParameterSet
from .rules import DoseRules, NoRules

HOURS_PER_DAY = 24.0


class SolverError(RuntimeError):
    """The ODE solver failed (or produced non-finite values) for a named patient."""


class SolverSettings(eqx.Module):
    """Tolerances and step limits of the daily solves.

    ``dt0`` (days) is the first step after each dose.  5e-4 day (43 s) is far below the
    absorption time scale: with a larger first step (0.005 day) the step right after the dose was
    accepted on an underestimated error and the final-state error stayed near 1e-3 whatever rtol
    (measured in benchmarks/speedups.py); with 5e-4 it follows rtol, as the peers' solvers do."""

    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-8)
    max_steps_per_day: int = eqx.field(static=True, default=1024)
    dt0: float = eqx.field(static=True, default=5e-4)

    def __check_init__(self):
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"settings.{name} must be in (0, 1), got {v!r}")
        if not (isinstance(self.max_steps_per_day, int) and self.max_steps_per_day > 0):
            raise ValueError(f"settings.max_steps_per_day must be a positive int, got {self.max_steps_per_day!r}")


class Trajectory(eqx.Module):
    """Arrays from :func:`solve_days`; batch axes lead.

    - ``day_obs[name]``: observables at the start of each day, pre-dose, and at the end of the
      last day: shape ``(..., days + 1)``;
    - ``sub_obs[name]``: observables at the within-day times ``sub_ts``: ``(..., days, K)``;
    - ``doses``: dose given each day (mg), ``(..., days)``;
    - ``rule_records``: what the dose rule recorded each day, ``(..., days)`` each;
    - ``ok``: the day's solve succeeded, ``(..., days)``;
    - ``final_state``: ODE state at the end, ``(n_states, ...)`` (states first, as in the model).
    """

    day_obs: dict
    sub_obs: dict
    doses: jnp.ndarray
    rule_records: dict
    ok: jnp.ndarray
    final_state: jnp.ndarray


def solve_days(
    model: Model,
    params: ParameterSet,
    planned: jnp.ndarray,
    sub_ts: jnp.ndarray | None = None,
    rules: DoseRules | None = None,
    settings: SolverSettings = SolverSettings(),
) -> Trajectory:
    """Simulate ``planned.shape[-1]`` days; pure JAX, so it can be jitted, vmapped, differentiated.

    ``planned``: planned dose per day (mg), shape ``(..., days)``.  ``sub_ts``: optional
    within-day output times (fraction of the day in (0, 1]), shape ``(days, K)``, shared by
    the batch.
    """
    rules = NoRules() if rules is None else rules
    planned = jnp.asarray(planned, dtype=jnp.float64)
    batch_shape = planned.shape[:-1]
    n_days = planned.shape[-1]
    p = params
    c = model.derive(p)
    y0 = model.initial_state(c)
    y0 = y0.reshape(y0.shape[:1] + (1,) * (len(batch_shape) + 1 - y0.ndim) + y0.shape[1:])
    y0 = jnp.broadcast_to(y0, (model.n_states,) + batch_shape)
    ka, k, v = model.pk_constants(p)
    pk0 = jnp.zeros((2,) + batch_shape)
    rule_state = rules.init(batch_shape)

    def vector_field(t, y, pk_dosed):
        return model.rhs(t, y, concentration(HOURS_PER_DAY * t, pk_dosed, ka, k, v), c)

    term = diffrax.ODETerm(vector_field)
    solver = diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol, norm=optx.max_norm)
    has_sub = sub_ts is not None and sub_ts.shape[-1] > 0

    def one_day(carry, xs):
        y, pk, rstate = carry
        day, planned_today, ts_today = xs
        obs_start = model.observables(y, concentration(0.0, pk, ka, k, v), c)
        rstate, dose, record = rules.step(rstate, day, planned_today, obs_start)
        dose = jnp.broadcast_to(dose, batch_shape)
        pk_dosed = pk.at[0].add(dose)
        save_ts = jnp.concatenate([ts_today, jnp.ones(1)]) if has_sub else jnp.ones(1)
        sol = diffrax.diffeqsolve(
            term, solver, 0.0, 1.0, settings.dt0, y, args=pk_dosed,
            saveat=diffrax.SaveAt(ts=save_ts),
            stepsize_controller=controller,
            max_steps=settings.max_steps_per_day,
            throw=False,
        )
        y_end = sol.ys[-1]
        if has_sub:
            tau = HOURS_PER_DAY * ts_today.reshape((-1,) + (1,) * len(batch_shape))
            conc_sub = concentration(tau, pk_dosed[:, None], ka, k, v)
            sub = model.observables(jnp.moveaxis(sol.ys[:-1], 0, 1), conc_sub, c)
        else:
            sub = {}
        ok = jnp.broadcast_to(sol.result == diffrax.RESULTS.successful, batch_shape)
        pk_next = advance(pk_dosed, HOURS_PER_DAY, ka, k)
        return (y_end, pk_next, rstate), (obs_start, sub, dose, record, ok)

    days = jnp.arange(n_days)
    ts = sub_ts if has_sub else jnp.zeros((n_days, 0))
    (y_fin, pk_fin, _), (obs, sub, doses, records, ok) = jax.lax.scan(
        one_day, (y0, pk0, rule_state), (days, jnp.moveaxis(planned, -1, 0), ts)
    )
    obs_end = model.observables(y_fin, concentration(0.0, pk_fin, ka, k, v), c)
    day_obs = {
        name: jnp.moveaxis(jnp.concatenate([obs[name], obs_end[name][None]], axis=0), 0, -1)
        for name in obs
    }
    # sub: (days, K, *batch) -> (*batch, days, K)
    sub_obs = {name: jnp.moveaxis(jnp.moveaxis(a, 1, -1), 0, -2) for name, a in sub.items()}
    to_last = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731
    return Trajectory(
        day_obs=day_obs,
        sub_obs=sub_obs,
        doses=to_last(doses),
        rule_records={k_: to_last(a) for k_, a in records.items()},
        ok=to_last(ok),
        final_state=y_fin,
    )


solve_days_jit = eqx.filter_jit(solve_days)


def check_trajectory(traj: Trajectory, *, patient_ids=None) -> None:
    """Raise :class:`SolverError` naming the first patient (and day) whose solve failed or whose
    outputs are not finite.  ``patient_ids`` labels the flattened batch (default 0, 1, ...)."""
    ok = np.asarray(traj.ok)
    finite = np.ones(ok.shape[:-1], dtype=bool)
    for a in traj.day_obs.values():
        finite &= np.all(np.isfinite(np.asarray(a)), axis=-1)
    ok_flat = ok.reshape(-1, ok.shape[-1])
    fin_flat = finite.reshape(-1)
    bad = np.flatnonzero(~ok_flat.all(axis=1) | ~fin_flat)
    if bad.size == 0:
        return
    i = int(bad[0])
    pid = i if patient_ids is None else list(patient_ids)[i]
    failed_days = np.flatnonzero(~ok_flat[i])
    where = f"on day {int(failed_days[0])}" if failed_days.size else "(non-finite outputs)"
    raise SolverError(
        f"ODE solve failed for patient {pid} {where}; {bad.size} patient(s) affected. "
        "Check that patient's parameters, or raise settings.max_steps_per_day / loosen rtol."
    )


def _vmapped_solve(model, params, planned, sub_ts, rules, settings):
    """One adaptive solve per patient (vmap), used to tell which patient broke a shared batch."""
    axes = {k: (0 if jnp.ndim(v) else None) for k, v in params.values.items()}
    return jax.vmap(
        lambda p, d: solve_days(model, ParameterSet(p), d, sub_ts, rules, settings), in_axes=(axes, 0)
    )(params.values, planned)


_vmapped_solve_jit = eqx.filter_jit(_vmapped_solve)


def solve_checked(model, params, planned, sub_ts=None, rules=None, settings=SolverSettings(), *, patient_ids=None):
    """:func:`solve_days_jit` plus failure checks.

    A batch of shape ``(n, days)`` is solved as one ODE with a shared step.  If that solve fails,
    the batch is solved again patient by patient (``vmap``) so that the error names the patient
    whose own solve fails, never a bystander of the shared step.
    """
    traj = solve_days_jit(model, params, planned, sub_ts, rules, settings)
    try:
        check_trajectory(traj, patient_ids=patient_ids)
    except SolverError:
        if jnp.ndim(planned) != 2:
            raise
        check_trajectory(_vmapped_solve_jit(model, params, planned, sub_ts, rules, settings), patient_ids=patient_ids)
        raise
    return traj


def output_grid(times, n_days: int):
    """Map output times (days) onto the solver's grid.

    Returns ``(sub_ts, index)``: ``sub_ts`` of shape ``(n_days, K)`` holds within-day times and
    ``index`` is a list of ``("day", d)`` or ``("sub", d, j)`` for each requested time.
    """
    t = np.asarray(times, dtype=float).reshape(-1)
    if t.size == 0:
        raise ValueError("times must contain at least one time (days)")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times must be finite, got {t[~np.isfinite(t)][:3].tolist()}")
    if np.any(t < 0) or np.any(t > n_days):
        bad = t[(t < 0) | (t > n_days)][0]
        raise ValueError(f"times must lie in [0, {n_days}] days, got {bad}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    day = np.floor(t + 1e-12).astype(int)
    frac = t - day
    is_day = np.abs(frac) < 1e-12
    per_day: dict[int, list[float]] = {}
    index = []
    for ti, d, f, whole in zip(t, day, frac, is_day):
        if whole:
            index.append(("day", int(d)))
        else:
            slots = per_day.setdefault(int(d), [])
            index.append(("sub", int(d), len(slots)))
            slots.append(float(f))
    k = max((len(s) for s in per_day.values()), default=0)
    sub_ts = np.ones((n_days, k))
    for d, s in per_day.items():
        sub_ts[d, : len(s)] = s
    return sub_ts, index


def gather_outputs(traj: Trajectory, index, names) -> dict[str, np.ndarray]:
    """Observables at the requested times (single patient), following ``output_grid``'s index."""
    out = {}
    for name in names:
        day_a = np.asarray(traj.day_obs[name])
        sub_a = np.asarray(traj.sub_obs[name]) if name in traj.sub_obs else None
        vals = [day_a[..., e[1]] if e[0] == "day" else sub_a[..., e[1], e[2]] for e in index]
        out[name] = np.stack(vals, axis=-1)
    return out
