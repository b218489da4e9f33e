"""Per-patient endpoints of a cohort, declared by the model as data (:class:`EndpointSet`).

Every endpoint reads the pre-dose values of the model's observables at the lab visits
(``visits``: on-treatment days ``1..n_days``, day 0 the baseline) and writes its columns:

- :class:`GradeScale` ``g`` (``g.label`` = L): ``L_grade`` (worst on-treatment grade),
  ``L_nadir`` and ``L_nadir_day`` (first day of the minimum), and per cycle ``L_grade_c1..``
  (cycle ``c`` holds the visits ``(c-1)C <= day < cC`` of cycle length C; the end-of-treatment
  value, day ``n_days``, counts in the last cycle); with lab noise (``g.noise_sd > 0``) also
  ``L_p_severe`` and ``L_p_severe_c1..``: the probability that a *measured* value reached the
  severe grade at a visit (over the regimen, in each cycle), whose means are the comparison's
  grade rates (what a trial's labs would count), while ``L_grade`` stays the model's values;
- :class:`ResponseCriteria`: ``best_response`` (CR/PR/SD/PD), ``time_to_response`` (first visit
  with PR or better, days) and ``time_to_best_response`` (first visit at the best response;
  NaN for SD/PD);
- :class:`ValueAtCycles`: the value (``{label}_c12``) or its change from baseline in percent
  (``{label}_change_c12``) at the end of the given cycles (NaN when the regimen is shorter);
- :class:`HazardEventSpec` (an event with a cumulative hazard observable, read daily, not at the
  visits): ``{label}_probability`` (probability of at least one event over the regimen) and
  ``{label}_probability_c{c}`` (by the end of cycle ``c``; NaN when the regimen is shorter).

Dosing columns come with every model: ``planned_mg``, ``delivered_mg``, ``dose_intensity``
(delivered / planned), ``last_dose_mg`` (the dose level a patient ended on), ``days_held`` (days
with the rule record ``held``; without it, planned-dose days on which nothing was given; 0
without rules) and, with ``DoseModificationRules``-style records, ``n_reductions``,
``stopped`` / ``stop_day`` and ``final_dose_cap_mg`` (the cap in force on the last day on
treatment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ._grades import GradeScale
from ._hazard import HazardEventSpec
from ._response import CATEGORIES, ResponseCriteria

RESPONSE_DTYPE = pd.CategoricalDtype(list(CATEGORIES), ordered=False)


@dataclass(frozen=True)
class ValueAtCycles:
    """``observable`` at the end of ``cycles`` (day ``c * cycle_days``): the value, or with
    ``percent_change`` its change from baseline in percent.  ``baseline_column``: a covariate
    column holding the baseline, for the comparison's change from baseline (``None``: not
    compared)."""

    observable: str
    cycles: tuple[int, ...]
    percent_change: bool = False
    label: str | None = None
    baseline_column: str | None = None
    unit: str = ""
    title: str = ""

    def __post_init__(self):
        if self.percent_change and self.baseline_column is not None:
            raise ValueError(
                f"ValueAtCycles {self.name}: a percent change is already relative to baseline; give "
                "percent_change or baseline_column, not both"
            )

    @property
    def name(self) -> str:
        return self.label or self.observable

    @property
    def shown(self) -> str:
        """How tables call the value (``title``, or the column name)."""
        return self.title or self.name

    def column(self, cycle: int) -> str:
        return f"{self.name}_change_c{cycle}" if self.percent_change else f"{self.name}_c{cycle}"


@dataclass(frozen=True)
class Assessment:
    """What endpoints read: daily pre-dose values (index = day, ``(n, n_days + 1)``) and the
    on-treatment visit days."""

    daily: dict
    visits: np.ndarray
    cycle_days: int

    @property
    def n_days(self) -> int:
        return next(iter(self.daily.values())).shape[-1] - 1

    @property
    def n_cycles(self) -> int:
        return -(-self.n_days // self.cycle_days)

    @property
    def visit_cycle(self) -> np.ndarray:
        return np.minimum(self.visits // self.cycle_days, self.n_cycles - 1)

    def per_cycle(self, values: np.ndarray, reduce) -> np.ndarray:
        starts = np.searchsorted(self.visit_cycle, np.arange(self.n_cycles))
        return reduce.reduceat(values, starts, axis=1)


@dataclass(frozen=True)
class EndpointSet:
    """The endpoints a model declares for cohorts, comparisons and schedule optimisation:
    toxicity ``grades``, a ``response`` criterion, values at cycles and ``events`` with a
    cumulative hazard.  ``limiting`` names the grade scale (by label) whose severe grade limits
    doses in :func:`lenapk.optimise_schedule`; its ``event_constraint`` limits the incidence of the
    first of ``events``."""

    grades: tuple[GradeScale, ...] = ()
    response: ResponseCriteria | None = None
    values: tuple[ValueAtCycles, ...] = ()
    limiting: str | None = None
    compare_response_cycles: tuple[int, ...] = ()
    events: tuple[HazardEventSpec, ...] = ()

    @property
    def observables_read(self) -> tuple[str, ...]:
        names = [g.observable for g in self.grades] + [v.observable for v in self.values]
        names += list(self.response.observables_read) if self.response else []
        names += [e.observable for e in self.events]
        return tuple(dict.fromkeys(names))

    @property
    def limiting_scale(self) -> GradeScale:
        for g in self.grades:
            if g.label == self.limiting:
                return g
        raise ValueError(f"the endpoint set names no limiting grade scale (limiting={self.limiting!r})")

    def columns(self, a: Assessment) -> tuple[dict, dict]:
        """(columns before the dosing ones, columns after them), in the documented order."""
        v = a.visits
        grades, nadirs, per_cycle = {}, {}, {}
        for g in self.grades:
            x = a.daily[g.observable][:, v]
            gr = g.grade(x)
            grades[f"{g.label}_grade"] = gr.max(axis=1)
            i = np.argmin(x, axis=1)
            nadirs[f"{g.label}_nadir"] = np.take_along_axis(x, i[:, None], 1)[:, 0]
            nadirs[f"{g.label}_nadir_day"] = v[i].astype(np.int64)
            by_cycle = a.per_cycle(gr, np.maximum)
            per_cycle.update({f"{g.label}_grade_c{c + 1}": by_cycle[:, c] for c in range(a.n_cycles)})
            if g.noise_sd > 0:
                grades[f"{g.label}_p_severe"] = g.p_measured_at_least(x, g.severe_grade)
                cycle = a.visit_cycle
                per_cycle.update(
                    {
                        f"{g.label}_p_severe_c{c + 1}": g.p_measured_at_least(x[:, cycle == c], g.severe_grade)
                        for c in range(a.n_cycles)
                    }
                )
        after = self._response_columns(a) if self.response else {}
        for val in self.values:
            x = a.daily[val.observable]
            for c in val.cycles:
                day = c * a.cycle_days
                if day > a.n_days:
                    after[val.column(c)] = np.full(len(x), np.nan)
                elif val.percent_change:
                    after[val.column(c)] = 100.0 * (x[:, day] / x[:, 0] - 1.0)
                else:
                    after[val.column(c)] = x[:, day]
        for ev in self.events:
            after.update(ev.probabilities(a.daily[ev.observable], a.cycle_days))
        return {**grades, **nadirs}, {**after, **per_cycle}

    def _response_columns(self, a: Assessment) -> dict:
        r = self.response
        values = {k: a.daily[k] for k in r.observables_read}
        label, first = r.best(values, a.visits)
        first_cr = r.first_cr_day(values, a.visits)
        return {
            "best_response": pd.Categorical(np.asarray(label).astype(str), dtype=RESPONSE_DTYPE),
            "time_to_response": np.asarray(first, dtype=np.float64),
            "time_to_best_response": np.where(label == "CR", first_cr, np.where(label == "PR", first, np.nan)),
        }

    # ------------------------------------------------------------------ summaries
    def metrics(
        self, df: pd.DataFrame, n_days: int, cycle_days: int, rate: Callable, mean: Callable, missing: Callable
    ) -> None:
        """Comparison metrics of a cohort frame through the callbacks ``rate(column, label, panel,
        events)``, ``mean(column, label, panel, values, clip)`` and ``missing(column, label,
        panel)``; ``panel`` groups metrics in a figure."""
        for g in self.grades:
            name, panel = f"g{g.severe_grade}_{g.event}", f"Grade >= {g.severe_grade} {g.event}"
            label = f"grade >= {g.severe_grade} {g.event} (patients)"
            if g.noise_sd > 0:  # expected count of measured values
                mean(name, label, panel, df[f"{g.label}_p_severe"].to_numpy(dtype=float), (0.0, 1.0))
                course = df[_cycle_columns(df, f"{g.label}_p_severe_c")].to_numpy(dtype=float)
            else:
                rate(name, label, panel, df[f"{g.label}_grade"].to_numpy() >= g.severe_grade)
                course = df[_cycle_columns(df, f"{g.label}_grade_c")].to_numpy() >= g.severe_grade
            mean(
                f"{name}_per_course",
                f"grade >= {g.severe_grade} {g.event} (per {cycle_days}-day course)",
                panel,
                course.mean(axis=1),
                (0.0, 1.0),
            )
        if self.response is not None:
            panel = "Response (PR or better)"
            ttr = df["time_to_response"].to_numpy(dtype=float)
            for c in self.compare_response_cycles:
                label = f"response (PR or better) by cycle {c}"
                if c * cycle_days <= n_days:
                    rate(f"response_c{c}", label, panel, np.nan_to_num(ttr, nan=np.inf) <= c * cycle_days)
                else:
                    missing(f"response_c{c}", label, panel)
            rate(
                "response",
                "response (PR or better), whole regimen",
                panel,
                df["best_response"].astype(str).isin(["CR", "PR"]).to_numpy(),
            )
        for c in sorted({c for val in self.values for c in val.cycles}):
            for val in self.values:
                if val.baseline_column is None or c not in val.cycles:
                    continue
                col, label = f"{val.name}_change_c{c}", f"{val.shown} change at cycle {c} ({val.unit})"
                panel = f"Change from baseline at cycle {c}"
                if c * cycle_days <= n_days and val.column(c) in df and val.baseline_column in df:
                    mean(
                        col,
                        label,
                        panel,
                        df[val.column(c)].to_numpy(dtype=float) - df[val.baseline_column].to_numpy(dtype=float),
                        None,
                    )
                else:
                    missing(col, label, panel)
        for ev in self.events:
            panel = f"{ev.shown} (expected incidence)"
            for c in ev.cycles:
                label = f"{ev.shown} by the end of cycle {c}"
                if c * cycle_days <= n_days and ev.column(c) in df:
                    mean(ev.column(c), label, panel, df[ev.column(c)].to_numpy(dtype=float), (0.0, 1.0))
                else:
                    missing(ev.column(c), label, panel)
            mean(ev.column(), f"{ev.shown}, whole regimen", panel, df[ev.column()].to_numpy(dtype=float), (0.0, 1.0))

    def summary(self, df: pd.DataFrame, rate: Callable) -> tuple[list, list]:
        """Rates of :func:`lenapk.trial_summary` through ``rate(name, column, indicator)``; returns
        the (column, label) pairs whose means it reports: toxicity (nadirs) and outcomes."""
        toxicity, outcomes = [], []
        for g in self.grades:
            gr = df[f"{g.label}_grade"]
            rate(f"{g.name} grade >= {g.severe_grade}", f"{g.label}_grade", gr >= g.severe_grade)
            top = len(g.lower_limits)
            rate(f"{g.name} grade {top}", f"{g.label}_grade", gr >= top)
            toxicity += [
                (f"{g.label}_nadir", f"{g.name} nadir ({g.unit})"),
                (f"{g.label}_nadir_day", f"day of {g.name} nadir"),
            ]
        if self.response is not None:
            resp = df["best_response"].astype(str)
            rate("overall response (CR + PR)", "best_response", resp.isin(["CR", "PR"]))
            for r in CATEGORIES:
                rate(f"best response {r}", "best_response", resp == r)
            outcomes += [
                ("time_to_response", "time to response, responders (days)"),
                ("time_to_best_response", "time to best response, responders (days)"),
            ]
        for val in self.values:
            for c in val.cycles:
                what = "change (%)" if val.percent_change else f"({val.unit})"
                outcomes.append((val.column(c), f"{val.shown} at cycle {c} {what}"))
        return toxicity, outcomes

    def incidences(self) -> list[tuple[str, str]]:
        """(column, label) of the hazard events' per-patient probabilities, and of the noisy grade
        scales' probabilities of a measured severe grade, whose means are the cohort incidences
        of :func:`lenapk.trial_summary`."""
        out = [
            (f"{g.label}_p_severe", f"{g.name} grade >= {g.severe_grade}, measured (lab noise; expected incidence)")
            for g in self.grades
            if g.noise_sd > 0
        ]
        for ev in self.events:
            out += [(ev.column(c), f"{ev.shown} incidence by the end of cycle {c}") for c in ev.cycles]
            out.append((ev.column(), f"{ev.shown} incidence, whole regimen"))
        return out

    def per_cycle_rates(self, df: pd.DataFrame, rate: Callable) -> None:
        for g in self.grades:
            cycles = sorted(int(c.rsplit("_c", 1)[1]) for c in df.columns if c.startswith(f"{g.label}_grade_c"))
            for c in cycles:
                rate(
                    f"{g.name} grade >= {g.severe_grade}, cycle {c}",
                    f"{g.label}_grade_c{c}",
                    df[f"{g.label}_grade_c{c}"] >= g.severe_grade,
                    c,
                )


def _cycle_columns(df: pd.DataFrame, prefix: str) -> list[str]:
    """The columns ``{prefix}1, {prefix}2, ...`` of ``df``, in cycle order."""
    return sorted((c for c in df.columns if c.startswith(prefix)), key=lambda c: int(c.rsplit("_c", 1)[1]))


def dosing_columns(doses: np.ndarray, planned: np.ndarray, records: dict, has_rules: bool) -> dict:
    """The dosing columns (see the module docstring) from the doses given ``(n, days)``, the
    planned doses (``(days,)`` or ``(n, days)``) and the rule's daily records."""
    n = len(doses)
    planned = np.broadcast_to(np.asarray(planned, dtype=np.float64), doses.shape)
    cols = {"planned_mg": planned.sum(axis=1), "delivered_mg": doses.sum(axis=1)}
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["dose_intensity"] = np.where(cols["planned_mg"] > 0, cols["delivered_mg"] / cols["planned_mg"], np.nan)
    given = doses > 0
    last = doses.shape[1] - 1 - np.argmax(given[:, ::-1], axis=1)
    cols["last_dose_mg"] = np.where(given.any(axis=1), doses[np.arange(n), last], np.nan)
    if not has_rules:
        cols["days_held"] = np.zeros(n, dtype=np.int64)
    elif "held" in records:
        cols["days_held"] = (records["held"] > 0).sum(axis=1).astype(np.int64)
    else:
        cols["days_held"] = ((planned > 0) & (doses <= 0)).sum(axis=1).astype(np.int64)
    if "reductions" in records:
        cols["n_reductions"] = records["reductions"].max(axis=1).astype(np.int64)
    if "stopped" in records:
        stopped = records["stopped"] > 0
        cols["stopped"] = stopped.any(axis=1)
        cols["stop_day"] = np.where(cols["stopped"], np.argmax(stopped, axis=1), np.nan)
    if "dose_cap_mg" in records:
        cap = records["dose_cap_mg"].astype(np.float64)
        on = ~(records["stopped"] > 0) if "stopped" in records else np.ones(cap.shape, dtype=bool)
        last = cap.shape[1] - 1 - np.argmax(on[:, ::-1], axis=1)
        cols["final_dose_cap_mg"] = np.where(on.any(axis=1), cap[np.arange(len(cap)), last], np.nan)
    return cols


def patient_table(
    endpoints: EndpointSet, ids, covariates: pd.DataFrame, a: Assessment, doses, planned, records: dict, has_rules: bool
) -> pd.DataFrame:
    """One row per patient: ``patient``, the covariates, then the endpoints' columns."""
    before, after = endpoints.columns(a)
    cols = {"patient": ids, **{c: covariates[c].to_numpy(dtype=np.float64) for c in covariates.columns}}
    return pd.DataFrame({**cols, **before, **dosing_columns(doses, planned, records, has_rules), **after})


def endpoints_of(model) -> EndpointSet:
    """The endpoints a model declares (``model.endpoints``), or none."""
    found = getattr(model, "endpoints", None)
    return EndpointSet() if found is None else found
