"""Solve: a ``lax.scan`` over the segments of a :class:`DosePlan`, one adaptive diffrax solve each.

For each segment (local time ``s`` in ``[0, length]``, in the model's time unit):

1. the observables at its start (pre-dose) go to the dose rule when the segment starts a day,
   which returns the day's total to give (:mod:`lenapk._core._rules`);
2. the segment's doses, scaled by given / planned, are added to the PK compartments (or to the
   ODE states of an :class:`OdeDosing` model) and its infusions switched on or off;
3. the ODE is integrated with the concentration in closed form from that PK state
   (:mod:`lenapk._core._pk`): only the slow PD states are integrated (Tsit5, PID step control
   on each patient's weighted RMS of the scaled error, the worst patient of a batch setting the
   shared step: :mod:`lenapk._core._error_norm`), for a batch in the log-linear clock of
   :mod:`lenapk._core._clock` when a dose or an infusion starts the segment for any of its
   patients (unless ``settings.clock`` is None), in time itself otherwise;
4. the PK state is advanced to the segment's end in closed form.

A regimen of daily doses has one segment per day: the day-by-day fast path.  Everything
broadcasts over leading batch axes, so the same function solves one patient, runs under
``vmap`` or solves a whole batch as one ODE with a shared step (plan amounts ``(n, S, C)`` and
per-patient parameters ``(n,)``).  Failures are not returned as silent NaN: each segment's
diffrax result is kept and :func:`check_trajectory` raises :class:`SolverError` naming the
patient and day.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._clock import SegmentClock
from ._error_norm import ERROR_NORMS, error_norm
from ._model import AbstractModel
from ._parameters import ParameterSet
from ._plan import DosePlan, daily_plan, given_ratio, scale_to_given
from ._regimen import HOURS_PER_DAY
from ._rules import AbstractDoseRules, NoRules


class SolverError(RuntimeError):
    """The ODE solver failed (or produced non-finite values) for a named patient."""


class SolverSettings(eqx.Module):
    """Tolerances and step limits of the segment solves.

    ``dt0`` (model time unit) is the first step after each segment start.  5e-4 day (43 s) is far
    below the absorption time scale: with a larger first step (0.005 day) the step right after
    the dose was accepted on an underestimated error and the final-state error stayed near 1e-3
    whatever rtol (benchmarks/speedups.py); with 5e-4 it follows rtol, as the peers' solvers do.
    ``max_steps`` bounds the steps of one segment (at most a day).  ``clock``: the variable a
    batch's segments are integrated in (:class:`SegmentClock`; None integrates in time itself).
    One patient alone (no batch axis) is always solved in time itself: there the clock's
    exponential and logarithm at every evaluation cost more than the steps it saves, while in a
    batch they are shared by its patients (benchmarks/HISTORY.md, eighth session).
    ``error_norm``: how a step's scaled error is measured (:mod:`lenapk._core._error_norm`):
    ``"rms"`` (default), each patient's weighted RMS over its states, CVODE's test; ``"max"``, the
    largest over every state, LSODA's test (NONMEM ADVAN13, mrgsolve, rxode2), stricter by up to
    the square root of the number of states."""

    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-8)
    max_steps: int = eqx.field(static=True, default=1024)
    dt0: float = eqx.field(static=True, default=5e-4)
    clock: SegmentClock | None = eqx.field(static=True, default=SegmentClock())
    error_norm: str = eqx.field(static=True, default="rms")

    def __check_init__(self):
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"settings.{name} must be in (0, 1), got {v!r}")
        if not (isinstance(self.max_steps, int) and self.max_steps > 0):
            raise ValueError(f"settings.max_steps must be a positive int, got {self.max_steps!r}")
        if not (isinstance(self.dt0, (int, float)) and self.dt0 > 0):
            raise ValueError(f"settings.dt0 must be > 0, got {self.dt0!r}")
        if not (self.clock is None or isinstance(self.clock, SegmentClock)):
            raise ValueError(f"settings.clock must be a SegmentClock or None, got {self.clock!r}")
        if self.error_norm not in ERROR_NORMS:
            raise ValueError(f"settings.error_norm must be one of {ERROR_NORMS}, got {self.error_norm!r}")


class Trajectory(eqx.Module):
    """Arrays from :func:`solve`; batch axes lead.

    - ``day_obs[name]``: observables at the start of each day (pre-dose) and at the end of the
      horizon: ``(..., days + 1)``;
    - ``segment_obs[name]``: the same at the start of every segment and the end, ``(..., S + 1)``
      (``None`` when each day is one segment: then it equals ``day_obs``);
    - ``sub_obs[name]``: observables at the within-segment times ``sub_ts``: ``(..., S, K)``;
    - ``doses``: total given each day (mg), ``(..., days)``;
    - ``rule_records``: what the dose rule recorded each day, ``(..., days)`` each;
    - ``ok``: each segment's solve succeeded, ``(..., S)``; ``segment_day``: its day, ``(S,)``;
    - ``final_state``: ODE state at the end, ``(n_states, ...)`` (states first, as in the model).
    """

    day_obs: dict
    segment_obs: dict | None
    sub_obs: dict
    doses: jnp.ndarray
    rule_records: dict
    ok: jnp.ndarray
    segment_day: jnp.ndarray
    final_state: jnp.ndarray


class _Exposure(eqx.Module):
    """The model's dosing: closed-form PK state ``x`` (amounts by compartment) or doses into ODE
    states; infusion rates ``rate`` (mg/h by compartment)."""

    model: AbstractModel
    pk: object  # PKConstants or None
    targets: tuple | None = eqx.field(static=True)  # ODE state index per compartment (OdeDosing)

    @classmethod
    def of(cls, model, params):
        if model.pk.closed_form:
            return cls(model, model.pk_constants(params), None)
        return cls(model, None, tuple(model.state_names.index(model.pk.targets[c]) for c in model.pk.compartments))

    def central_rate(self, rate):
        return None if rate is None else rate[self.model.pk.compartments.index("central")]

    def conc(self, x, rate, tau):
        if self.targets is not None:
            return None
        return self.model.pk.concentration(x, self.model.time_unit_h * tau, self.pk, self.central_rate(rate))

    def dose(self, y, x, doses):
        if self.targets is None:
            return y, x + doses
        return y.at[np.asarray(self.targets)].add(doses), x

    def advance(self, x, rate, length):
        if self.targets is not None:
            return x
        return self.model.pk.advance(x, self.model.time_unit_h * length, self.pk, self.central_rate(rate))

    def vector_field(self, c, t0, clock: SegmentClock | None):
        """``dy/du`` in the segment's variable ``u``: the clock where ``args``' flag is set (a dose
        or an infusion starts the segment), time itself (``dy/dt``) elsewhere or without a clock."""
        unit_h = self.model.time_unit_h

        def f(u, y, args):
            x, rate, clocked = args
            t, speed = u, 1.0
            if clock is not None:
                t_clock, speed_clock = clock.time_and_speed(u, unit_h)
                t, speed = jnp.where(clocked, t_clock, u), jnp.where(clocked, speed_clock, 1.0)
            dy = self.model.rhs(t0 + t, y, self.conc(x, rate, t), c)
            if self.targets is not None and rate is not None:
                dy = dy.at[np.asarray(self.targets)].add(rate * unit_h)
            return dy * speed

        return f


def _broadcast_state(y0, n_states: int, batch_shape):
    y0 = y0.reshape(y0.shape[:1] + (1,) * (len(batch_shape) + 1 - y0.ndim) + y0.shape[1:])
    return jnp.broadcast_to(y0, (n_states,) + batch_shape)


def _decide(rules, plan: DosePlan, rstate, given, seg, obs0):
    """The rule's decision at a day start (carried through the day's other segments)."""
    new_state, new_given, record = rules.step(rstate, seg["day"], seg["planned"], obs0)
    new_given = jnp.broadcast_to(new_given, seg["planned"].shape)
    if plan.one_segment_per_day:
        return new_state, new_given, record
    start = seg["day_start"]
    keep = lambda new, old: jnp.where(start, new, old)  # noqa: E731
    return jax.tree.map(keep, new_state, rstate), keep(new_given, given), record


def _rates(plan: DosePlan, rate, ratios, ratio, seg):
    """Infusion rates after the segment start (each scaled by its start day's given / planned)."""
    if not plan.has_infusions:
        return rate, ratios
    if plan.carries_day_ratios:
        ratios = ratios.at[..., seg["day"]].set(ratio)
        ratio_off = ratios[..., seg["rate_off_day"]]
    else:
        ratio_off = ratio
    return rate + seg["rate_on"] * ratio - seg["rate_off"] * ratio_off, ratios


def _xs(plan: DosePlan, sub_ts):
    """Per-segment inputs of the scan, segment axis first (compartments next, then batch)."""
    to_front = lambda a, k: jnp.moveaxis(a, tuple(range(a.ndim - k, a.ndim)), tuple(range(k)))  # noqa: E731
    xs = {
        "t0": plan.t0,
        "length": plan.length,
        "day": plan.day,
        "day_start": plan.day_start,
        "amounts": to_front(plan.amounts, 2),
        "planned": to_front(plan.planned[..., plan.day], 1),
        "ts": sub_ts,
    }
    if plan.has_infusions:
        xs.update(
            rate_on=to_front(plan.rate_on, 2), rate_off=to_front(plan.rate_off, 2), rate_off_day=plan.rate_off_day
        )
    return xs


def solve(
    model: AbstractModel,
    params: ParameterSet,
    plan: DosePlan,
    rules: AbstractDoseRules | None = None,
    settings: SolverSettings = SolverSettings(),
    sub_ts=None,
) -> Trajectory:
    """Simulate ``plan`` (pure JAX: jit, vmap and grad go through).  ``sub_ts``: optional
    within-segment output times (local, in ``(0, length]``), shape ``(S, K)``, shared by the
    batch.  Segment times must be shared by the batch (``vmap`` for per-patient times)."""
    rules = NoRules() if rules is None else rules
    batch_shape = plan.batch_shape
    c = model.derive(params)
    exposure = _Exposure.of(model, params)
    n_cmt = plan.amounts.shape[-1]
    has_sub = sub_ts is not None and sub_ts.shape[-1] > 0
    sub_ts = jnp.asarray(sub_ts) if has_sub else jnp.zeros((plan.n_segments, 0))
    carry = (
        _broadcast_state(model.initial_state(c), model.n_states, batch_shape),
        jnp.zeros((n_cmt,) + batch_shape),
        jnp.zeros((n_cmt,) + batch_shape) if plan.has_infusions else None,
        rules.init(batch_shape),
        jnp.zeros(batch_shape),
        jnp.ones(batch_shape + (plan.n_days,)) if plan.carries_day_ratios else None,
    )
    step = _segment_step(model, c, exposure, plan, rules, settings, batch_shape, has_sub)
    carry, (obs, sub, given, records, ok) = jax.lax.scan(step, carry, _xs(plan, sub_ts))
    y_fin, x_fin, rate_fin = carry[0], carry[1], carry[2]
    obs_end = model.observables(y_fin, exposure.conc(x_fin, rate_fin, 0.0), c)
    seg_obs = {k: jnp.moveaxis(jnp.concatenate([obs[k], obs_end[k][None]], axis=0), 0, -1) for k in obs}
    to_last = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731
    if plan.one_segment_per_day:
        day_obs, per_day, segment_obs = seg_obs, (lambda a: to_last(a)), None
    else:
        idx = jnp.append(plan.day_segment, plan.n_segments)
        day_obs, segment_obs = {k: v[..., idx] for k, v in seg_obs.items()}, seg_obs
        per_day = lambda a: to_last(a)[..., plan.day_segment]  # noqa: E731
    return Trajectory(
        day_obs=day_obs,
        segment_obs=segment_obs,
        sub_obs={k: jnp.moveaxis(jnp.moveaxis(a, 1, -1), 0, -2) for k, a in sub.items()},  # (S,K,*b) -> (*b,S,K)
        doses=per_day(given),
        rule_records={k: per_day(a) for k, a in records.items()},
        ok=to_last(ok),
        segment_day=plan.day,
        final_state=y_fin,
    )


def _segment_step(model, c, exposure: _Exposure, plan: DosePlan, rules, settings, batch_shape, has_sub):
    term_solver = diffrax.Tsit5()
    clock = settings.clock if batch_shape else None  # one patient alone: time itself (SolverSettings)

    def to_variable(t, clocked):
        return t if clock is None else jnp.where(clocked, clock.clock(t, model.time_unit_h), t)

    def step(carry, seg):
        y, x, rate, rstate, given, ratios = carry
        obs0 = model.observables(y, exposure.conc(x, rate, 0.0), c)
        rstate, given, record = _decide(rules, plan, rstate, given, seg, obs0)
        planned = seg["planned"]
        given = jnp.where(planned > 0, given, 0.0)  # rules scale planned doses: none on an empty day
        ratio = given_ratio(planned, given)
        doses = scale_to_given(seg["amounts"], planned, given)
        clocked = jnp.any(doses > 0) | (jnp.any(seg["rate_on"] > 0) if plan.has_infusions else False)
        y, x = exposure.dose(y, x, doses)
        rate, ratios = _rates(plan, rate, ratios, ratio, seg)
        length = seg["length"]
        save_ts = jnp.concatenate([seg["ts"], length[None]]) if has_sub else length[None]
        save_us = to_variable(save_ts, clocked)  # the last is the segment's end, exactly t1
        max_step = None if clock is None else jnp.where(clocked, clock.max_step(), jnp.inf)
        norm = error_norm(settings.error_norm)
        controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol, norm=norm, dtmax=max_step)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(exposure.vector_field(c, seg["t0"], clock)),
            term_solver,
            0.0,
            save_us[-1],
            to_variable(settings.dt0, clocked),
            y,
            args=(x, rate, clocked),
            # the end alone: saved as the last step's solution, without the dense-output bookkeeping of ts
            saveat=diffrax.SaveAt(ts=save_us) if has_sub else diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=settings.max_steps,
            throw=False,
        )
        sub = {}
        if has_sub:
            tau = seg["ts"].reshape((-1,) + (1,) * len(batch_shape))
            sub = model.observables(jnp.moveaxis(sol.ys[:-1], 0, 1), exposure.conc(x[:, None], rate, tau), c)
        solved = sol.result == diffrax.RESULTS.successful
        ok = jnp.broadcast_to(solved, batch_shape)
        x = exposure.advance(x, rate, length)
        y_end = jnp.where(solved, sol.ys[-1], jnp.inf)  # a failed segment carries inf, not where it stopped
        return (y_end, x, rate, rstate, given, ratios), (obs0, sub, given, record, ok)

    return step


