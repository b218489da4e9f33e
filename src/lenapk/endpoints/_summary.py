"""``trial_summary()``: rates and means of a virtual cohort, with 95% confidence intervals.

Rates use every patient as the denominator (grades, response and holds are defined for every
patient).  For means, missing values (NaN: a value at cycle 24 of a 12-cycle regimen, the time
to response of a non-responder) are left out and ``n`` counts the patients with a value (so time
to response is the mean among responders).

Events with a cumulative hazard (:class:`HazardEventSpec`) are reported as rates whose estimate
is the expected incidence, the mean of the patients' event probabilities (``events`` is empty:
no event is drawn), with a Student-t interval clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._core import AbstractModel, resolve_model
from ._intervals import RATE_INTERVALS, mean_interval
from ._table import endpoints_of

DOSING_MEANS = (
    ("dose_intensity", "dose intensity (delivered / planned mg)"),
    ("delivered_mg", "delivered dose (mg)"),
    ("last_dose_mg", "last dose given (mg)"),
    ("days_held", "days held"),
    ("n_reductions", "dose reductions"),
)


def trial_summary(
    cohort_df: pd.DataFrame, *, model: AbstractModel | None = None, level: float = 0.95, method: str = "wilson"
) -> pd.DataFrame:
    """Rates with confidence intervals (Wilson score by default, or ``"clopper-pearson"``) and
    means with Student-t intervals, from a :func:`lenapk.cohort` frame of ``model`` (default:
    the default model), whose endpoints (``model.endpoints``) say what to summarise.

    Returns one row per endpoint with columns ``endpoint``, ``column`` (the cohort column it
    comes from), ``cycle`` (for per-cycle rates), ``statistic`` (``"rate"`` or ``"mean"``),
    ``n`` (patients with a value), ``events`` (rates counted from patients), ``estimate``,
    ``ci_low``, ``ci_high``, ``median`` (means) and ``method``."""
    model = resolve_model(model)
    if not isinstance(cohort_df, pd.DataFrame):
        raise ValueError(f"cohort_df must be a pandas DataFrame from lenapk.cohort, got {type(cohort_df).__name__}")
    if method not in RATE_INTERVALS:
        raise ValueError(f"method must be one of {sorted(RATE_INTERVALS)}, got {method!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    endpoints = endpoints_of(model)
    needed = {f"{g.label}_grade" for g in endpoints.grades} | ({"best_response"} if endpoints.response else set())
    needed |= {e.column() for e in endpoints.events}
    missing = sorted(needed - set(cohort_df.columns))
    if missing:
        raise ValueError(f"cohort_df lacks the column(s) {missing}: pass the frame returned by lenapk.cohort")
    if len(cohort_df) == 0:
        raise ValueError("cohort_df has no patients")
    method_name, interval = RATE_INTERVALS[method]
    rows = []

    def rate(name, column, indicator, cycle=np.nan):
        ind = pd.Series(indicator)
        valid = ind.notna()
        n = int(valid.sum())
        k = int(ind[valid].astype(bool).sum())
        lo, hi = interval(k, n, level)
        rows.append(
            dict(
                endpoint=name,
                column=column,
                cycle=cycle,
                statistic="rate",
                n=n,
                events=k,
                estimate=k / n if n else np.nan,
                ci_low=lo,
                ci_high=hi,
                median=np.nan,
                method=method_name,
            )
        )

    df = cohort_df
    toxicity_means, outcome_means = endpoints.summary(df, rate)
    if "days_held" in df:
        rate("any dose held", "days_held", df["days_held"] > 0)
    if "n_reductions" in df:
        rate("dose reduced", "n_reductions", df["n_reductions"] > 0)
    if "stopped" in df:
        rate("treatment stopped", "stopped", df["stopped"].astype(bool))
    endpoints.per_cycle_rates(df, rate)
    for column, name in endpoints.incidences():
        if column in df:  # expected incidence: the mean probability, clipped to [0, 1]
            rows.append(_mean_row(df[column], name, column, level, "rate", clip=True))
    for column, name in [*toxicity_means, *DOSING_MEANS, *outcome_means]:
        if column in df:
            rows.append(_mean_row(df[column], name, column, level, "mean"))
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(np.int64)
    out["events"] = out["events"].astype("Int64")
    out["cycle"] = out["cycle"].astype("Int64")
    return out


def _mean_row(values, name: str, column: str, level: float, statistic: str, clip: bool = False) -> dict:
    """One summary row from the mean of a column and its Student-t interval; a ``"rate"`` row
    (the mean of per-patient probabilities) has its interval clipped to [0, 1] and no median."""
    m, lo, hi, n = mean_interval(values, level)
    if clip:
        lo, hi = (float(np.clip(x, 0.0, 1.0)) if np.isfinite(x) else x for x in (lo, hi))
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return dict(
        endpoint=name,
        column=column,
        cycle=np.nan,
        statistic=statistic,
        n=n,
        events=np.nan,
        estimate=m,
        ci_low=lo,
        ci_high=hi,
        median=float(np.median(x)) if n and statistic == "mean" else np.nan,
        method="mean probability, Student t" if statistic == "rate" else "Student t",
    )
