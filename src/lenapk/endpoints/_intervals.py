"""Confidence intervals of rates and means: the one place they are computed.

- Rates (proportions of patients): **Wilson score** interval by default (good coverage at small
  n and near 0 or 1, never outside [0, 1]); Clopper-Pearson gives the exact (conservative)
  binomial interval.
- Means: Student-t interval ``mean +/- t_{n-1, 0.975} sd / sqrt(n)``; NaN values are left out.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


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


RATE_INTERVALS = {
    "wilson": ("Wilson score", wilson_interval),
    "clopper-pearson": ("Clopper-Pearson (exact)", clopper_pearson_interval),
}