solve_jit = eqx.filter_jit(solve)


def solve_days(
    model: AbstractModel,
    params: ParameterSet,
    planned,
    sub_ts=None,
    rules: AbstractDoseRules | None = None,
    settings: SolverSettings = SolverSettings(),
) -> Trajectory:
    """:func:`solve` for once-daily doses ``planned`` (mg, shape ``(..., days)``) into the model's
    first dose compartment at the start of each day (traceable in ``planned``)."""
    plan = daily_plan(planned, n_compartments=len(model.pk.compartments), day_length=HOURS_PER_DAY / model.time_unit_h)
    return solve(model, params, plan, rules, settings, sub_ts)


solve_days_jit = eqx.filter_jit(solve_days)


def failed_patients(traj: Trajectory) -> np.ndarray:
    """Flattened batch indices whose solve failed or whose outputs are not finite."""
    ok = np.asarray(traj.ok)
    finite = np.ones(ok.shape[:-1], dtype=bool)
    for a in traj.day_obs.values():
        finite &= np.all(np.isfinite(np.asarray(a)), axis=-1)
    return np.flatnonzero(~ok.reshape(-1, ok.shape[-1]).all(axis=1) | ~finite.reshape(-1))


def check_trajectory(traj: Trajectory, *, patient_ids=None) -> None:
    """Raise :class:`SolverError` naming the first patient (and day) whose solve failed or whose
    outputs are not finite.  ``patient_ids`` labels the flattened batch (default 0, 1, ...)."""
    bad = failed_patients(traj)
    if bad.size == 0:
        return
    i = int(bad[0])
    pid = i if patient_ids is None else list(patient_ids)[i]
    ok = np.asarray(traj.ok)
    ok_i = ok.reshape(-1, ok.shape[-1])[i]
    seg_day = np.broadcast_to(np.asarray(traj.segment_day), ok.shape).reshape(-1, ok.shape[-1])[i]
    failed = np.flatnonzero(~ok_i)
    where = f"on day {int(seg_day[failed[0]])}" if failed.size else "(non-finite outputs)"
    raise SolverError(
        f"ODE solve failed for patient {pid} {where}; {bad.size} patient(s) affected. "
        "Check that patient's parameters, or raise settings.max_steps / loosen rtol."
    )


