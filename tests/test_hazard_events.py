"""Events with a cumulative hazard (HazardEvent, HazardEventSpec) on a small toy model whose
state integrates a known hazard, so the answers have a closed form:

    dH/dt = h0 + kh C / (ec50_h + C)        (per day; H(0) = 0)

With ``kh = 0`` the hazard is constant: P(event by day d) = 1 - exp(-h0 d) and, per course of C
days, 1 - exp(-h0 C), for every patient.  With ``kh > 0`` the event follows the dose, which the
schedule optimiser's event constraint then limits.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk import schedules as S
from lenapk._core import AbstractModel, LogNormal, ObservableSpec, OneCompartment, ParameterSpec, PKConstants
from lenapk.calibration import CalibrationSpec, HazardEvent, StudyDesign, SummaryEndpoint, predict_observations
from lenapk.endpoints import EndpointSet, GradeScale, HazardEventSpec, ResponseCriteria

TOY = "toy value"
H0 = 0.01  # 1/day
CYCLE = 7
DOSES = (5.0, 10.0, 20.0, 40.0)
COUNT = GradeScale("count", (80.0, 60.0, 40.0, 20.0), label="ct", event="suppression", unit="units")
EVENT = HazardEventSpec("event_hazard", title="infusion event", cycles=(1, 2))


class HazardToy(AbstractModel):
    """One-compartment PK -> a marker killed by the drug (response), a count it suppresses
    (toxicity) and the cumulative hazard of an event."""

    state_names: ClassVar = ("marker", "count", "event_hazard")
    parameter_specs: ClassVar = (
        ParameterSpec("ka", 1.0, "1/h", "absorption", TOY),
        ParameterSpec("cl", 5.0, "L/h", "clearance", TOY),
        ParameterSpec("v", 50.0, "L", "volume", TOY),
        ParameterSpec("kill", 0.1, "1/day", "maximal kill of the marker", TOY, omega2=0.3),
        ParameterSpec("ec50", 150.0, "ng/mL", "half-maximal kill", TOY),
        ParameterSpec("kout", 0.3, "1/day", "count turnover", TOY),
        ParameterSpec("ic50", 150.0, "ng/mL", "half-maximal suppression of the count", TOY, omega2=0.3),
        ParameterSpec("h0", H0, "1/day", "constant event hazard", TOY),
        ParameterSpec("kh", 0.0, "1/day", "drug-driven event hazard", TOY, positive=False),
        ParameterSpec("ec50_h", 100.0, "ng/mL", "half-maximal event hazard", TOY),
        ParameterSpec("m0", 100.0, "units", "baseline marker", "covariate", kind="covariate"),
    )
    observable_specs: ClassVar = (
        ObservableSpec("conc_ng_ml", "ng/mL", "concentration"),
        ObservableSpec("marker", "units", "disease marker"),
        ObservableSpec("count", "units", "blood count"),
        ObservableSpec("event_hazard", "-", "cumulative hazard of the event"),
    )
    pk: ClassVar = OneCompartment()
    populations: ClassVar = {"adults": {"m0": LogNormal(100.0, 0.2, 30.0, 300.0)}}
    time_unit: ClassVar = "day"
    dose_levels: ClassVar = DOSES
    endpoints: ClassVar = EndpointSet(
        grades=(COUNT,),
        response=ResponseCriteria("marker", normal_below=1.0),
        limiting="ct",
        events=(EVENT,),
    )
    calibration: ClassVar = CalibrationSpec(
        vocabulary={
            "event_any": SummaryEndpoint("any event", ("incidence", "per_course"), HazardEvent("event_hazard")),
        },
        free=("h0",),
    )

    def pk_constants(self, p):
        return PKConstants(ka=p["ka"], k=p["cl"] / p["v"], v=p["v"])

    def initial_state(self, c):
        one = jnp.ones_like(c["kill"] * c["ic50"] * c["m0"])
        return jnp.stack([c["m0"] * one, 100.0 * one, 0.0 * one])

    def rhs(self, t, y, conc, c):
        return jnp.stack(
            [
                -c["kill"] * conc / (c["ec50"] + conc) * y[0],
                c["kout"] * (100.0 * (1.0 - conc / (c["ic50"] + conc)) - y[1]),
                c["h0"] + c["kh"] * conc / (c["ec50_h"] + conc) + 0.0 * y[2],
            ]
        )

    def observables(self, y, conc, c):
        return {"conc_ng_ml": conc, "marker": y[0], "count": y[1], "event_hazard": y[2]}


@pytest.fixture(scope="module")
def toy():
    return HazardToy()


def _regimen(mg=10.0, n_cycles=3, days_on=CYCLE):
    return lenapk.Regimen.cycles(mg, n_cycles=n_cycles, days_on=days_on, cycle_days=CYCLE, name=f"{mg:g} mg")


def _table(rows):
    df = pd.DataFrame(rows, columns=["endpoint", "statistic", "day", "value", "unit", "n", "numerator", "denominator"])
    df.insert(0, "study", "toy")
    df.insert(1, "regimen_id", "r")
    return df


# ------------------------------------------------------------------ calibration predictions
def test_incidence_and_per_course_match_the_closed_form(toy):
    n_days, courses = 21, 3
    design = StudyDesign("toy", _regimen(), "adults", n_days, (0, 7, 14, 21), n_courses=courses, cycle_days=CYCLE)
    table = _table(
        [
            ("event_any", "incidence", 5, 0.05, "fraction", 40, 2, 40),
            ("event_any", "incidence", 14, 0.13, "fraction", 40, 5, 40),
            ("event_any", "per_course", None, 0.07, "fraction", 40, 8, 120),
            ("event_any", "incidence", None, 0.2, "fraction", 40, 8, 40),  # no day: over the horizon
        ]
    )
    out = predict_observations(table, model=toy, designs={"toy": design}, n_patients=8, temperature=0.0)
    expected = [1 - math.exp(-H0 * d) for d in (5, 14, CYCLE, n_days)]
    np.testing.assert_allclose(out["predicted"].to_numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(out["predicted_smooth"].to_numpy(), expected, rtol=1e-6)  # smooth already
    assert list(out["fitted"]) == [True, True, True, True]


def test_fit_gradient_of_the_hazard_incidence(toy):
    """The fit's sensitivities reach the hazard: d/dlog h0 of the incidence by day d is
    h0 d exp(-h0 d), and the count likelihood pulls h0 back towards the truth from either side."""
    from lenapk.calibration import Objective

    design = StudyDesign("toy", _regimen(), "adults", 21, (0, 7, 14, 21), n_courses=3, cycle_days=CYCLE)
    p = 1 - math.exp(-H0 * 14)
    table = _table([("event_any", "incidence", 14, p, "fraction", 100000, None, 100000)])
    obj = Objective(table, model=toy, free=("h0",), n_patients=8, designs={"toy": design}, temperature=0.1)
    study = obj.studies[0]
    pred, jac = study.pred_and_jacobian(study.solve(obj.x0), 0.1)
    assert float(pred[0]) == pytest.approx(p, rel=1e-6)
    assert float(jac[0, 0]) == pytest.approx(H0 * 14 * math.exp(-H0 * 14), rel=1e-4)
    g_high = obj.value_and_grad(obj.x0 + math.log(2.0))[1][0]
    g_low = obj.value_and_grad(obj.x0 - math.log(2.0))[1][0]
    assert g_low < 0 < g_high


# ------------------------------------------------------------------ cohort endpoints
def test_cohort_columns_and_trial_summary(toy):
    df = lenapk.cohort(_regimen(n_cycles=3), n=8, seed=1, model=toy, progress=False, block_size=8, visits="daily")
    np.testing.assert_allclose(df["event_probability"], 1 - math.exp(-H0 * 21), rtol=1e-6)
    np.testing.assert_allclose(df["event_probability_c1"], 1 - math.exp(-H0 * 7), rtol=1e-6)
    np.testing.assert_allclose(df["event_probability_c2"], 1 - math.exp(-H0 * 14), rtol=1e-6)
    summary = lenapk.trial_summary(df, model=toy).set_index("endpoint")
    whole = summary.loc["infusion event incidence, whole regimen"]
    assert whole["statistic"] == "rate" and whole["n"] == 8 and pd.isna(whole["events"])
    assert whole["estimate"] == pytest.approx(1 - math.exp(-H0 * 21), rel=1e-6)
    c1 = summary.loc["infusion event incidence by the end of cycle 1"]
    assert c1["estimate"] == pytest.approx(1 - math.exp(-H0 * 7), rel=1e-6)
    assert 0.0 <= c1["ci_low"] <= c1["estimate"] <= c1["ci_high"] <= 1.0
    # a one-cycle regimen: cycle 2 is not reached
    short = lenapk.cohort(_regimen(n_cycles=1), n=8, seed=1, model=toy, progress=False, block_size=8, visits="daily")
    assert short["event_probability_c2"].isna().all()
    # the comparison table carries the incidences as fractions
    table = S.compare({"10 mg": _regimen(n_cycles=2)}, n=8, seed=1, model=toy, visits="daily")
    assert table["event_probability_c1"].iloc[0] == pytest.approx(1 - math.exp(-H0 * 7), rel=1e-6)
    assert table["event_probability"].iloc[0] == pytest.approx(1 - math.exp(-H0 * 14), rel=1e-6)


def test_hazard_event_spec_checks_and_names():
    assert EVENT.name == "event" and EVENT.column() == "event_probability" and EVENT.column(2) == "event_probability_c2"
    assert HazardEventSpec("x", label="y").shown == "y"
    with pytest.raises(ValueError, match="cycles must be whole numbers >= 1"):
        HazardEventSpec("event_hazard", cycles=(0,))


# ------------------------------------------------------------------ schedule optimisation
OPT = dict(
    n=8, seed=0, n_cycles=2, cycle_days=CYCLE, escalate_every_days=CYCLE, days_on_options=(5, 7), steps=4, inner_steps=2
)


@pytest.fixture(scope="module")
def dose_driven(toy):
    """The toy model with a drug-driven hazard (the event follows the dose)."""
    return toy.default_params().replace(kh=0.05)


def test_event_constraint_changes_the_schedule(toy, dose_driven):
    free = S.optimise_schedule(0.9, params=dose_driven, model=toy, **OPT)
    assert free.event_constraint is None and free.feasible
    e_free = free.metrics["event"]
    assert 0 < e_free < 1 and "event" in free.tradeoff and "smooth_event" in free.tradeoff
    assert free.tradeoff.attrs["event_label"] == "infusion event"
    # the event incidence of each candidate: the closed form needs the concentrations, so check
    # its ordering: more drug, more events
    c = free.candidates.sort_values("total_mg")
    assert np.all(np.diff(c["event"].to_numpy()) >= -1e-12)
    limit = 0.5 * (e_free + c["event"].min())
    limited = S.optimise_schedule(0.9, event_constraint=limit, params=dose_driven, model=toy, **OPT)
    assert limited.feasible and limited.event_constraint == limit
    assert limited.metrics["event"] <= limit < e_free
    assert limited.schedule != free.schedule
    ok = limited.candidates[(limited.candidates["event"] <= limit) & (limited.candidates["toxicity"] <= 0.9)]
    assert limited.metrics["response"] == pytest.approx(ok["response"].max())
    assert limited.settings["event_constraint"] == limit
    # below any schedule's incidence: infeasible, with a warning
    with pytest.warns(RuntimeWarning, match="event_constraint"):
        none = S.optimise_schedule(0.9, event_constraint=1e-4, params=dose_driven, model=toy, **OPT)
    assert not none.feasible and none.metrics["event"] > 1e-4


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, "low", True])
def test_bad_event_constraint(toy, bad):
    with pytest.raises(ValueError, match=r"event_constraint must be a number in \(0, 1\)"):
        S.optimise_schedule(0.3, event_constraint=bad, model=toy, **OPT)


class NoEventToy(HazardToy):
    endpoints: ClassVar = EndpointSet(grades=(COUNT,), response=ResponseCriteria("marker", 1.0), limiting="ct")


def test_event_constraint_needs_a_declared_event():
    with pytest.raises(ValueError, match="NoEventToy declares none"):
        S.optimise_schedule(0.3, event_constraint=0.1, model=NoEventToy(), **OPT)
