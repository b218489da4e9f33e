"""What a fit found (:class:`FitResult`), and its Markdown rendering."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._core import ParameterSet


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` found.

    ``params``: the full typical parameter set with the estimates; ``estimates``: one row per
    free parameter (estimate, start, SE and RSE by the delta method, 95% interval, log-scale SE,
    prior, identifiability flag); ``correlation``: correlation matrix of the estimates;
    ``hessian`` (log scale) and its ``eigenvalues``; ``observed_vs_predicted``: every observed
    row beside its prediction (hard count ``predicted`` and the smooth value of the fit);
    ``temperature_check``: thresholded rows at several temperatures beside the hard count; ``trace``:
    objective and gradient per iteration; ``dose_refreshes``: each time the dose rules were run
    (after which iteration, the fraction of patient-days that changed against the frozen doses,
    the objective before and after, ``kept``: the change was within ``dose_tol``, so the
    frozen doses were kept, and ``cycle``: the rules gave back doses frozen and replaced after a
    finished search at them, so the frozen doses were kept; the first row is the freeze at the
    start, with no objective before it; empty without dose rules); convergence: ``converged``,
    ``grad_max`` (max |g| on the log scale), ``iterations``, ``message``; ``non_identifiable``: flagged parameters;
    ``covariance``: covariance matrix of the free parameters on the log scale (``H^-1``, with the
    flat directions of the Hessian left out; NaN without standard errors), indexed by parameter
    name, for :func:`prediction_intervals`; ``model``: the model that was fitted."""

    params: ParameterSet
    free: tuple[str, ...]
    estimates: pd.DataFrame
    correlation: pd.DataFrame
    hessian: np.ndarray
    eigenvalues: np.ndarray
    observed_vs_predicted: pd.DataFrame
    dose_level_table: pd.DataFrame
    temperature_check: pd.DataFrame
    trace: pd.DataFrame
    objective: float
    objective_prior: float
    grad_max: float
    iterations: int
    evaluations: int
    dose_changed: float
    converged: bool
    message: str
    non_identifiable: tuple[str, ...]
    designs: dict = field(repr=False)
    settings: dict = field(repr=False)
    timings: dict = field(repr=False)
    covariance: pd.DataFrame | None = field(default=None, repr=False)
    model: object = field(default=None, repr=False)
    dose_refreshes: pd.DataFrame | None = field(default=None, repr=False)

    def estimates_table(self) -> pd.DataFrame:
        return self.estimates.copy()

    def summary(self) -> str:
        lines = [
            f"objective {self.objective:.4f} (-log-likelihood {self.objective - self.objective_prior:.4f} + prior "
            f"{self.objective_prior:.4f}); {'converged' if self.converged else 'NOT converged'}: {self.message}",
            f"iterations {self.iterations}, evaluations {self.evaluations}, max |gradient| {self.grad_max:.2e} "
            f"(log scale); dose histories the rules changed at the final point: {100 * self.dose_changed:.2g}% of "
            f"patient-days; {self.timings.get('total_s', float('nan')):.1f} s",
        ]
        for r in self.estimates.itertuples():
            flag = ("  NOT IDENTIFIABLE" if not r.identifiable else "") + ("  ON A BOUND" if r.at_bound else "")
            lines.append(
                f"  {r.parameter:12s} {r.estimate:12.5g} {r.unit:10s} SE {r.se:10.3g} (RSE {r.rse_percent:6.1f}%) "
                f"95% [{r.ci95_low:.4g}, {r.ci95_high:.4g}]{flag}"
            )
        if self.non_identifiable:
            lines.append(f"non-identifiable (flagged): {', '.join(self.non_identifiable)}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """Estimates, correlations, the observed-vs-predicted table and the convergence record."""
        return _markdown(self)


def _fmt(x, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if isinstance(x, float) and math.isinf(x) else "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def _refresh_lines(res: FitResult) -> list[str]:
    """A paragraph on the dose-rule refreshes of the fit (none without dose rules)."""
    log = res.dose_refreshes
    if log is None or not len(log):
        return []
    steps = "; ".join(
        f"after iteration {r.after_iteration}: {100 * r.changed:.3g}% changed"
        + (" (within tolerance: doses kept)" if r.kept else "")
        + (" (an earlier history: a cycle, doses kept)" if r.cycle else "")
        + f", objective {_fmt(r.objective_after, 6)}"
        for r in log.itertuples()
    )
    kept = int((log["kept"] | log["cycle"]).sum())
    return [
        f"Dose histories run again by the rules {len(log)} times, frozen anew {len(log) - kept} times ({steps}).",
        "",
    ]


def _markdown(res: FitResult) -> str:
    est = [
        "| parameter | estimate | unit | start | SE | RSE % | 95% interval | prior | identifiable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.estimates.itertuples():
        est.append(
            f"| `{r.parameter}` | {_fmt(r.estimate)} | {r.unit} | {_fmt(r.start)} | {_fmt(r.se, 3)} | "
            f"{_fmt(r.rse_percent, 3)} | {_fmt(r.ci95_low)} - {_fmt(r.ci95_high)} | {r.prior or '-'} | "
            f"{'yes' if r.identifiable else '**no**'}{' (on a bound)' if r.at_bound else ''} |"
        )
    corr = res.correlation
    cl = ["| | " + " | ".join(f"`{c}`" for c in corr.columns) + " |", "|---" * (len(corr.columns) + 1) + "|"]
    for name, row in corr.iterrows():
        cl.append(f"| `{name}` | " + " | ".join(_fmt(v, 2) for v in row) + " |")
    ovp = [
        "| row | study | endpoint | statistic | day | observed (95% CI) | predicted | smooth | likelihood | "
        "residual | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.observed_vs_predicted.itertuples():
        ci = f" ({_fmt(r.observed_lo95, 3)}-{_fmt(r.observed_hi95, 3)})" if math.isfinite(r.observed_lo95) else ""
        day = "-" if not math.isfinite(r.day) else f"{r.day:g}"
        lik = r.likelihood + (
            f" n={r.n_used:g}{' (assumed)' if r.n_assumed else ''}"
            if r.likelihood == "gaussian"
            else (f" {r.k:g}/{r.N:g}{' (n assumed)' if r.n_assumed else ''}" if r.likelihood else "")
        )
        ovp.append(
            f"| {r.row} | {r.study} | {r.endpoint} | {r.statistic} | {day} | {_fmt(r.observed)}{ci} | "
            f"{_fmt(r.predicted)} | {_fmt(r.predicted_smooth)} | {lik} | {_fmt(r.residual, 2)} | {r.status} |"
        )
    dl = []
    if len(res.dose_level_table):
        dl = [
            "| dose level | observed responders | predicted response | observed share | predicted share |",
            "|---|---|---|---|---|",
        ]
        for r in res.dose_level_table.itertuples():
            dl.append(
                f"| {r.endpoint} | {r.k}/{r.N} = {_fmt(r.observed, 2)} | {_fmt(r.predicted, 2)} | "
                f"{_fmt(r.observed_share, 2)} | {_fmt(r.predicted_share, 2)} |"
            )
        dl += ["", f"Status: {res.dose_level_table['status'].iloc[0]}"]
    eig = ", ".join(_fmt(v, 3) for v in res.eigenvalues)
    parts = [
        "## Estimates",
        "",
        *est,
        "",
        f"Objective {res.objective:.3f} (negative log-likelihood {res.objective - res.objective_prior:.3f}, prior "
        f"penalty {res.objective_prior:.3f}); {'converged' if res.converged else '**not converged**'} "
        f"({res.message}); {res.iterations} iterations, {res.evaluations} objective evaluations, max |gradient| "
        f"{res.grad_max:.2e} on the log scale.",
        "",
        *_refresh_lines(res),
        f"Hessian eigenvalues (log scale): {eig}.",
        "" if not res.non_identifiable else f"Flagged as not identifiable: {', '.join(res.non_identifiable)}.",
        "",
        "## Correlation of the estimates",
        "",
        *cl,
        "",
        "## Every observed row beside its prediction",
        "",
        "`predicted` is the hard count (clinical definition) at the estimates, `smooth` the relaxed value the fit "
        f"used (temperature {res.settings.get('temperature')}); `residual` is (observed - predicted) / SD.",
        "",
        *ovp,
        "",
    ]
    if dl:
        parts += ["## Responses by dose level", "", *dl, ""]
    tc = res.temperature_check
    if len(tc):
        temps = [c for c in tc.columns if c.startswith("T=")]
        parts += [
            "## Smooth relaxation vs hard count",
            "",
            "Predicted value of each thresholded row at the estimates: the hard (clinical) count and the "
            "smooth relaxation at decreasing temperatures, on the same virtual cohorts.",
            "",
            "| row | endpoint | observed | hard | " + " | ".join(temps) + " |",
            "|---" * (4 + len(temps)) + "|",
        ]
        for r in tc.itertuples(index=False):
            d = r._asdict()
            parts.append(
                f"| {d['row']} | {d['endpoint']} | {_fmt(d['observed'], 3)} | {_fmt(d['hard'], 3)} | "
                + " | ".join(_fmt(v, 3) for v in list(d.values())[6:])
                + " |"
            )
        parts.append("")
    return "\n".join(parts)