def _vmapped_solve(model, params, plan, rules, settings):
    """One adaptive solve per patient (``vmap``): for patients whose dose events fall at different
    times (segment arrays batched too), and to tell which patient broke a shared batch."""
    p_axes = {k: (0 if jnp.ndim(v) else None) for k, v in params.values.items()}
    seg = 0 if jnp.ndim(plan.t0) == 2 else None
    maybe = lambda a, axis: None if a is None else axis  # noqa: E731
    plan_axes = DosePlan(
        t0=seg,
        length=seg,
        day=seg,
        day_start=seg,
        day_segment=seg,
        amounts=0,
        planned=0,
        rate_on=maybe(plan.rate_on, 0),
        rate_off=maybe(plan.rate_off, 0),
        rate_off_day=maybe(plan.rate_off_day, seg),
        one_segment_per_day=plan.one_segment_per_day,
        carries_day_ratios=plan.carries_day_ratios,
        compartment=plan.compartment,
    )
    return jax.vmap(lambda p, pl: solve(model, ParameterSet(p), pl, rules, settings), in_axes=(p_axes, plan_axes))(
        params.values, plan
    )


_vmapped_solve_jit = eqx.filter_jit(_vmapped_solve)


def solve_checked(model, params, plan, rules=None, settings=SolverSettings(), *, patient_ids=None) -> Trajectory:
    """:func:`solve` plus failure checks.  A batch solved as one ODE with a shared step that
    fails is solved again patient by patient (``vmap``), so that the error names the patient
    whose own solve fails, never a bystander of the shared step."""
    traj = solve_jit(model, params, plan, rules, settings)
    try:
        check_trajectory(traj, patient_ids=patient_ids)
    except SolverError:
        if len(plan.batch_shape) != 1:
            raise
        check_trajectory(_vmapped_solve_jit(model, params, plan, rules, settings), patient_ids=patient_ids)
        raise SolverError(
            f"ODE solve failed for the batch of {plan.batch_shape[0]} patients solved together with a shared step, "
            "although each patient solves alone; raise settings.max_steps or solve fewer patients together."
        ) from None
    return traj
