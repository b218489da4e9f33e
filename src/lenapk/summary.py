"""``trial_summary()``: rates and means of a virtual cohort, with 95% confidence intervals.

- Rates (proportions of patients): **Wilson score** interval by default (good coverage at
  small n and near 0 or 1, never outside [0, 1]); ``method="clopper-pearson"`` gives the exact
  (conservative) binomial interval.
- Means: Student-t interval ``mean +/- t_{n-1, 0.975} sd / sqrt(n)``; the median is given too.

Rates use every patient as the denominator (grades, response and holds are defined for
every patient).  For means, missing values (NaN: ``igg_c24`` of a 12-cycle regimen,
``time_to_response`` of a non-responder) are left out and ``n`` counts the patients with a value
(so time to response is the mean among responders).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

RATE_METHODS = ("wilson", "clopper-pearson")


def wilson_interval(events, n, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``events`` out of ``n``."""
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    p = events / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if events == 0 else max(0.0, centre - half)  # exact bounds at 0 and n events
    hi = 1.0 if events == n else min(1.0, centre + half)
    return lo, hi


def clopper_pearson_interval(events, n, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial interval for ``events`` out of ``n``."""
    if n == 0:
        return math.nan, math.nan
    a = 1 - level
    lo = 0.0 if events == 0 else float(stats.beta.ppf(a / 2, events, n - events + 1))
    hi = 1.0 if events == n else float(stats.beta.ppf(1 - a / 2, events + 1, n - events))
    return lo, hi


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a Student-t interval; NaN values are left out."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def _cycles(df, prefix):
    found = []
    for c in df.columns:
        m = re.fullmatch(rf"{prefix}_c(\d+)", c)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


MEANS = (
    ("anc_nadir", "ANC nadir (x10^9/L)"),
    ("anc_nadir_day", "day of ANC nadir"),
    ("plt_nadir", "platelet nadir (x10^9/L)"),
    ("plt_nadir_day", "day of platelet nadir"),
    ("dose_intensity", "dose intensity (delivered / planned mg)"),
    ("delivered_mg", "delivered dose (mg)"),
    ("last_dose_mg", "last dose given (mg)"),
    ("days_held", "days held"),
    ("n_reductions", "dose reductions"),
    ("time_to_response", "time to response, responders (days)"),
    ("time_to_best_response", "time to best response, responders (days)"),
    ("alc_change_c12", "ALC change at cycle 12 (%)"),
    ("alc_change_c24", "ALC change at cycle 24 (%)"),
    ("igg_c12", "IgG at cycle 12 (mg/dL)"),
    ("igg_c24", "IgG at cycle 24 (mg/dL)"),
    ("igm_c12", "IgM at cycle 12 (mg/dL)"),
    ("igm_c24", "IgM at cycle 24 (mg/dL)"),
    ("iga_c12", "IgA at cycle 12 (mg/dL)"),
    ("iga_c24", "IgA at cycle 24 (mg/dL)"),
)


def trial_summary(cohort_df: pd.DataFrame, *, level: float = 0.95, method: str = "wilson") -> pd.DataFrame:
    """Rates with confidence intervals (Wilson score by default, or Clopper-Pearson) and means
    with Student-t intervals, from a :func:`lenapk.cohort` frame.

    Returns one row per endpoint with columns ``endpoint``, ``column`` (the cohort column it
    comes from), ``cycle`` (for per-cycle rates, else NaN), ``statistic`` (``"rate"`` or
    ``"mean"``), ``n`` (patients with a value), ``events`` (rates), ``estimate``, ``ci_low``,
    ``ci_high``, ``median`` (means) and ``method``.

    Rates: ANC and platelet grade >= 3 and grade 4 (overall and per cycle), best response
    (overall response = CR + PR, CR, PR, SD, PD), any dose held, dose reduced and stopped when
    those columns are present.
    """
    if not isinstance(cohort_df, pd.DataFrame):
        raise ValueError(f"cohort_df must be a pandas DataFrame from lenapk.cohort, got {type(cohort_df).__name__}")
    if method not in RATE_METHODS:
        raise ValueError(f"method must be one of {RATE_METHODS}, got {method!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    needed = {"anc_grade", "plt_grade", "best_response"}
    missing = sorted(needed - set(cohort_df.columns))
    if missing:
        raise ValueError(f"cohort_df lacks the column(s) {missing}: pass the frame returned by lenapk.cohort")
    if len(cohort_df) == 0:
        raise ValueError("cohort_df has no patients")
    interval = wilson_interval if method == "wilson" else clopper_pearson_interval
    method_name = "Wilson score" if method == "wilson" else "Clopper-Pearson (exact)"
    rows = []

    def rate(name, column, indicator, cycle=np.nan):
        ind = pd.Series(indicator)
        valid = ind.notna()
        n = int(valid.sum())
        k = int(ind[valid].astype(bool).sum())
        lo, hi = interval(k, n, level)
        rows.append(
            dict(endpoint=name, column=column, cycle=cycle, statistic="rate", n=n, events=k,
                 estimate=k / n if n else np.nan, ci_low=lo, ci_high=hi, median=np.nan, method=method_name)
        )

    df = cohort_df
    for lab, label in (("anc", "ANC"), ("plt", "platelets")):
        g = df[f"{lab}_grade"]
        rate(f"{label} grade >= 3", f"{lab}_grade", g >= 3)
        rate(f"{label} grade 4", f"{lab}_grade", g >= 4)
    resp = df["best_response"].astype(str)
    rate("overall response (CR + PR)", "best_response", resp.isin(["CR", "PR"]))
    for r in ("CR", "PR", "SD", "PD"):
        rate(f"best response {r}", "best_response", resp == r)
    if "days_held" in df:
        rate("any dose held", "days_held", df["days_held"] > 0)
    if "n_reductions" in df:
        rate("dose reduced", "n_reductions", df["n_reductions"] > 0)
    if "stopped" in df:
        rate("treatment stopped", "stopped", df["stopped"].astype(bool))
    for lab, label in (("anc", "ANC"), ("plt", "platelets")):
        for c in _cycles(df, f"{lab}_grade"):
            rate(f"{label} grade >= 3, cycle {c}", f"{lab}_grade_c{c}", df[f"{lab}_grade_c{c}"] >= 3, cycle=c)
    for column, name in MEANS:
        if column not in df:
            continue
        m, lo, hi, n = mean_interval(df[column], level)
        x = np.asarray(df[column], dtype=float)
        x = x[np.isfinite(x)]
        rows.append(
            dict(endpoint=name, column=column, cycle=np.nan, statistic="mean", n=n, events=np.nan,
                 estimate=m, ci_low=lo, ci_high=hi, median=float(np.median(x)) if n else np.nan,
                 method="Student t")
        )
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(np.int64)
    out["events"] = out["events"].astype("Int64")
    out["cycle"] = out["cycle"].astype("Int64")
    return out
