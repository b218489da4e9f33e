"""How the lenalidomide-CLL model is fitted to its trials' summaries: the vocabulary of the
reported endpoints, the study designs, and the priors, bounds and free parameters.

Response is judged on blood lymphocytes only (the model has no nodes, spleen or marrow), so the
reported iwCLL 2008 / NCI-WG 1996 responses are predicted by the ALC proxy and shown, and only
their blood parts (lymphocyte reduction, normalisation) and progression are fitted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..._core import data_path
from ...calibration import (
    CalibrationSpec,
    FractionBelow,
    MeanOf,
    NotModelled,
    Prior,
    ResponseEvent,
    StudyDesign,
    SummaryEndpoint,
    ToleratedDose,
    read_observations,
    standard_visits,
)
from ...rules import LabVisits
from ._data import bundled_regimen_table, load_regimens
from ._endpoints import ANC, PLATELETS, trial_rule

NCI_RESPONSE = (
    "not fitted: NCI-WG 1996 response needs nodes, spleen and marrow, which the model lacks; its blood part "
    "is fitted through lymphocyte_reduction_gt50pct and lymphocyte_normalised (prediction = the ALC-only "
    "proxy, for comparison)"
)
NCI_PD = (
    "fitted with the ALC proxy (ALC rose >= 50% at a visit, never responded): the only information on growth in "
    "relapsed disease; clinical progression also counts nodes, spleen and Richter transformation, so the proxy is "
    "matched to a count it under-represents (biases relapsed growth up)"
)
IWCLL_RESPONSE = (
    "not fitted: iwCLL 2008 PR also needs a >= 50% fall of nodes and spleen, which the model lacks, so its "
    "ALC-only PR is an upper bound on PR, and SD (the rest) a lower bound; PD is fitted with the ALC proxy "
    "(prediction = the ALC-only proxy, for comparison)"
)
GRADE_1_2 = (
    "not fitted: grade 1-2 starts at the lower limit of normal and part of the virtual cohort starts below it "
    "(population model), while the trial counted treatment-emergent events; the model cannot separate the two "
    "(prediction shown for comparison)"
)
RATE = ("incidence", "per_course")


def _response(description: str, category: str) -> SummaryEndpoint:
    caveat = {"best": NCI_PD} if category == "pd" else {}
    not_fitted = {} if category == "pd" else {"best": NCI_RESPONSE, "at_day": IWCLL_RESPONSE}
    return SummaryEndpoint(description, ("proportion",), ResponseEvent(category), not_fitted=not_fitted, caveat=caveat)


def _grades(scale, name: str, what: str) -> dict:
    lln, g3 = scale.limit(1), scale.limit(3)
    return {
        f"{name}_grade3_4": SummaryEndpoint(
            f"grade 3-4 {what} ({scale.name} < {g3:g})", RATE, FractionBelow(scale.observable, g3)
        ),
        f"{name}_grade1_2": SummaryEndpoint(
            f"worst {what} grade 1-2 ({g3:g} <= {scale.name} < {lln:g})",
            RATE,
            FractionBelow(scale.observable, lln, lower=g3),
            not_fitted={"per_course": GRADE_1_2},
        ),
        f"{name}_any_grade": SummaryEndpoint(
            f"{what} of any grade ({scale.name} < {lln:g})", RATE, FractionBelow(scale.observable, lln)
        ),
    }


VOCABULARY = {
    "IgG": SummaryEndpoint("serum IgG", ("mean",), MeanOf("igg"), "mg/dL"),
    "IgM": SummaryEndpoint("serum IgM", ("mean",), MeanOf("igm"), "mg/dL"),
    "IgA": SummaryEndpoint("serum IgA", ("mean",), MeanOf("iga"), "mg/dL"),
    "CD3_T_cells": SummaryEndpoint("circulating CD3+ T cells", ("mean",), MeanOf("cd3"), "cells/uL"),
    "ALC": SummaryEndpoint("absolute lymphocyte count", ("mean",), MeanOf("alc"), "x10^9/L"),
    "ANC": SummaryEndpoint("absolute neutrophil count", ("mean",), MeanOf("anc"), "x10^9/L"),
    "platelets": SummaryEndpoint("platelet count", ("mean",), MeanOf("platelets"), "x10^9/L"),
    "complete_remission": _response("complete remission", "cr"),
    "partial_remission": _response("partial remission", "pr"),
    "overall_response": _response("overall response (CR + nPR + PR)", "overall"),
    "stable_disease": _response("stable disease", "sd"),
    "progressive_disease": _response("progressive disease", "pd"),
    "lymphocyte_reduction_gt50pct": SummaryEndpoint(
        "ALC fell by more than half", ("proportion",), ResponseEvent("marker_halved")
    ),
    "lymphocyte_normalised": SummaryEndpoint(
        "ALC normalised (< 4 x10^9/L)", ("proportion",), ResponseEvent("marker_normal")
    ),
    **_grades(ANC, "neutropenia", "neutropenia"),
    **_grades(PLATELETS, "thrombocytopenia", "thrombocytopenia"),
    "infection_grade3": SummaryEndpoint(
        "grade >= 3 infection", RATE, NotModelled("not represented: the model has no infection process")
    ),
    "tumour_flare_any_grade": SummaryEndpoint(
        "tumour flare of any grade",
        RATE,
        NotModelled("not represented: the model has no tumour-flare (cytokine, lymph-node) process"),
    ),
    "tolerated_25mg": SummaryEndpoint(
        "tolerated 25 mg/d for at least 28 days", ("proportion",), ToleratedDose(25.0, 28)
    ),
}

# The free parameters: clone kinetics (growth, its relapsed multiplier, kill), Ig synthesis (e_help,
# the betas, the recovery delay t_rec), marrow potencies and the T-cell response.  Fixed at their
# assumed values because summary data do not identify them (a 12-parameter joint fit that freed
# k_act, ec50_act and k_supp ran k_act to its bound and left k_act, ec50_act, k_supp, kill and the
# betas with infinite or >100% SEs): k_act, ec50_act and emax_act (only their product with kill is
# seen) and k_supp (with the betas, only the Ig rise is seen).  e_help and t_rec stay free but are
# flagged as not identifiable (they share one flat direction, correlation -0.98).
FREE = (
    "kill",
    "growth",
    "f_relapsed",
    "e_help",
    "beta_igg",
    "beta_igm",
    "beta_iga",
    "t_rec",
    "ec50_n",
    "ec50_p",
    "e_cd3",
)
# Plausible ranges (natural scale) that keep the search away from degenerate, stiff regions.
BOUNDS = {
    "kill": (1e-5, 0.2),
    "growth": (1e-5, 0.05),
    "f_relapsed": (0.05, 50.0),
    "k_act": (1e-3, 1.0),  # activation turnover between 1 day and 3 years ("slow onset")
    "ec50_act": (0.1, 1000.0),
    "emax_act": (0.05, 20.0),
    "e_help": (1e-4, 10.0),
    "k_supp": (0.1, 1000.0),
    "t_rec": (1.0, 5000.0),  # plasma-cell recovery delay between a day and about 14 years
    "beta_igg": (0.01, 10.0),
    "beta_igm": (0.01, 10.0),
    "beta_iga": (0.01, 10.0),
    "ec50_n": (1.0, 1e4),
    "ec50_p": (1.0, 1e4),
    "e_cd3": (1e-3, 10.0),
}
_RANGE = 2 * 1.959963984540054  # a reported range read as a 95% interval: sd = log(hi/lo) / 3.92
PRIORS = {
    # PK (Hughes 2019; older model CL 10.3, V 75.2: sd covers both versions).  Not estimable here.
    "cl": Prior(12.0, 0.15, "Hughes 2019 (older model 10.3 L/h)"),
    "v": Prior(68.8, 0.10, "Hughes 2019 (older model 75.2 L)"),
    "ka": Prior(3.0, 0.5, "tmax about 1 h (label)"),
    "t_half_igg": Prior(22.0, math.log(23 / 21) / _RANGE, "IgG 21-23 d (domain brief) as a 95% range"),
    "t_half_igm": Prior(5.0, 0.2, "IgM about 5 d (domain brief); sd assumed"),
    "t_half_iga": Prior(6.0, 0.2, "IgA about 6 d (domain brief); sd assumed"),
    # Friberg system parameters from other drugs (Kloft 2006, Friberg 2002); sd assumed
    "mtt_n": Prior(84.2 / 24, 0.25, "Kloft 2006 MTT 84.2 h; sd assumed (other drug)"),
    "gamma_n": Prior(0.145, 0.3, "Kloft 2006; sd assumed (other drug)"),
    "mtt_p": Prior(124.0 / 24, 0.25, "Friberg 2002 leukocyte MTT 124 h; sd assumed"),
    "gamma_p": Prior(0.239, 0.3, "Friberg 2002 leukocytes; sd assumed"),
}
CV = {
    "IgG": 0.30,
    "IgM": 0.60,
    "IgA": 0.65,  # = CVs of the population model's baseline Ig distributions
    "CD3_T_cells": 0.50,  # assumed (T-cell counts in CLL are widely dispersed)
    "ALC": 1.0,
    "ANC": 0.45,
    "platelets": 0.45,  # = population model's baseline CVs (relapsed)
}


def _study_design(study: str, rows: pd.DataFrame, regimen, reg_row, rules: bool) -> StudyDesign:
    text = " ".join(str(s).lower() for s in rows.get("setting", pd.Series([""])).unique())
    setting = "relapsed" if ("relapsed" in text or "refractory" in text) else "untreated"
    cycle = regimen.cycle_days
    course_rows = rows[(rows["statistic"] == "per_course") & rows["denominator"].notna() & rows["n"].notna()]
    n_courses = int(round(float((course_rows["denominator"] / course_rows["n"]).max()))) if len(course_rows) else 0
    days = rows["day"].dropna()
    horizon = max(int(math.ceil(days.max())) if len(days) else 0, n_courses * cycle)
    if horizon == 0 or rows["day"].isna().any() and n_courses == 0:
        horizon = max(horizon, regimen.n_days)
    visits = standard_visits(horizon, cycle)
    escalating = (
        reg_row is not None
        and float(reg_row.get("escalation_mg", 0) or 0) > 0
        and float(reg_row["max_mg"]) > float(reg_row["start_mg"])
    )
    use_rules = rules and setting == "relapsed" and escalating
    note = (
        f"{regimen.name}, {horizon} days ({horizon / cycle:g} courses), {setting} population; labs weekly in courses "
        "1-2 then every 14 days; "
        + (
            "dose modification by the trial rule (hold at grade 4: ANC < 0.5 or platelets < 25; resume one 5 mg level "
            "lower at ANC >= 1.0 and platelets >= 50; escalate only after a course without grade >= 3 toxicity)"
            if use_rules
            else "planned doses given throughout (no dose modification simulated)"
        )
    )
    rule = None
    if use_rules:
        step, top = float(reg_row["escalation_mg"]), float(reg_row["max_mg"])
        levels = tuple(float(x) for x in np.arange(step, top + 1e-9, step))
        rule = trial_rule(levels, LabVisits.on_days(list(visits)), cycle)
    return StudyDesign(
        study=str(study),
        regimen=regimen,
        setting=setting,
        n_days=horizon,
        visits=visits,
        n_courses=n_courses,
        rules=rule,
        cycle_days=cycle,
        note=note,
    )


def default_designs(table: pd.DataFrame, model=None, *, rules: bool = True) -> dict[str, StudyDesign]:
    """One :class:`StudyDesign` per study of the table.

    - regimen: its ``regimen_id`` among the bundled regimens;
    - setting: ``"relapsed"`` if the ``setting`` text says relapsed or refractory, else
      ``"untreated"``;
    - horizon: the latest day of the study's rows, and at least the mean number of courses per
      patient of its per-course rows (``round(denominator / n)``: 333 / 44 -> 8 courses), which
      is also ``n_courses``; a study without either gets its regimen's length;
    - visits: the standard lab schedule;
    - rules: relapsed studies on an escalating regimen get :func:`trial_rule` (when ``rules``),
      the others none (every planned dose given: stated in the design's ``note``)."""
    regimens, regimen_table = load_regimens(), bundled_regimen_table()
    designs = {}
    for study, rows in table.groupby("study", sort=False):
        rids = rows["regimen_id"].unique()
        if len(rids) != 1:
            raise ValueError(f"study {study!r} has rows for several regimens {list(rids)}; pass designs=")
        if rids[0] not in regimens:
            raise ValueError(
                f"study {study!r}: unknown regimen_id {rids[0]!r}; known: {sorted(regimens)}; pass designs="
            )
        reg_row = regimen_table[regimen_table["regimen_id"] == rids[0]]
        designs[study] = _study_design(study, rows, regimens[rids[0]], reg_row.iloc[0] if len(reg_row) else None, rules)
    return designs


CALIBRATION = CalibrationSpec(
    vocabulary=VOCABULARY,
    default_designs=default_designs,
    free=FREE,
    bounds=BOUNDS,
    priors=PRIORS,
    cv=CV,
    baseline_covariates={"igg": "igg0", "igm": "igm0", "iga": "iga0"},
    baseline_parameters={"cd3": "cd3_0"},
)


def load_observations(path=None, *, dose_levels=None):
    """The bundled trial summaries (``data/observations.csv`` and ``data/dose_level_response.csv``),
    or tables in their format (a folder, an observation CSV or a DataFrame), validated against
    the lenalidomide-CLL vocabulary.  Raises :class:`lenapk.DatasetError` naming the file, row
    and field of the first problem."""
    if path is None:
        path = data_path("observations.csv")
        dose_levels = data_path("dose_level_response.csv") if dose_levels is None else dose_levels
    return read_observations(path, vocabulary=VOCABULARY, dose_levels=dose_levels)
