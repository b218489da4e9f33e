"""The log-linear clock of the segment solves (lenapk._core._clock): its maps against their closed
forms and automatic differentiation, and solves in it against the independent SciPy statement of
the lenalidomide-CLL equations (PK as ODE states, DOP853 at rtol 1e-11)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_cll

import lenapk
from lenapk import SegmentClock
from lenapk._core import (
    SolverSettings,
    broadcast_plan,
    gather_outputs,
    output_grid,
    plan_for,
    solve_days_jit,
    solve_jit,
)

DAY_H = 24.0  # the CLL model's time unit, in hours
REF_COLUMNS = {"alc": 2, "anc": 8, "platelets": 13, "igg": 14, "flare_hazard": 19}


def test_the_maps_invert_each_other_and_speed_is_the_derivative():
    clock = SegmentClock()
    t = np.concatenate([[0.0], np.geomspace(1e-6, 30.0, 200)])  # days
    u = clock.clock(t, DAY_H)
    time, speed = clock.time_and_speed(u, DAY_H)
    np.testing.assert_allclose(time, t, rtol=1e-10, atol=1e-18)
    grad = jax.vmap(jax.grad(lambda v: clock.time_and_speed(v, DAY_H)[0]))(u)
    np.testing.assert_allclose(speed, grad, rtol=1e-12)


def test_the_clock_against_its_closed_form_and_limits():
    """u = log(1 + (T / tau) (e^(t/T) - 1)) written naively; t = tau u near 0 and
    t = T (u + log(tau / T)) for t >> T (tau = 3 min, T = 1.5 h, in days)."""
    clock = SegmentClock(tau_h=0.05, linear_h=1.5)
    tau, big_t = 0.05 / DAY_H, 1.5 / DAY_H
    t = np.array([1e-3, 0.01, 0.05, 0.2, 1.0])
    np.testing.assert_allclose(clock.clock(t, DAY_H), np.log(1 + (big_t / tau) * (np.exp(t / big_t) - 1)), rtol=1e-12)
    assert float(clock.time_and_speed(1e-6, DAY_H)[0]) == pytest.approx(tau * 1e-6, rel=1e-5)
    u_far = 400.0  # e^400 would overflow a naive e^u - 1 in float32 and its square in float64
    t_far, speed_far = clock.time_and_speed(u_far, DAY_H)
    assert float(t_far) == pytest.approx(big_t * (u_far + np.log(tau / big_t)), rel=1e-14)
    assert float(speed_far) == pytest.approx(big_t, rel=1e-14)
    assert np.isfinite(float(clock.clock(1e4, DAY_H)))  # 10,000 days: no overflow
    assert clock.max_step() == pytest.approx(2.0)  # 3 h in the linear phase, where dt/du = T


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tau_h": -1.0}, "clock.tau_h must be a positive number of hours, got -1.0"),
        ({"linear_h": "1h"}, "clock.linear_h must be a positive number of hours, got '1h'"),
        ({"max_step_h": 0.0}, "clock.max_step_h must be a positive number of hours, got 0.0"),
        ({"tau_h": 2.0, "linear_h": 1.5}, r"clock.tau_h \(2.0 h\) must be below clock.linear_h \(1.5 h\)"),
    ],
)
def test_bad_clock_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmentClock(**kwargs)


def test_settings_take_only_a_clock_or_none():
    with pytest.raises(ValueError, match="settings.clock must be a SegmentClock or None, got 1.5"):
        SolverSettings(clock=1.5)


def _batch(p, **per_patient):
    """``p`` with the given parameters per patient (a batch solved as one ODE with a shared step)."""
    n = len(next(iter(per_patient.values())))
    values = {k: jnp.full(n, v) for k, v in p.values.items()}
    values.update({k: jnp.asarray(v, dtype=float) for k, v in per_patient.items()})
    return lenapk.ParameterSet(values)


KAS = (3.0, 1.2)  # absorption rate constants (1/h) of the batch's two patients


@pytest.fixture(scope="module")
def escalation(regimens, typical):
    """Three cycles of the 10 -> 25 mg escalation for two relapsed patients (fast and slow
    absorption), and the SciPy reference (DOP853, rtol 1e-11) of each at the day starts."""
    p = typical.replace(relapsed=1.0, anc0=3.0, plt0=120.0)
    reg = regimens["rr_10_to_25_cont"].first_cycles(3)
    refs = []
    for ka in KAS:
        pf = p.replace(ka=ka).as_floats()
        ys = reference_cll.solve_daily(pf, np.asarray(reg.doses), method="DOP853", rtol=1e-11, atol=1e-13)
        ref = {name: ys[:, j] for name, j in REF_COLUMNS.items()}
        ref["alc"] = ref["alc"] + pf["normal_lymph"]
        refs.append(ref)
    return _batch(p, ka=KAS), reg, refs


@pytest.mark.parametrize("clock", [SegmentClock(), None], ids=["clock", "time"])
@pytest.mark.parametrize("norm, rtol", [("rms", 2e-5), ("max", 5e-6)])
def test_default_tolerances_meet_the_reference_in_the_clock_and_in_time(model, escalation, clock, norm, rtol):
    """At the package's rtol 1e-6 / atol 1e-8, a batch solved in the clock is as close to the
    reference as one solved in time itself: every patient within ``rtol`` relative over 84 days,
    2e-5 with the default weighted RMS norm (CVODE's; at these tolerances libroadrunner and scipy
    LSODA are within 7e-7 to 2.5e-5 of a tight solve, benchmarks/RESULTS.md) and 5e-6 with the
    stricter max norm."""
    params, reg, refs = escalation
    planned = jnp.broadcast_to(jnp.asarray(reg.doses), (len(KAS), reg.n_days))
    traj = solve_days_jit(model, params, planned, settings=SolverSettings(clock=clock, error_norm=norm))
    for i, ref in enumerate(refs):
        for name, expected in ref.items():
            got = np.asarray(traj.day_obs[name][i])
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-9, err_msg=f"{name}, patient {i}")


def test_outputs_within_a_day_are_at_their_times_in_the_clock(model, typical):
    """Sub-day outputs of a batch (saved at u(t) inside the clocked segments) against the
    reference at the same times, in the absorption phase and later."""
    reg = lenapk.Regimen.from_daily_doses(np.full(4, 10.0))
    times = np.array([0.0, 0.01, 0.04, 0.1, 0.5, 1.0, 1.02, 2.3, 3.9, 4.0])
    plan = broadcast_plan(plan_for(model, reg), (len(KAS),))
    sub_ts, index = output_grid(times, plan)
    settings = SolverSettings(rtol=1e-10, atol=1e-12)
    traj = solve_jit(model, _batch(typical, ka=KAS), plan, None, settings, jnp.asarray(sub_ts))
    got = gather_outputs(traj, index, ("anc", "platelets", "flare_hazard"))  # (patients, times) each
    for i, ka in enumerate(KAS):
        ys = reference_cll.solve_events(
            typical.replace(ka=ka).as_floats(), reg.time_h, np.asarray(reg.amount_mg), times
        )
        for name in got:
            np.testing.assert_allclose(got[name][i], ys[:, REF_COLUMNS[name]], rtol=1e-8, atol=1e-12, err_msg=name)


def test_a_dose_free_segment_is_solved_in_time_itself(model, typical):
    """Without a dose the segment is not clocked: the clock's settings make no difference (a
    clocked solve would differ from one in time at the tolerance, 1e-7 or more)."""
    planned = jnp.zeros((len(KAS), 5))
    params = _batch(typical, ka=KAS)
    a = solve_days_jit(model, params, planned, settings=SolverSettings(clock=SegmentClock(tau_h=0.01, linear_h=0.2)))
    b = solve_days_jit(model, params, planned, settings=SolverSettings(clock=None))
    np.testing.assert_allclose(np.asarray(a.final_state), np.asarray(b.final_state), rtol=1e-14)  # to rounding
    assert np.all(np.isfinite(np.asarray(a.final_state)))


def test_one_patient_alone_is_solved_in_time_itself(model, typical, regimens):
    """Without a batch axis the clock is not used (SolverSettings): identical results either way."""
    planned = jnp.asarray(regimens["rr_10_to_25_cont"].first_cycles(1).doses)
    a = solve_days_jit(model, typical, planned, settings=SolverSettings())
    b = solve_days_jit(model, typical, planned, settings=SolverSettings(clock=None))
    np.testing.assert_array_equal(np.asarray(a.final_state), np.asarray(b.final_state))
    c = solve_days_jit(model, _batch(typical, ka=(float(typical["ka"]),)), planned[None], settings=SolverSettings())
    assert not np.array_equal(np.asarray(c.final_state)[:, 0], np.asarray(a.final_state))  # a batch of one is clocked
