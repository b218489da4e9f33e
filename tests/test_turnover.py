"""The second model, lenapk.models.turnover.TwoCompartmentTurnover (hours; two-compartment PK ->
indirect-response biomarker), through every generic layer: simulate, cohorts with a dose rule on
its own observable, fit and compare.

References are independent of lenapk's solver: a tight scipy solve of the full ODE (PK
compartments and biomarker, doses as jumps and infusions as inputs), hand-written checks of the
hold rule on the daily values of each patient, parameters recovered from synthetic summaries
generated at known values, and the comparison's metrics recomputed from the cohort frame.  An
``OdeDosing`` variant of the same model (PK as ODE states) must agree with the closed form.

Kept small: a week or two of dosing, 12-16 patients, one block each.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

import lenapk
from lenapk._core import broadcast_plan, gather_outputs, output_grid, plan_for
from lenapk.calibration import StudyDesign
from lenapk.models.turnover import SUPPRESSION, TwoCompartmentTurnover, hold_rule
from lenapk.report import population_bands

SETTING = "adults"
CYCLE = 7
TIGHT = lenapk.SolverSettings(rtol=1e-10, atol=1e-10, max_steps=4096)
HOLD_BELOW, RESUME_AT, LEVELS = 40.0, 60.0, (25.0, 50.0, 100.0, 200.0)  # hold_rule()'s documented defaults


@pytest.fixture(scope="module")
def model():
    return TwoCompartmentTurnover()


def oral(n_days: int, amount: float = 100.0, every_h: float = 12.0) -> lenapk.Regimen:
    return lenapk.Regimen.every(amount, every_h, n_days=n_days, cycle_days=CYCLE, name=f"{amount:g} mg q{every_h:g}h")


def infusion(n_days: int) -> lenapk.Regimen:
    """200 mg IV over 1 h at 08:00 each day."""
    return lenapk.Regimen.every(
        200.0,
        24.0,
        n_days=n_days,
        start_h=8.0,
        compartment="central",
        duration_h=1.0,
        cycle_days=CYCLE,
        name="200 mg IV 1 h",
    )


# ---------------------------------------------------------------------- an independent reference
def reference(p: dict, regimen: lenapk.Regimen, times_h) -> pd.DataFrame:
    """The model's equations, written out here and solved by scipy (DOP853, rtol 1e-11): states
    (depot, central, peripheral amounts in mg, biomarker); boluses are jumps, infusions a
    constant input while they run.  Output at a dose time is the pre-dose value."""
    w = p["wt"] / 70.0
    cl, q, v1, v2 = p["cl"] * w**0.75, p["q"] * w**0.75, p["v1"] * w, p["v2"] * w
    ka, imax, ic50, kout, r0 = p["ka"], p["imax"], p["ic50"], p["kout"], p["r0"]
    k10, k12, k21 = cl / v1, q / v1, q / v2
    cmt = {"depot": 0, "central": 1, "peripheral": 2}
    events = list(zip(regimen.time_h, np.asarray(regimen.amount_mg), regimen.compartment, regimen.duration_h))

    def rhs(t, y, inf):
        conc = 1000.0 * y[1] / v1
        return [
            -ka * y[0],
            ka * y[0] - (k10 + k12) * y[1] + k21 * y[2] + inf,
            k12 * y[1] - k21 * y[2],
            kout * (r0 * (1.0 - imax * conc / (ic50 + conc)) - y[3]),
        ]

    ends = {t + d for t, _, _, d in events if d > 0}
    breaks = sorted({0.0, float(times_h[-1])} | {t for t, *_ in events} | ends)
    breaks = [b for b in breaks if b <= times_h[-1]]
    y = np.array([0.0, 0.0, 0.0, r0])
    out = {0.0: y.copy()}
    for a, b in zip(breaks, breaks[1:]):
        for t0, amt, c, d in events:
            if t0 == a and d == 0:
                y[cmt[c]] += amt
        want = [t for t in times_h if a < t <= b]
        mid = 0.5 * (a + b)  # infusions run over whole intervals between break points (mg/h into central)
        inf = sum(amt / d for t0, amt, _, d in events if d > 0 and t0 <= mid < t0 + d)
        sol = solve_ivp(rhs, (a, b), y, args=(inf,), method="DOP853", rtol=1e-11, atol=1e-12, dense_output=True)
        assert sol.success
        for t in want:
            out[float(t)] = sol.sol(t)
        y = sol.y[:, -1].copy()
    ys = np.array([out[float(t)] for t in times_h])
    return pd.DataFrame({"hour": times_h, "conc_ng_ml": 1000.0 * ys[:, 1] / v1, "biomarker": ys[:, 3]})


def typical_values(model) -> dict:
    return {k: float(v) for k, v in model.default_params().values.items()}


@pytest.mark.parametrize("which", ["oral", "infusion"])
def test_simulate_matches_an_independent_solve(model, which):
    reg = oral(3) if which == "oral" else infusion(3)
    times = np.concatenate([np.arange(0.0, 72.0 + 1e-9, 1.0), [8.5, 9.0 + 1e-3]])
    times = np.unique(times)
    got = lenapk.simulate(reg, model=model, times=times, settings=TIGHT)
    assert list(got.columns) == ["hour", "dose_mg", "conc_ng_ml", "biomarker"]
    want = reference(typical_values(model), reg, times)
    np.testing.assert_allclose(got["conc_ng_ml"], want["conc_ng_ml"], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got["biomarker"], want["biomarker"], rtol=1e-8)
    # the total given on the day each time falls in (none after the 3-day horizon)
    np.testing.assert_allclose(got["dose_mg"], np.where(times < 72.0, 200.0, 0.0))
    # the drug suppresses the biomarker: well below baseline by day 3, never above baseline
    assert got["biomarker"].iloc[-1] < 0.6 * 100.0 and got["biomarker"].max() <= 100.0 + 1e-9


@pytest.mark.parametrize("which", ["oral", "infusion"])
def test_a_batch_in_the_segment_clock_matches_an_independent_solve(model, which):
    """Two patients solved as one ODE with a shared step, so that each dose segment (a bolus, or
    an infusion's start) is integrated in the segment clock, here in the model's hours."""
    reg = oral(3) if which == "oral" else infusion(3)
    times = np.unique(np.concatenate([np.arange(0.0, 72.0 + 1e-9, 1.0), [8.5, 9.0 + 1e-3]]))
    weights = (55.0, 90.0)
    plan = broadcast_plan(plan_for(model, reg), (len(weights),))
    sub_ts, index = output_grid(times, plan, unit="h")
    base = model.default_params()
    params = lenapk.ParameterSet({k: jnp.full(len(weights), v) for k, v in base.values.items()})
    traj = lenapk.solve(model, params.replace(wt=jnp.asarray(weights)), plan, None, TIGHT, jnp.asarray(sub_ts))
    got = gather_outputs(traj, index, ("conc_ng_ml", "biomarker"))  # (patients, times) each
    for i, wt in enumerate(weights):
        want = reference({**typical_values(model), "wt": wt}, reg, times)
        np.testing.assert_allclose(got["conc_ng_ml"][i], want["conc_ng_ml"], rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(got["biomarker"][i], want["biomarker"], rtol=1e-8)


def test_simulate_other_patient_and_times_in_hours(model):
    """A heavier patient with a higher baseline (allometric scaling and r0 as covariates)."""
    p = model.default_params().replace(wt=95.0, r0=140.0, ic50=250.0)
    times = np.array([0.0, 0.5, 3.0, 12.0, 12.25, 47.5])
    got = lenapk.simulate(oral(2), p, model=model, times=times, settings=TIGHT)
    want = reference({k: float(v) for k, v in p.values.items()}, oral(2), times)
    np.testing.assert_allclose(got["hour"], times)
    np.testing.assert_allclose(got["conc_ng_ml"], want["conc_ng_ml"], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got["biomarker"], want["biomarker"], rtol=1e-8)
    assert got["biomarker"].iloc[0] == pytest.approx(140.0)


# ---------------------------------------------------------------------- OdeDosing variant
class OdeTurnover(TwoCompartmentTurnover):
    """The same model with its PK written as ODE states (doses into them)."""

    state_names: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral", "biomarker")
    pk: ClassVar = lenapk.OdeDosing(targets={"depot": "depot", "central": "central", "peripheral": "peripheral"})

    def pk_constants(self, p):
        return None

    def derive(self, p):
        c = dict(p.values)
        w = c["wt"] / 70.0
        c["v1_i"] = c["v1"] * w
        c["k10"], c["k12"] = c["cl"] * w**0.75 / c["v1_i"], c["q"] * w**0.75 / c["v1_i"]
        c["k21"] = c["q"] * w**0.75 / (c["v2"] * w)
        return c

    def initial_state(self, c):
        zero = jnp.zeros_like(c["kout"] * c["r0"])
        return jnp.stack([zero, zero, zero, c["r0"] + zero])

    def rhs(self, t, y, conc, c):
        assert conc is None
        depot, central, peripheral, r = y[0], y[1], y[2], y[3]
        cp = 1000.0 * central / c["v1_i"]
        return jnp.stack(
            [
                -c["ka"] * depot,
                c["ka"] * depot - (c["k10"] + c["k12"]) * central + c["k21"] * peripheral,
                c["k12"] * central - c["k21"] * peripheral,
                c["kout"] * (c["r0"] * (1.0 - c["imax"] * cp / (c["ic50"] + cp)) - r),
            ]
        )

    def observables(self, y, conc, c):
        return {"conc_ng_ml": 1000.0 * y[1] / c["v1_i"], "biomarker": y[3]}


@pytest.mark.parametrize("which", ["oral", "infusion"])
def test_ode_dosing_variant_matches_the_closed_form(model, which):
    reg = oral(3) if which == "oral" else infusion(3)
    ode = OdeTurnover()
    assert ode.pk.compartments == ("depot", "central", "peripheral")
    # both solved to rtol 1e-8 (the default 1e-6 bounds each solve's local error, not the
    # accumulated one: at 1e-6 they differ by up to 2.5e-6)
    settings = lenapk.SolverSettings(rtol=1e-8, atol=1e-8)
    closed = lenapk.simulate(reg, model=model, settings=settings)
    as_ode = lenapk.simulate(reg, model=ode, settings=settings)
    assert list(as_ode.columns) == list(closed.columns) and len(closed) == 73
    np.testing.assert_allclose(as_ode["dose_mg"], closed["dose_mg"])
    peak = closed["conc_ng_ml"].max()
    np.testing.assert_allclose(as_ode["conc_ng_ml"], closed["conc_ng_ml"], rtol=1e-6, atol=1e-6 * peak)
    np.testing.assert_allclose(as_ode["biomarker"], closed["biomarker"], rtol=1e-6)
    assert closed["biomarker"].iloc[-1] < 60.0  # a real effect was compared


# ---------------------------------------------------------------------- cohort with a hold rule
N_COHORT, SEED_COHORT, DAYS_COHORT = 12, 1, 14


@pytest.fixture(scope="module")
def held_cohort(model):
    rule = hold_rule()
    reg = oral(DAYS_COHORT)
    df = lenapk.cohort(
        reg, n=N_COHORT, seed=SEED_COHORT, setting=SETTING, rules=rule, model=model, progress=False, block_size=N_COHORT
    )
    return df, rule, reg


def test_a_patients_table_missing_a_covariate_is_filled_as_asked(model, held_cohort):
    df, rule, reg = held_cohort
    weights = df[["patient", "wt"]]
    with pytest.raises(ValueError, match=r"patients: missing covariate column\(s\) \['r0'\]"):
        lenapk.cohort(reg, patients=weights, setting=SETTING, model=model, progress=False)
    common = dict(seed=SEED_COHORT, setting=SETTING, rules=rule, model=model, progress=False, block_size=N_COHORT)
    # drawn with the patients' own random numbers: the drawn cohort again, to the last column
    pd.testing.assert_frame_equal(lenapk.cohort(reg, patients=weights, fill="drawn", **common), df)
    typical = lenapk.cohort(reg, patients=weights, fill="typical", **common)
    assert (typical["r0"] == 100.0).all()  # the population's median
    np.testing.assert_array_equal(typical["wt"], df["wt"])


def _patient_params(model, n, seed):
    p = lenapk.virtual_population(model, n, seed, setting=SETTING).parameters(model, model.default_params())
    return [lenapk.ParameterSet({k: v[i] for k, v in p.values.items()}) for i in range(n)]


def test_cohort_hold_rule_on_the_biomarker(model, held_cohort):
    df, rule, reg = held_cohort
    assert rule.observables_read == ("biomarker",)
    assert list(df["patient"]) == list(range(N_COHORT))
    assert {"wt", "r0", "bm_grade", "bm_nadir", "days_held", "n_reductions", "biomarker_c1", "biomarker_c2"} <= set(
        df.columns
    )
    held = df["days_held"] > 0
    assert held.any(), "no patient had a dose held: the rule was never exercised"
    assert (df.loc[held, "n_reductions"] >= 1).all() and (df.loc[held, "dose_intensity"] < 1).all()
    planned = float(np.asarray(reg.doses).sum())
    assert (df["planned_mg"] == planned).all() and (df["delivered_mg"] <= planned + 1e-9).all()

    visit_days = rule.visits.days(DAYS_COHORT)
    assert list(visit_days[:4]) == [0, 2, 4, 6]  # labs every other day
    checked_holds = 0
    for i, p in enumerate(_patient_params(model, N_COHORT, SEED_COHORT)):
        sim = lenapk.simulate(reg, p, model=model, rules=rule)
        at_day = sim.set_index("hour").loc[24.0 * np.arange(DAYS_COHORT + 1)]
        bm = at_day["biomarker"].to_numpy()  # pre-dose value at the start of each day, and the end
        dose = at_day["dose_mg"].to_numpy()[:DAYS_COHORT]  # total given each day
        stopped = at_day["stopped"].to_numpy()[:DAYS_COHORT] > 0
        latest_visit = np.array([visit_days[visit_days <= d].max() for d in range(DAYS_COHORT)])
        for d in range(DAYS_COHORT):
            v = latest_visit[d]
            if d in visit_days and bm[d] < HOLD_BELOW:
                assert dose[d] == 0.0, (i, d)  # never dosed on a visit day below the hold threshold
            if dose[d] > 0:
                assert bm[v] >= HOLD_BELOW, (i, d)  # dosed only if the latest visit was not below it
            elif not stopped[d]:
                assert bm[v] < RESUME_AT, (i, d)  # held only until a visit at or above the resume level
                checked_holds += 1
        assert set(np.unique(dose)) <= {0.0, *LEVELS}
        level = [LEVELS.index(x) for x in dose[dose > 0]]
        assert set(np.diff(level)) <= {0, -1}, (i, dose)  # doses only go down, one level per hold
        # the cohort row is this patient's course (solved in a shared-step block there)
        row = df.iloc[i]
        assert row["days_held"] == int(((dose == 0) & ~stopped).sum())
        assert row["delivered_mg"] == pytest.approx(dose.sum())
        assert row["bm_nadir"] == pytest.approx(bm[1:].min(), rel=1e-5)
        assert row["biomarker_c1"] == pytest.approx(bm[CYCLE], rel=1e-5)
        assert row["bm_grade"] == SUPPRESSION.grade(bm[1:]).max()
    assert checked_holds == df["days_held"].sum() > 0


# ---------------------------------------------------------------------- fit
N_FIT, SEED_FIT, DAYS_FIT = 16, 0, 7
FIT_VISITS = (0, 1, 2, 3, 5, 7)


def test_fit_recovers_ic50_and_kout_from_synthetic_summaries(model):
    """Summary rows (biomarker means at the visits, incidence of grade >= 3 suppression by day 7)
    generated at the model's defaults on a virtual cohort of 16 patients; the fit starts at
    ic50 x 2 and kout / 2 on the same cohort and must recover both within 3%."""
    truth = model.default_params()
    reg = oral(DAYS_FIT)
    means = population_bands(model, truth, reg, n=N_FIT, seed=SEED_FIT, setting=SETTING)["biomarker"]["mean"]
    frame = lenapk.cohort(
        reg,
        n=N_FIT,
        seed=SEED_FIT,
        setting=SETTING,
        model=model,
        visits=list(FIT_VISITS[1:]),
        block_size=N_FIT,
        progress=False,
    )
    k = int((frame["bm_grade"] >= 3).sum())
    assert 0 < k < N_FIT  # an informative rate
    rows = [
        dict(
            study="syn",
            regimen_id=reg.name,
            endpoint="biomarker",
            statistic="mean",
            day=d,
            value=float(means[d]),
            unit="units",
            n=N_FIT,
            numerator=None,
            denominator=None,
        )
        for d in FIT_VISITS
    ]
    rows.append(
        dict(
            study="syn",
            regimen_id=reg.name,
            endpoint="suppression_grade3_4",
            statistic="incidence",
            day=DAYS_FIT,
            value=k / N_FIT,
            unit="fraction",
            n=N_FIT,
            numerator=k,
            denominator=N_FIT,
        )
    )
    table = pd.DataFrame(rows)
    assert set(model.calibration.vocabulary) >= {"biomarker", "suppression_grade3_4"}
    design = StudyDesign("syn", reg, SETTING, DAYS_FIT, FIT_VISITS, n_courses=1, cycle_days=CYCLE)
    start = truth.replace(ic50=2.0 * truth["ic50"], kout=0.5 * truth["kout"])
    res = lenapk.fit(
        table,
        model=model,
        params=start,
        free=("ic50", "kout"),
        n_patients=N_FIT,
        seed=SEED_FIT,
        designs={"syn": design},
        steps=40,
        progress=False,
    )
    assert res.converged, res.message
    est = res.estimates.set_index("parameter")["estimate"]
    assert est["ic50"] == pytest.approx(float(truth["ic50"]), rel=0.03)
    assert est["kout"] == pytest.approx(float(truth["kout"]), rel=0.03)
    ovp = res.observed_vs_predicted
    # the day-0 mean anchors the virtual cohort's baselines (r0 rescaled, calibration.baseline_covariates)
    baseline = (ovp["endpoint"] == "biomarker") & (ovp["day"] == 0)
    assert len(ovp) == len(table) and ovp.loc[baseline, "status"].str.startswith("baseline").all()
    assert (ovp.loc[~baseline, "status"] == "fitted").all()
    means_rows = ovp[ovp["endpoint"] == "biomarker"]
    np.testing.assert_allclose(means_rows["predicted"], means_rows["observed"], rtol=0.02)


# ---------------------------------------------------------------------- compare
N_CMP, SEED_CMP, DAYS_CMP = 12, 2, 14


def _wilson(k, n, z=stats.norm.ppf(0.975)):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def _t_interval(x):
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return x.mean(), x.mean() - half, x.mean() + half


def test_compare_two_regimens_against_the_cohort_frames(model):
    regs = {"q12h": oral(DAYS_CMP), "q24h held": oral(DAYS_CMP, 200.0, 24.0)}
    rules = {"q24h held": hold_rule()}
    table = lenapk.compare(regs, n=N_CMP, seed=SEED_CMP, rules=rules, model=model, setting=SETTING, visits="daily")
    metrics = (
        "g3_suppression",
        "g3_suppression_per_course",
        "biomarker_change_c1",
        "biomarker_change_c2",
        "dose_intensity",
        "days_held",
    )
    assert list(table.columns) == ["regimen", "rules", "n", "n_cycles"] + [
        f"{m}{s}" for m in metrics for s in ("", "_lo", "_hi")
    ]
    assert list(table["rules"]) == ["none", "biomarker hold"]
    assert list(table["n_cycles"]) == [2, 2] and list(table["n"]) == [N_CMP, N_CMP]
    for row, (name, reg) in zip(table.to_dict("records"), regs.items()):
        df = lenapk.cohort(
            reg,
            n=N_CMP,
            seed=SEED_CMP,
            setting=SETTING,
            rules=rules.get(name),
            model=model,
            progress=False,
            block_size=N_CMP,
        )
        k = int((df["bm_grade"] >= 3).sum())
        want = {"g3_suppression": (k / N_CMP, *_wilson(k, N_CMP))}
        per_course = (df[["bm_grade_c1", "bm_grade_c2"]] >= 3).mean(axis=1)
        want["g3_suppression_per_course"] = _t_interval(per_course)
        for c in (1, 2):
            want[f"biomarker_change_c{c}"] = _t_interval(df[f"biomarker_c{c}"] - df["r0"])
        want["dose_intensity"] = _t_interval(df["dose_intensity"])
        for m, (est, lo, hi) in want.items():
            assert row[m] == pytest.approx(est, rel=1e-9, abs=1e-12), (name, m)
            if m == "g3_suppression_per_course" or m == "dose_intensity":
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            assert (row[f"{m}_lo"], row[f"{m}_hi"]) == pytest.approx((lo, hi), rel=1e-9, abs=1e-12), (name, m)
        assert row["days_held"] == pytest.approx(df["days_held"].mean())
    q12, q24 = table.set_index("regimen").loc["q12h"], table.set_index("regimen").loc["q24h held"]
    assert q12["dose_intensity"] == 1.0 and q12["days_held"] == 0.0
    assert q24["days_held"] > 0 and q24["dose_intensity"] < 1.0
    # the biomarker falls on treatment (changes from baseline are negative)
    assert q12["biomarker_change_c1"] < -20 and q12["biomarker_change_c1_hi"] < 0
