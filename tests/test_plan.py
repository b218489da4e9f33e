"""Dose plans: how rules scale the doses of a day, infusions across midnight, padding of
per-patient segments, and frozen (given) doses on event plans."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import lenapk
from lenapk._core import (
    AbstractDoseRules,
    ParameterSet,
    SolverSettings,
    plan_for,
    solve_jit,
    stack_plans,
    with_given_doses,
)
from lenapk._core._solve import _vmapped_solve_jit
from lenapk.models.turnover import TwoCompartmentTurnover

TIGHT = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=4096)


class GiveOnDay(AbstractDoseRules):
    """Test rule: on ``day`` give ``factor`` x the planned total (and ``extra_mg`` on top, also on a
    day with nothing planned); every other day as planned."""

    day: int = 1
    factor: float = 0.5
    extra_mg: float = 0.0

    @property
    def observables_read(self):
        return ()

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        return state, jnp.where(day == self.day, self.factor * planned_dose + self.extra_mg, planned_dose), {}


@pytest.fixture(scope="module")
def turnover():
    m = TwoCompartmentTurnover()
    return m, m.default_params()


def _pk_reference(p, pk, events, t_out):
    """Amounts of the linear two-compartment PK (central, peripheral) under infusions given as
    (start_h, end_h, rate_mg_h) and central boluses (time_h, mg), by solve_ivp; concentration in
    ng/mL at ``t_out`` (h)."""
    k, k12, k21, v = float(pk.k), float(pk.k12), float(pk.k21), float(pk.v)

    def rate_at(t):
        return sum(r for a, b, r in events if a <= t < b)

    def rhs(t, x):
        c, q = x
        return [rate_at(t) - (k + k12) * c + k21 * q, k12 * c - k21 * q]

    bounds = sorted({0.0, *(a for a, _, _ in events), *(b for _, b, _ in events), *t_out})
    x, out = np.zeros(2), {}
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.setdefault(a, 1000.0 * x[0] / v)
        sol = solve_ivp(rhs, (a, b), x, method="DOP853", rtol=1e-12, atol=1e-14)
        x = sol.y[:, -1]
    out[bounds[-1]] = 1000.0 * x[0] / v
    return np.array([out[t] for t in t_out])


def test_an_infusion_across_midnight_keeps_its_start_days_scaling(turnover):
    """A 4-h infusion from 22:00 each day; the rule halves day 1's dose.  Day 1's infusion runs at
    half rate until 02:00 on day 2 although day 2 is given in full (the per-day ratio carried
    across midnight), against an independent solve of the PK with those piecewise rates."""
    model, p = turnover
    reg = lenapk.Regimen.from_events([22.0, 46.0, 70.0], [100.0] * 3, compartment="central", duration_h=4.0, n_days=4)
    plan = plan_for(model, reg)
    assert plan.carries_day_ratios
    t_out = np.arange(0.0, 96.0, 0.5)
    df = lenapk.simulate(reg, p, rules=GiveOnDay(), model=model, times=t_out, settings=TIGHT)
    np.testing.assert_array_equal(df.groupby(df["hour"] // 24)["dose_mg"].first().to_numpy(), [100, 50, 100, 0])
    events = [(22.0, 26.0, 25.0), (46.0, 50.0, 12.5), (70.0, 74.0, 25.0)]
    ref = _pk_reference(p, model.pk_constants(p), events, t_out)
    np.testing.assert_allclose(df["conc_ng_ml"], ref, rtol=1e-8, atol=1e-9)


def test_nothing_is_given_on_a_day_with_nothing_planned(turnover):
    """A rule that hands out a dose on a day with nothing planned gives nothing (rules scale the
    planned doses): the day's recorded dose is 0 and the PK stays as without the rule."""
    model, p = turnover
    reg = lenapk.Regimen.from_events([0.0, 48.0], [100.0, 100.0], compartment="central", n_days=3)
    plan = plan_for(model, reg)
    extra = solve_jit(model, p, plan, GiveOnDay(day=1, factor=1.0, extra_mg=30.0), TIGHT)
    plain = solve_jit(model, p, plan, None, TIGHT)
    np.testing.assert_array_equal(np.asarray(extra.doses), [100.0, 0.0, 100.0])
    np.testing.assert_array_equal(np.asarray(extra.day_obs["conc_ng_ml"]), np.asarray(plain.day_obs["conc_ng_ml"]))


