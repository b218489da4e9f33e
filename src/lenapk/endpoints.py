"""Endpoints: toxicity grades, iwCLL-style response by lymphocyte count, immunoglobulins.

Every endpoint works on daily pre-dose values (``Trajectory.day_obs``: arrays of shape
``(..., days + 1)``, index = study day) read at scheduled lab visits, and comes in two forms:

- hard (``temperature=0``): the clinical count, as in a trial report;
- smooth (``temperature=T > 0``): a differentiable relaxation for fitting.  Each threshold test
  ``x < c`` becomes ``sigmoid((log c - log x) / T)`` (T is a width on the log scale: T = 0.05
  means the indicator goes from 27% to 73% within +/-5% of the threshold), and "any visit below"
  becomes ``sigmoid(T * logsumexp(margins / T) / T)``.  As T -> 0 the smooth value converges to
  the hard one for every patient not exactly at a threshold (the smooth max approaches the max
  with error at most ``T log(visits)``).

Definitions (domain brief):
- ANC grades (CTCAE v5 / iwCLL 2008): G1 < LLN (2.0) to 1.5; G2 < 1.5 to 1.0; G3 < 1.0 to 0.5;
  G4 < 0.5 x10^9/L.  Platelets: G1 < 150 to 75; G2 < 75 to 50; G3 < 50 to 25; G4 < 25.
- Response, blood part only (the model has no nodes or spleen, so iwCLL is approximated by the
  ALC): PR = ALC fell by >= 50% from baseline; CR = ALC < 4 x10^9/L with ANC > 1.5 and
  platelets > 100; PD = ALC rose by >= 50%; SD otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ANC_LIMITS = (2.0, 1.5, 1.0, 0.5)  # lower limits of G0, G1, G2, G3 (x10^9/L)
PLATELET_LIMITS = (150.0, 75.0, 50.0, 25.0)
RESPONSES = ("CR", "PR", "SD", "PD")  # best first


def default_visits(n_days: int, *, cycle_days: int = 28, weekly_cycles: int = 2, every_days: int = 14) -> np.ndarray:
    """Visit days: weekly in the first ``weekly_cycles`` cycles, then every ``every_days`` days,
    and the last day.  Days are pre-dose (index into ``day_obs``)."""
    early = np.arange(0, min(weekly_cycles * cycle_days, n_days + 1), 7)
    late = np.arange(weekly_cycles * cycle_days, n_days + 1, every_days)
    return np.unique(np.concatenate([early, late, [n_days]]))


def grade(values, limits) -> np.ndarray:
    """CTCAE grade 0-4 of each value given the lower limits of grades 0..3."""
    v = np.asarray(values)
    return sum((v < lim).astype(int) for lim in limits)


def below(x, threshold, temperature: float = 0.0):
    """Indicator x < threshold, or its smooth relaxation on the log scale."""
    if temperature == 0:
        return (x < threshold).astype(jnp.float64) if isinstance(x, jnp.ndarray) else (np.asarray(x) < threshold) * 1.0
    return jax.nn.sigmoid((jnp.log(threshold) - jnp.log(x)) / temperature)


def any_below(x, threshold, temperature: float = 0.0, axis: int = -1):
    """Whether any value along ``axis`` is below the threshold (hard or smooth)."""
    if temperature == 0:
        return np.any(np.asarray(x) < threshold, axis=axis) * 1.0
    margins = (jnp.log(threshold) - jnp.log(x)) / temperature
    return jax.nn.sigmoid(jax.nn.logsumexp(margins, axis=axis))


def per_course_rate(anc_visits, visit_days, threshold: float = 1.0, *, cycle_days: int = 28,
                    n_courses: int | None = None, temperature: float = 0.0):
    """Fraction of ``cycle_days`` courses in which a visit value fell below ``threshold``,
    per patient: returns ``(..., n_courses)`` event indicators (mean them for the rate)."""
    visit_days = np.asarray(visit_days)
    course = visit_days // cycle_days
    n_courses = int(course.max()) + (0 if visit_days[-1] % cycle_days == 0 and visit_days[-1] > 0 else 1) if n_courses is None else n_courses
    out = []
    for c in range(n_courses):
        sel = np.flatnonzero(course == c)
        if sel.size == 0:
            raise ValueError(f"course {c + 1} has no visit; give visits in every course")
        out.append(any_below(anc_visits[..., sel], threshold, temperature))
    stack = jnp.stack if temperature else np.stack
    return stack(out, axis=-1)


def response_status(alc, anc, platelets, alc0, *, temperature: float = 0.0):
    """Probabilities (or 0/1) of CR, PR-or-better, PD at each time (arrays like ``alc``)."""
    ratio = alc / alc0[..., None] if np.ndim(alc0) == np.ndim(alc) - 1 else alc / alc0
    pr_or_better = below(ratio, 0.5, temperature)
    cr = below(alc, 4.0, temperature) * below(1.5, anc, temperature) * below(100.0, platelets, temperature) if temperature else (
        (np.asarray(alc) < 4.0) & (np.asarray(anc) > 1.5) & (np.asarray(platelets) > 100.0)
    ) * 1.0
    pd = below(1.0 / ratio, 1.0 / 1.5, temperature) if temperature else (np.asarray(ratio) >= 1.5) * 1.0
    return cr, pr_or_better, pd


def best_response(alc, anc, platelets, assess_days, *, until_day: int | None = None):
    """Best response (hard) up to ``until_day`` over assessment days, per patient.

    CR or PR if ever reached; PD if the ALC rose >= 50% at an assessment before any response;
    SD otherwise.  Returns (labels array of 'CR'/'PR'/'SD'/'PD', day of first response or NaN).
    """
    days = np.asarray(assess_days)
    if until_day is not None:
        days = days[days <= until_day]
    days = days[days > 0]
    alc, anc, platelets = (np.asarray(a) for a in (alc, anc, platelets))
    alc0 = alc[..., 0]
    cr, pr, pd = response_status(alc[..., days], anc[..., days], platelets[..., days], alc0)
    resp = (pr > 0) | (cr > 0)
    ever_cr = (cr > 0).any(-1)
    ever_resp = resp.any(-1)
    first_resp = np.where(ever_resp, days[np.argmax(resp, axis=-1)], np.nan)
    before = days[None, :] < np.where(ever_resp, first_resp, np.inf)[..., None] if alc.ndim > 1 else days < (first_resp if ever_resp else np.inf)
    progressed = ((pd > 0) & before).any(-1)
    label = np.where(ever_cr, "CR", np.where(ever_resp, "PR", np.where(progressed, "PD", "SD")))
    return label, first_resp


def response_at(alc, anc, platelets, day: int, *, temperature: float = 0.0):
    """Response status at one day: dict of CR, PR (PR-or-better minus CR), PD, SD indicators."""
    alc0 = alc[..., 0]
    cr, pr_b, pd = response_status(alc[..., day], anc[..., day], platelets[..., day], alc0, temperature=temperature)
    pr = pr_b * (1.0 - cr) if temperature else ((pr_b > 0) & ~(cr > 0)) * 1.0
    sd = 1.0 - jnp.clip(pr_b + pd, 0.0, 1.0) if temperature else 1.0 - ((pr_b > 0) | (pd > 0))
    return {"CR": cr, "PR": pr, "PD": pd, "SD": sd}
