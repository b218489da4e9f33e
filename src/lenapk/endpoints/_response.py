"""Response criteria on a disease marker relative to baseline, given as data.

PR or better when the marker falls below ``pr_ratio`` (e.g. 0.5) of baseline; CR when, besides,
the marker is below ``normal_below`` and every ``cr_above`` observable is above its threshold;
PD when the marker rises to ``pd_ratio`` (e.g. 1.5) of baseline or more; SD otherwise (a model
declares its own criteria as data, in its module).  Best response
over assessments: CR or PR if ever reached; PD if the marker progressed at an assessment
before any response; SD otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ._smooth import any_below, below, safe_log, smooth_max

CATEGORIES = ("CR", "PR", "SD", "PD")  # best first


@dataclass(frozen=True)
class ResponseCriteria:
    """See the module docstring."""

    marker: str
    normal_below: float
    pr_ratio: float = 0.5
    pd_ratio: float = 1.5
    cr_above: tuple[tuple[str, float], ...] = ()

    @property
    def observables_read(self) -> tuple[str, ...]:
        return (self.marker, *(name for name, _ in self.cr_above))

    def status(self, values: dict, baseline, temperature: float = 0.0):
        """(CR, PR-or-better, PD) indicators (smooth for T > 0) at each time; ``values[name]`` of
        shape ``(..., times)``, ``baseline`` the marker at day 0, ``(...)``."""
        x = values[self.marker]
        ratio = x / baseline[..., None] if np.ndim(baseline) == np.ndim(x) - 1 else x / baseline
        T = temperature
        if T:
            cr = below(x, self.normal_below, T)
            for name, thr in self.cr_above:
                cr = cr * below(thr, values[name], T)
            return cr, below(ratio, self.pr_ratio, T), below(1.0 / ratio, 1.0 / self.pd_ratio, T)
        cr = np.asarray(x) < self.normal_below
        for name, thr in self.cr_above:
            cr = cr & (np.asarray(values[name]) > thr)
        return cr * 1.0, (np.asarray(ratio) < self.pr_ratio) * 1.0, (np.asarray(ratio) >= self.pd_ratio) * 1.0

    def ever_pr(self, marker_at_visits, baseline, temperature: float = 0.0, *, sharpness: float = 1.0):
        """Indicator (smooth for T > 0, :func:`any_below`) that the marker fell below ``pr_ratio`` of
        ``baseline`` at any visit (last axis): PR or better by the marker."""
        return any_below(marker_at_visits / baseline[..., None], self.pr_ratio, temperature, sharpness=sharpness)

    def at_day(self, values: dict, day: int, temperature: float = 0.0) -> dict:
        """Response status at one day (index into daily arrays, baseline = index 0): CR, PR
        (PR-or-better without CR), PD and SD indicators."""
        at = {k: v[..., day] for k, v in values.items()}
        cr, pr_b, pd = self.status(at, values[self.marker][..., 0], temperature)
        if temperature:
            return {"CR": cr, "PR": pr_b * (1.0 - cr), "PD": pd, "SD": 1.0 - jnp.clip(pr_b + pd, 0.0, 1.0)}
        return {"CR": cr, "PR": ((pr_b > 0) & ~(cr > 0)) * 1.0, "PD": pd, "SD": 1.0 - ((pr_b > 0) | (pd > 0))}

    def best(self, values: dict, assess_days, *, until_day: int | None = None):
        """Best response (hard) over the assessment days ``0 < day <= until_day`` of daily arrays
        ``values[name]`` (index = day, baseline = day 0): labels ``CR``/``PR``/``SD``/``PD`` and
        the day of the first response (NaN without one)."""
        days = np.asarray(assess_days)
        if until_day is not None:
            days = days[days <= until_day]
        days = days[days > 0]
        vals = {k: np.asarray(v) for k, v in values.items()}
        x = vals[self.marker]
        cr, pr, pd = self.status({k: v[..., days] for k, v in vals.items()}, x[..., 0])
        resp = (pr > 0) | (cr > 0)
        ever_resp = resp.any(-1)
        first = np.where(ever_resp, days[np.argmax(resp, axis=-1)], np.nan)
        limit = np.where(ever_resp, first, np.inf)
        progressed = ((pd > 0) & (days < np.expand_dims(limit, -1))).any(-1)
        label = np.where((cr > 0).any(-1), "CR", np.where(ever_resp, "PR", np.where(progressed, "PD", "SD")))
        return label, first

    def first_cr_day(self, values: dict, days) -> np.ndarray:
        """First assessment day (of ``days``) in CR, NaN if never."""
        days = np.asarray(days)
        vals = {k: np.asarray(v) for k, v in values.items()}
        cr, _, _ = self.status({k: v[..., days] for k, v in vals.items()}, vals[self.marker][..., 0])
        is_cr = cr > 0
        return np.where(is_cr.any(-1), days[np.argmax(is_cr, axis=-1)], np.nan)

    def best_margins(self, values: dict, visit_cols, temperature: float, *, sharpness: float = 1.0) -> dict:
        """Log margins of the best-response events over the visit columns of ``values[name]``
        (``(n, columns)``, column 0 the baseline), for smooth predictions: ``overall``
        (PR or better), ``cr``, ``pr`` (without CR), ``pd``, ``sd``, ``marker_halved`` (below the
        PR ratio at any visit) and ``marker_normal`` (below ``normal_below`` at any visit).  The
        maxima over visits are smooth at width ``temperature / sharpness``."""
        T = temperature / sharpness
        x = values[self.marker]
        log_x = safe_log(x[:, visit_cols])
        lr = log_x - safe_log(x[:, :1])
        m_pr = math.log(self.pr_ratio) - lr
        m_cr = math.log(self.normal_below) - log_x
        for name, thr in self.cr_above:
            m_cr = jnp.minimum(m_cr, safe_log(values[name][:, visit_cols]) - math.log(thr))
        resp = smooth_max(jnp.maximum(m_pr, m_cr), T)
        prog = smooth_max(lr - math.log(self.pd_ratio), T)
        cr = smooth_max(m_cr, T)
        return {
            "overall": resp,
            "cr": cr,
            "pr": jnp.minimum(resp, -cr),
            "pd": jnp.minimum(prog, -resp),
            "sd": jnp.minimum(-prog, -resp),
            "marker_halved": smooth_max(m_pr, T),
            "marker_normal": smooth_max(math.log(self.normal_below) - log_x, T),
        }
