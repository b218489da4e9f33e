"""Response criteria on disease markers relative to baseline, given as data.

The response ratio is the largest of ``marker`` and the ``also`` markers, each relative to its
own baseline (criteria that ask every measured site to improve for a response count a
progression at any site).  PR or better when the ratio falls below ``pr_ratio`` (e.g. 0.5); CR
when, besides (a CR is a PR with more), the marker is below ``normal_below``, every
``cr_above`` observable is above its threshold and every ``also`` marker is below
``also_cr_ratio`` of its baseline; PD when the ratio rises to ``pd_ratio`` (e.g. 1.5) or more;
SD otherwise (a model declares its own criteria as data, in its module).  Best response over
assessments: CR or PR if ever reached; PD if a marker progressed at an assessment before any
response; SD otherwise.
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
    also: tuple[str, ...] = ()
    also_cr_ratio: float = 0.5

    @property
    def markers(self) -> tuple[str, ...]:
        """The markers judged relative to their baselines: ``marker`` and the ``also`` markers."""
        return (self.marker, *self.also)

    @property
    def observables_read(self) -> tuple[str, ...]:
        return (*self.markers, *(name for name, _ in self.cr_above))

    def ratio(self, values: dict, baselines: dict):
        """The response ratio: the largest ``values[k] / baselines[k]`` over :attr:`markers`
        (``baselines[k]`` of shape ``(...)`` against values ``(..., times)``, or alike)."""
        out = None
        for k in self.markers:
            r = _relative(values[k], baselines[k])
            out = r if out is None else _maximum(out, r)
        return out

    def _also_cr(self, values: dict, baselines: dict, temperature: float):
        """Indicator that every ``also`` marker is below ``also_cr_ratio`` of its baseline."""
        out = 1.0
        for k in self.also:
            out = out * below(_relative(values[k], baselines[k]), self.also_cr_ratio, temperature)
        return out

    def status(self, values: dict, baselines: dict, temperature: float = 0.0):
        """(CR, PR-or-better, PD) indicators (smooth for T > 0) at each time; ``values[name]`` of
        shape ``(..., times)``, ``baselines[name]`` each marker at day 0, ``(...)``."""
        x = values[self.marker]
        ratio = self.ratio(values, baselines)
        T = temperature
        if T:
            pr_b = below(ratio, self.pr_ratio, T)
            cr = pr_b * below(x, self.normal_below, T) * self._also_cr(values, baselines, T)
            for name, thr in self.cr_above:
                cr = cr * below(thr, values[name], T)
            return cr, pr_b, below(1.0 / ratio, 1.0 / self.pd_ratio, T)
        pr_b = np.asarray(ratio) < self.pr_ratio
        cr = pr_b & (np.asarray(x) < self.normal_below) & (np.asarray(self._also_cr(values, baselines, 0.0)) > 0)
        for name, thr in self.cr_above:
            cr = cr & (np.asarray(values[name]) > thr)
        return cr * 1.0, pr_b * 1.0, (np.asarray(ratio) >= self.pd_ratio) * 1.0

    def baselines(self, values: dict) -> dict:
        """Each marker's baseline: index 0 of the last axis of ``values[name]``."""
        return {k: values[k][..., 0] for k in self.markers}

    def ever_pr(self, values: dict, visit_cols, temperature: float = 0.0, *, sharpness: float = 1.0):
        """Indicator (smooth for T > 0, :func:`any_below`) that the response ratio fell below
        ``pr_ratio`` at any of the columns ``visit_cols`` of ``values[name]`` (``(n, columns)``,
        column 0 the baseline, as in :meth:`best_margins`): PR or better by every marker at one
        visit."""
        at = {k: values[k][:, visit_cols] for k in self.markers}
        return any_below(self.ratio(at, self.baselines(values)), self.pr_ratio, temperature, sharpness=sharpness)

    def at_day(self, values: dict, day: int, temperature: float = 0.0) -> dict:
        """Response status at one day (index into daily arrays, baseline = index 0): CR, PR
        (PR-or-better without CR), PD and SD indicators."""
        at = {k: v[..., day] for k, v in values.items()}
        cr, pr_b, pd = self.status(at, self.baselines(values), temperature)
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
        cr, pr, pd = self.status({k: v[..., days] for k, v in vals.items()}, self.baselines(vals))
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
        cr, _, _ = self.status({k: v[..., days] for k, v in vals.items()}, self.baselines(vals))
        is_cr = cr > 0
        return np.where(is_cr.any(-1), days[np.argmax(is_cr, axis=-1)], np.nan)

    def best_margins(self, values: dict, visit_cols, temperature: float, *, sharpness: float = 1.0) -> dict:
        """Log margins of the best-response events over the visit columns of ``values[name]``
        (``(n, columns)``, column 0 the baseline), for smooth predictions: ``overall``
        (PR or better), ``cr``, ``pr`` (without CR), ``pd``, ``sd``, ``marker_halved`` (the marker
        alone below the PR ratio at any visit) and ``marker_normal`` (below ``normal_below`` at any
        visit).  The maxima over visits are smooth at width ``temperature / sharpness``."""
        T = temperature / sharpness
        log_x = safe_log(values[self.marker][:, visit_cols])
        log_ratio = {k: safe_log(values[k][:, visit_cols]) - safe_log(values[k][:, :1]) for k in self.markers}
        lr = log_ratio[self.marker]
        for k in self.also:
            lr = jnp.maximum(lr, log_ratio[k])
        m_pr = math.log(self.pr_ratio) - lr
        m_cr = jnp.minimum(m_pr, math.log(self.normal_below) - log_x)  # CR is a PR with more
        for k in self.also:
            m_cr = jnp.minimum(m_cr, math.log(self.also_cr_ratio) - log_ratio[k])
        for name, thr in self.cr_above:
            m_cr = jnp.minimum(m_cr, safe_log(values[name][:, visit_cols]) - math.log(thr))
        resp = smooth_max(m_pr, T)  # CR implies PR
        prog = smooth_max(lr - math.log(self.pd_ratio), T)
        cr = smooth_max(m_cr, T)
        return {
            "overall": resp,
            "cr": cr,
            "pr": jnp.minimum(resp, -cr),
            "pd": jnp.minimum(prog, -resp),
            "sd": jnp.minimum(-prog, -resp),
            "marker_halved": smooth_max(math.log(self.pr_ratio) - log_ratio[self.marker], T),
            "marker_normal": smooth_max(math.log(self.normal_below) - log_x, T),
        }


def _relative(value, baseline):
    """``value / baseline``, the baseline broadcast over a trailing time axis when it lacks one."""
    return value / baseline[..., None] if np.ndim(baseline) == np.ndim(value) - 1 else value / baseline


def _maximum(a, b):
    """Elementwise maximum, in NumPy when both are NumPy arrays (host tables stay on the host)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return jnp.maximum(a, b)