def test_a_rule_scales_every_dose_of_a_day(turnover):
    """Three oral doses a day; halving day 1 halves each of its three doses (a third of the day's
    total each): the concentration equals that of a regimen planned with the halved doses."""
    model, p = turnover
    times = [2.0, 10.0, 18.0, 26.0, 34.0, 42.0, 50.0, 58.0, 66.0]
    reg = lenapk.Regimen.from_events(times, [60.0] * 9, n_days=3)
    halved = lenapk.Regimen.from_events(times, [60.0] * 3 + [30.0] * 3 + [60.0] * 3, n_days=3)
    t_out = np.arange(0.0, 72.0, 1.0)
    a = lenapk.simulate(reg, p, rules=GiveOnDay(), model=model, times=t_out, settings=TIGHT)
    b = lenapk.simulate(halved, p, model=model, times=t_out, settings=TIGHT)
    np.testing.assert_allclose(a["conc_ng_ml"], b["conc_ng_ml"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["biomarker"], b["biomarker"], rtol=1e-9)


def test_padded_per_patient_segments_give_each_patients_own_solve(turnover):
    """Patients with different numbers of segments (q8h, q12h, once daily with an infusion) solved
    together per patient (plans padded with empty segments at the horizon) equal each solved
    alone."""
    model, p = turnover
    regs = [
        lenapk.Regimen.every(50.0, 8.0, n_days=3, start_h=1.0),
        lenapk.Regimen.every(75.0, 12.0, n_days=3, start_h=6.0),
        lenapk.Regimen.from_events([20.0, 44.0], [150.0, 150.0], compartment="central", duration_h=6.0, n_days=3),
    ]
    plans = [plan_for(model, r) for r in regs]
    assert len({q.n_segments for q in plans}) == 3
    batch, shared = stack_plans(plans)
    assert not shared and batch.t0.shape == (3, max(q.n_segments for q in plans))
    params = ParameterSet({k: jnp.full(3, v) for k, v in p.values.items()}).replace(
        wt=jnp.array([60.0, 70.0, 90.0]), ic50=jnp.array([300.0, 400.0, 500.0])
    )
    together = _vmapped_solve_jit(model, params, batch, GiveOnDay(day=2, factor=0.5), TIGHT)
    for i, plan in enumerate(plans):
        alone = solve_jit(
            model,
            p.replace(wt=[60.0, 70.0, 90.0][i], ic50=[300.0, 400.0, 500.0][i]),
            plan,
            GiveOnDay(day=2, factor=0.5),
            TIGHT,
        )
        for name in ("conc_ng_ml", "biomarker"):
            np.testing.assert_allclose(
                np.asarray(together.day_obs[name][i]),
                np.asarray(alone.day_obs[name]),
                rtol=1e-12,
                atol=1e-12,
                err_msg=f"patient {i} {name}",
            )
        np.testing.assert_array_equal(np.asarray(together.doses[i]), np.asarray(alone.doses))


def test_frozen_doses_on_an_event_plan_equal_the_rules_doses(turnover):
    """The doses a rule gave (``Trajectory.doses``), frozen into the plan (what a fit does), give
    the same course without the rule, on an event plan with two doses and an infusion a day."""
    model, p = turnover
    reg = lenapk.Regimen.from_events(
        [4.0, 16.0, 30.0, 40.0, 52.0, 64.0],
        [80.0, 80.0, 120.0, 80.0, 80.0, 120.0],
        compartment=["depot", "depot", "central", "depot", "depot", "central"],
        duration_h=[0.0, 0.0, 5.0, 0.0, 0.0, 5.0],
        n_days=3,
    )
    plan = plan_for(model, reg)
    ruled = solve_jit(model, p, plan, GiveOnDay(day=1, factor=0.25), TIGHT)
    np.testing.assert_allclose(np.asarray(ruled.doses), [160.0, 0.25 * 200.0, 200.0])
    frozen = solve_jit(model, p, with_given_doses(plan, ruled.doses), None, TIGHT)
    for name in ("conc_ng_ml", "biomarker"):
        np.testing.assert_allclose(np.asarray(frozen.day_obs[name]), np.asarray(ruled.day_obs[name]), rtol=1e-12)
