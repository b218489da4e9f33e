r"""A small second model on lenapk's engine: two-compartment PK with an indirect-response PD.

PK (closed form, :class:`lenapk.TwoCompartment`; doses orally into the depot or IV into the
central compartment, as boluses or infusions), with allometric weight scaling::

    CL = CL_70 (WT / 70)^0.75,  Q = Q_70 (WT / 70)^0.75,  V1 = V1_70 WT / 70,  V2 = V2_70 WT / 70
    k10 = CL / V1,  k12 = Q / V1,  k21 = Q / V2,  C = 1000 A_c / V1   [ng/mL from mg and L]

PD: a biomarker with turnover whose production the drug inhibits (indirect response model I,
Dayneka, Garg and Jusko, J Pharmacokinet Biopharm 1993)::

    dR/dt = k_in (1 - I_max C / (IC50 + C)) - k_out R,   k_in = k_out R_0,   R(0) = R_0

Time in hours.  The parameter values are illustrative (no drug in particular); the model shows
that simulate, cohorts with a dose rule on its own observable, fits and comparisons work for
any model on lenapk's interface.  A hold rule on the biomarker, grades of its suppression and a
summary vocabulary are declared below as data.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from .._core import AbstractModel, LogNormal, ObservableSpec, ParameterSpec, PKConstants, TwoCompartment
from ..calibration import CalibrationSpec, FractionBelow, MeanOf, SummaryEndpoint
from ..endpoints import EndpointSet, GradeScale, ValueAtCycles
from ..rules import DoseModificationRules, LabVisits

ILLUSTRATIVE = "illustrative value (example model)"

PARAMETERS = (
    ParameterSpec("cl", 5.0, "L/h", "clearance at 70 kg", ILLUSTRATIVE, omega2=0.09),
    ParameterSpec("v1", 20.0, "L", "central volume at 70 kg", ILLUSTRATIVE, omega2=0.04),
    ParameterSpec("q", 3.0, "L/h", "inter-compartmental clearance at 70 kg", ILLUSTRATIVE),
    ParameterSpec("v2", 40.0, "L", "peripheral volume at 70 kg", ILLUSTRATIVE),
    ParameterSpec("ka", 1.0, "1/h", "first-order absorption rate", ILLUSTRATIVE),
    ParameterSpec("imax", 0.9, "-", "maximal inhibition of biomarker production", ILLUSTRATIVE),
    ParameterSpec("ic50", 400.0, "ng/mL", "concentration of half-maximal inhibition", ILLUSTRATIVE, omega2=0.1),
    ParameterSpec("kout", 0.05, "1/h", "biomarker loss rate (half-life 14 h)", ILLUSTRATIVE, omega2=0.04),
    ParameterSpec("wt", 70.0, "kg", "body weight", "covariate", kind="covariate"),
    ParameterSpec("r0", 100.0, "units", "baseline biomarker", "covariate", kind="covariate"),
)

#: Suppression grades of the biomarker (lower limits of grades 0..3, in biomarker units).
SUPPRESSION = GradeScale(
    "biomarker", (80.0, 60.0, 40.0, 20.0), label="bm", event="suppression", unit="units", title="biomarker"
)


#: Dose strengths of the example drug (mg).
DOSE_LEVELS = (25.0, 50.0, 100.0, 200.0)


def hold_rule(
    *,
    below: float = 40.0,
    resume_at: float = 60.0,
    dose_levels=DOSE_LEVELS,
    visits: LabVisits | None = None,
    cycle_days: int = 7,
) -> DoseModificationRules:
    """Hold the dose while the biomarker is below ``below``; resume one dose level lower once it
    is back above ``resume_at`` (labs every other day by default)."""
    return DoseModificationRules(
        hold_below={"biomarker": below},
        resume_at={"biomarker": resume_at},
        dose_levels=dose_levels,
        min_dose_mg=dose_levels[0],
        cycle_days=cycle_days,
        visits=LabVisits.schedule([(0, None, 2)]) if visits is None else visits,
        label="biomarker hold",
    )


class TwoCompartmentTurnover(AbstractModel):
    """Two-compartment PK -> indirect-response biomarker (see the module docstring)."""

    state_names: ClassVar[tuple[str, ...]] = ("biomarker",)
    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = PARAMETERS
    observable_specs: ClassVar[tuple[ObservableSpec, ...]] = (
        ObservableSpec("conc_ng_ml", "ng/mL", "plasma concentration"),
        ObservableSpec("biomarker", "units", "biomarker (indirect response)"),
    )
    pk: ClassVar[TwoCompartment] = TwoCompartment()
    populations: ClassVar[dict] = {
        "adults": {
            "wt": LogNormal(70.0, 0.2, 40.0, 150.0, source="illustrative"),
            "r0": LogNormal(100.0, 0.25, 30.0, 300.0, source="illustrative"),
        },
    }
    time_unit: ClassVar[str] = "h"
    dose_levels: ClassVar[tuple[float, ...]] = DOSE_LEVELS
    endpoints: ClassVar = EndpointSet(
        grades=(SUPPRESSION,),
        values=(ValueAtCycles("biomarker", (1, 2), baseline_column="r0", unit="units", title="biomarker"),),
        limiting="bm",
    )
    calibration: ClassVar = CalibrationSpec(
        vocabulary={
            "biomarker": SummaryEndpoint("mean biomarker", ("mean",), MeanOf("biomarker"), "units"),
            "suppression_grade3_4": SummaryEndpoint(
                "biomarker below 40 units at a visit",
                ("incidence", "per_course"),
                FractionBelow("biomarker", SUPPRESSION.limit(3)),
            ),
        },
        free=("ic50", "kout"),
        cv={"biomarker": 0.25},
        baseline_covariates={"biomarker": "r0"},
    )

    def pk_constants(self, p):
        w = p["wt"] / 70.0
        cl, q = p["cl"] * w**0.75, p["q"] * w**0.75
        v1, v2 = p["v1"] * w, p["v2"] * w
        return PKConstants(ka=p["ka"], k=cl / v1, v=v1, k12=q / v1, k21=q / v2)

    def initial_state(self, c):
        return jnp.stack([c["r0"] * jnp.ones_like(c["kout"])])

    def rhs(self, t, y, conc, c):
        inhibition = c["imax"] * conc / (c["ic50"] + conc)
        return jnp.stack([c["kout"] * (c["r0"] * (1.0 - inhibition) - y[0])])

    def observables(self, y, conc, c):
        return {"conc_ng_ml": conc, "biomarker": y[0]}
