r"""Predictions of summary rows from a simulated virtual cohort.

A study is one virtual cohort; each row is a statistic of it, computed from the cohort's
pre-dose values at the selected days (``T`` is the temperature of
:mod:`lenapk.endpoints._smooth`: 0 gives the clinical count, T > 0 the smooth relaxation used
for fitting, whose maxima over visits are :data:`~lenapk.endpoints.VISIT_SHARPNESS` times
sharper than its threshold sigmoids, so that a relaxed incidence tracks the hard count):

- **mean** of an observable at day ``d``: the cohort mean;
- **response at a day**: the model's response criteria at that day
  (:meth:`ResponseCriteria.at_day`); PR is PR without CR when the study reports CR at the same
  time, PR or better otherwise;
- **best response** over the visits ``0 < v <= horizon``
  (:meth:`ResponseCriteria.best_margins`);
- **per-course rate**: the fraction of the courses 1..K *given* (at least one dose in the
  course: courses after a patient stopped are not counted) in which a visit value fell below
  the threshold (and, with a lower threshold, not below that one); for a treatment-emergent
  event (:class:`FractionBelow` with ``grade_limits``) the threshold of each patient is
  lowered to the first grade limit at or below the patient's day-0 value (:func:`emergent_upper`)
  and the day-0 visit is left out of course 1 (the baseline is the reference, so a smooth count
  must not count a baseline just above a grade limit either);
- **incidence by a day**: patients with a visit value below the threshold at a visit
  ``0 < v <= day``;
- **lab noise** (:class:`FractionBelow` with ``noise_sd`` = s > 0): the per-course and incidence
  counts are of *measured* values ``x_v exp(e_v)``, ``e_v ~ N(0, s^2)`` independent between
  visits, and the prediction is their expectation, the same at every temperature: a patient (or
  course) with visits v has no measured value below ``c`` with probability
  ``prod_v Phi((log x_v - log c) / s)`` (:func:`lenapk.endpoints.noisy_none_below`), an event
  below ``upper`` with ``1 -`` that (:func:`~lenapk.endpoints.noisy_any_below`), and a band event
  (below ``upper`` at a visit, never below ``lower``) with ``P(none below lower) - P(none below
  upper)``;
- **tolerated dose**: patients given at least ``mg`` on at least ``days`` days (hard only);
- **hazard events** (:class:`HazardEvent`, cumulative hazard H): the incidence by a day is the
  cohort mean of ``1 - exp(-H(day))``; the per-course rate the mean over the courses 1..K given
  of ``1 - exp(-(H(end) - H(start)))`` (pre-dose H on the course's first day and the next's).
  Smooth at any temperature.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..endpoints import (
    VISIT_SHARPNESS,
    ResponseCriteria,
    any_below,
    event_probability,
    indicator,
    noisy_any_below,
    safe_log,
    smooth_max,
)
from ._designs import Schedule, StudyDesign
from ._vocabulary import FractionBelow, HazardEvent, MeanOf, ResponseEvent, ToleratedDose

AT_DAY = {"cr": "CR", "sd": "SD", "pd": "PD"}
DOSE_LEVEL_REASON = (
    "not fitted: the maintained dose level is an outcome (escalation by tolerance and response, de-escalation "
    "for toxicity), so responders by dose level confound dose with patient selection; the reported responses may "
    "use criteria the model does not represent; and group membership is discrete (no gradient).  Predicted: "
    "virtual patients grouped by their modal daily dose under the study's dose rule, response = PR or better by "
    "the model's response markers at any visit; 'share' compares group sizes"
)


def needed_observables(rows, response: ResponseCriteria | None) -> tuple[str, ...]:
    """Model observables the rows read."""
    names = set()
    for r in rows:
        if isinstance(r.predictor, (MeanOf, FractionBelow, HazardEvent)):
            names.add(r.predictor.observable)
        elif isinstance(r.predictor, ResponseEvent) and response is not None:
            names |= set(response.observables_read)
    return tuple(sorted(names))


def selected_days(rows, design: StudyDesign) -> tuple[int, ...]:
    """Days whose pre-dose values the rows need: 0, the rows' days, the visits and, for hazard
    events, the days of a hazard incidence and the course boundaries."""
    days = {0}
    hazard = [r for r in rows if isinstance(r.predictor, HazardEvent)]
    if any(r.kind in ("best", "per_course", "incidence") and not isinstance(r.predictor, HazardEvent) for r in rows):
        days |= set(design.visits)
    days |= {r.day for r in rows if r.kind in ("mean", "at_day") and r.day >= 0}
    days |= {r.day for r in hazard if r.kind == "incidence" and r.day >= 0}
    if any(r.kind == "per_course" for r in hazard):
        days |= set(course_bounds(design))
    return tuple(sorted(days))


def course_bounds(design) -> tuple[int, ...]:
    """The first days of the courses 1..K and the day after course K: ``0, C, ..., K C``."""
    return tuple(k * design.cycle_days for k in range(design.n_courses + 1))


def emergent_upper(p: FractionBelow, baseline):
    """Upper threshold of each patient, shape ``(n, 1)``: ``p.upper``, or for a treatment-emergent
    event ``min(upper, max{l in grade_limits : l <= baseline})`` floored at ``p.lower`` (a band
    the patient cannot reach worse than baseline has ``upper = lower``, so no event), and at
    1e-300 where the patient is already at the worst grade."""
    b = jnp.asarray(baseline)[:, None]
    if not p.grade_limits:
        return jnp.full_like(b, p.upper)
    lims = jnp.asarray(p.grade_limits, dtype=b.dtype)
    worse = jnp.max(jnp.where(lims <= b, lims, 1e-300), axis=-1, keepdims=True)
    return jnp.maximum(jnp.minimum(worse, p.upper), p.lower if p.lower is not None else 1e-300)


def any_visit_below(x, threshold, temperature: float, noise_sd: float = 0.0):
    """Per patient, whether a visit value along the last axis fell below ``threshold``: the
    expectation over lab noise (``noise_sd > 0``), else the smooth indicator at ``temperature``
    (the hard one at 0)."""
    if noise_sd > 0:
        return noisy_any_below(x, threshold, noise_sd)
    return any_below(x, threshold, temperature, sharpness=VISIT_SHARPNESS)


def per_course_rate(
    x, visit_days, threshold, *, cycle_days: int, n_courses: int, temperature: float, noise_sd=0.0, why: str = ""
):
    """Per patient and course, whether a visit value fell below ``threshold`` (a number or one
    per patient, shape ``(n, 1)``): ``(..., n_courses)``; with ``noise_sd > 0`` the probability
    over lab noise (:func:`any_visit_below`).  ``why``: added to the error for a course without
    a visit."""
    course = np.asarray(visit_days) // cycle_days
    out = []
    for c in range(n_courses):
        sel = np.flatnonzero(course == c)
        if sel.size == 0:
            raise ValueError(
                f"course {c + 1} has no visit (visit days {list(map(int, visit_days))}{why}); give visits in every "
                "course"
            )
        out.append(any_visit_below(x[..., sel], threshold, temperature, noise_sd))
    return jnp.stack(out, axis=-1)


def courses_given(doses, design) -> np.ndarray | jnp.ndarray:
    """1 for each (patient, course) in which at least one dose was given (the courses a trial
    counts), from the doses of the simulation; 1.0 without dose records."""
    if doses is None:
        return 1.0
    K, L = design.n_courses, design.cycle_days
    d = doses[:, : K * L]
    return (d.reshape(d.shape[0], K, L) > 0).any(axis=-1) * 1.0


def _response_at(values, r, col, response: ResponseCriteria, T):
    st = response.at_day(values, col[r.day], temperature=T)
    category = r.predictor.category
    if category == "pr":
        return st["PR"] if r.cr_reported else st["PR"] + st["CR"]
    if category == "overall":
        return st["PR"] + st["CR"]
    return st[AT_DAY[category]]


def _over_given_courses(rate, doses, design):
    """Mean of per-patient, per-course rates ``(n, K)`` over the courses in which a dose was given."""
    given = courses_given(doses, design) * jnp.ones_like(rate)
    return jnp.sum(rate * given) / jnp.maximum(jnp.sum(given), 1.0)


def _hazard_rate(values, r, col, design, doses):
    """Incidence by ``r.day`` or per-course rate of a :class:`HazardEvent` (smooth, no temperature)."""
    h = values[r.predictor.observable]
    if r.kind == "incidence":
        return jnp.mean(event_probability(h[:, col[0]], h[:, col[r.day]]))
    bounds = [col[d] for d in course_bounds(design)]
    return _over_given_courses(event_probability(h[:, bounds[:-1]], h[:, bounds[1:]]), doses, design)


def _rate(values, r, col, design, T, doses):
    p = r.predictor
    if isinstance(p, HazardEvent):
        return _hazard_rate(values, r, col, design, doses)
    visit_days = np.asarray([v for v in design.visits if v in col])
    upper = emergent_upper(p, values[p.observable][:, col[0]])
    if r.kind == "per_course":
        if p.grade_limits:  # the day-0 baseline is the reference, never an event (smooth counts too)
            visit_days = visit_days[visit_days > 0]
        x = values[p.observable][:, [col[v] for v in visit_days]]
        why = "; a treatment-emergent row leaves day 0 out" if p.grade_limits else ""
        kw = dict(cycle_days=design.cycle_days, n_courses=design.n_courses, temperature=T, noise_sd=p.noise_sd, why=why)
        rate = per_course_rate(x, visit_days, upper, **kw)
        if p.lower is not None:
            rate = rate - per_course_rate(x, visit_days, p.lower, **kw)
        return _over_given_courses(jnp.asarray(rate), doses, design)
    x = values[p.observable][:, [col[v] for v in design.visits if 0 < v <= r.day]]
    if p.noise_sd > 0:
        hit = any_visit_below(x, upper, T, p.noise_sd)
        if p.lower is None:
            return jnp.mean(hit)
        band = hit - any_visit_below(x, p.lower, T, p.noise_sd)
        return jnp.mean(jnp.where(upper[:, 0] > p.lower, band, 0.0))
    m = smooth_max(jnp.log(upper) - safe_log(x), T / VISIT_SHARPNESS)
    if p.lower is None:
        return jnp.mean(indicator(m, T))
    m = jnp.minimum(m, -smooth_max(math.log(p.lower) - safe_log(x), T / VISIT_SHARPNESS))
    # a band the patient cannot reach worse than baseline (upper = lower) has no event at any T
    return jnp.mean(jnp.where(upper[:, 0] > p.lower, indicator(m, T), 0.0))


def predict_rows(
    values: dict,
    rows,
    design: StudyDesign | Schedule,
    sel_days: tuple[int, ...],
    temperature: float,
    doses=None,
    response: ResponseCriteria | None = None,
) -> jnp.ndarray:
    """Predicted summary of each row (NaN for rows without a model) from the cohort's pre-dose
    values at ``sel_days`` (``values[name]`` of shape (n, len(sel_days))).  Pure jnp; smooth for
    ``temperature > 0``."""
    T = float(temperature)
    col = {d: j for j, d in enumerate(sel_days)}
    visit_cols = [col[v] for v in design.visits if v > 0 and v in col]
    margins = {}
    out = []
    for r in rows:
        if r.kind == "mean":
            out.append(jnp.mean(values[r.predictor.observable][:, col[r.day]]))
        elif r.kind == "at_day":
            out.append(jnp.mean(jnp.asarray(_response_at(values, r, col, response, T))))
        elif r.kind == "best":
            margins = margins or response.best_margins(values, visit_cols, T, sharpness=VISIT_SHARPNESS)
            category = r.predictor.category
            out.append(
                jnp.mean(indicator(margins["overall" if category == "pr" and not r.cr_reported else category], T))
            )
        elif r.kind in ("per_course", "incidence"):
            out.append(_rate(values, r, col, design, T, doses))
        elif r.kind == "tolerated" and doses is not None:
            p: ToleratedDose = r.predictor
            days_at = jnp.sum(jnp.asarray(doses) >= p.mg - 1e-9, axis=-1)
            out.append(jnp.mean((days_at >= p.days) * 1.0))
        else:
            out.append(jnp.asarray(jnp.nan))
    return jnp.stack([jnp.asarray(o, dtype=jnp.float64) for o in out]) if out else jnp.zeros(0)


def dose_level_predictions(
    dose_levels: pd.DataFrame,
    study: str,
    design: StudyDesign,
    values: dict,
    sel_days,
    doses,
    response: ResponseCriteria,
) -> pd.DataFrame:
    """Observed vs predicted response rate and share of patients by maintained dose level (hard
    counts; see :data:`DOSE_LEVEL_REASON`)."""
    rows = dose_levels[dose_levels["study"] == study]
    if len(rows) == 0:
        return pd.DataFrame()
    modal = []
    for g in np.where(np.asarray(doses) > 0, np.asarray(doses), np.nan):
        g = g[np.isfinite(g)]
        vals, counts = np.unique(g, return_counts=True) if g.size else (np.array([np.nan]), np.array([1]))
        modal.append(vals[np.argmax(counts)])
    modal = np.asarray(modal)
    col = {d: j for j, d in enumerate(sel_days)}
    on = [col[v] for v in design.visits if v > 0 and v in col]
    responded = np.asarray(response.ever_pr({k: np.asarray(values[k]) for k in response.markers}, on))
    total = rows["patients"].sum()
    out = []
    for rec in rows.to_dict("records"):
        in_group = np.isclose(modal, rec["dose_mg_per_day"])
        n_g = int(in_group.sum())
        out.append(
            {
                "row": rec["row"],
                "study": study,
                "endpoint": f"responders at {rec['dose_mg_per_day']:g} mg/d",
                "statistic": "proportion",
                "observed": rec["responders"] / rec["patients"],
                "k": rec["responders"],
                "N": rec["patients"],
                "predicted": float(responded[in_group].mean()) if n_g else math.nan,
                "observed_share": rec["patients"] / total,
                "predicted_share": n_g / len(modal),
                "fitted": False,
                "status": DOSE_LEVEL_REASON,
            }
        )
    return pd.DataFrame(out)
