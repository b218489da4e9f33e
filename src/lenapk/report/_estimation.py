r"""The HTML report of a population fit (:class:`lenapk.estimation.EstimationResult`).

One self-contained page (the shared template of :mod:`._page`, figures as base64 PNG): a summary
(method, OFV, data size, convergence, condition number), the estimates with standard errors,
OMEGA as variances and as CV% (:math:`100\sqrt{e^{\omega} - 1}`, the CV of a log-normal
parameter ``P = theta exp(eta)``) and correlations, the correlation matrix of the estimates,
shrinkage, goodness-of-fit plots (DV against PRED and IPRED, CWRES against TIME and PRED) and
the VPC when its table is given.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..estimation._diagnostics import observation_table, shrinkage
from ..estimation._parameters import ParameterLayout
from . import _format as fmt
from ._figures import _save, plt
from ._page import Section, render_page

OBJECTIVE_NOTE = "-2LL without the n*log(2*pi) constant"
METHOD_NAMES = {"focei": "FOCE-I", "foce": "FOCE", "fo": "FO", "laplace": "Laplace"}


# ------------------------------------------------------------------ tables
def _derived(result) -> list[str]:
    """Per estimate: CV% of a diagonal OMEGA element, the correlation of an off-diagonal one."""
    layout = ParameterLayout(result.model)
    omega = np.asarray(result.params.omega)
    out = [""] * len(layout.model.thetas)
    for r, c in layout.omega_elements:
        if r == c:
            out.append(f"CV {fmt.number(100 * math.sqrt(math.expm1(omega[r, r])))}%")
        else:
            out.append(f"corr {fmt.number(omega[r, c] / math.sqrt(omega[r, r] * omega[c, c]), 2)}")
    return out + [""] * len(layout.model.sigma)


def estimates_table(result) -> pd.DataFrame:
    """The estimates as formatted cells: OMEGA elements as variances, with CV% or correlation."""
    est = result.estimates()
    return pd.DataFrame(
        {
            "parameter": est["parameter"],
            "kind": est["kind"].str.upper(),
            "estimate": [fmt.number(v, 4) for v in est["estimate"]],
            "SE": [fmt.number(v) for v in est["se"]],
            "RSE %": [fmt.number(v) for v in est["rse_percent"]],
            "CV % / corr": _derived(result),
            "fixed": ["FIX" if f else "" for f in est["fixed"]],
        }
    )


def _correlation_table(cov) -> pd.DataFrame:
    corr = pd.DataFrame(cov.correlation, columns=cov.names).map(lambda v: f"{v:.2f}")
    return corr.assign(parameter=list(cov.names))[["parameter", *cov.names]]


def _summary(result) -> list[tuple[str, str]]:
    cov = result.covariance
    cov_text = "not run" if cov is None else ("ok: " if cov.ok else "failed: ") + cov.message
    return [
        ("model", result.model.name),
        ("method", METHOD_NAMES.get(result.method, result.method)),
        ("OFV", f"{result.ofv:.4f} ({OBJECTIVE_NOTE})"),
        ("-2LL, AIC, BIC", f"{result.minus2ll:.3f}, {result.aic:.3f}, {result.bic:.3f}"),
        ("subjects, observations", f"{result.n_subjects}, {result.n_observations}"),
        ("converged", f"{'yes' if result.converged else 'no'} ({result.message}; {result.n_iterations} iterations)"),
        ("covariance step", cov_text),
        ("condition number", fmt.number(cov.condition_number) if cov is not None else fmt.DASH),
    ]


# ------------------------------------------------------------------ figures
def _scatter(table, x, y, path, *, identity: bool) -> Path:
    """``y`` against ``x``, one colour per output; the identity line or zero and +-2."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for k, part in table.groupby("OUTPUT"):
        ax.scatter(part[x], part[y], s=14, alpha=0.7, color=f"C{k}", label=f"output {k}")
    if identity:
        lo, hi = np.nanmin(table[[x, y]].to_numpy()), np.nanmax(table[[x, y]].to_numpy())
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="identity")
    else:
        for level, style in ((0, "-"), (-2, "--"), (2, "--")):
            ax.axhline(level, color="k", lw=1, ls=style)
    if table["OUTPUT"].nunique() > 1:
        ax.legend(fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _vpc_figure(vpc_table, table, path) -> Path:
    """Per output: observed 5/50/95th percentiles (points and lines) over the 90% intervals of
    the simulated ones (bands), with the observations behind."""
    outputs = sorted(vpc_table["output"].unique())
    fig, axes = plt.subplots(1, len(outputs), figsize=(6.2 * len(outputs), 4.4), squeeze=False)
    for ax, out in zip(axes.flat, outputs):
        v = vpc_table[vpc_table["output"] == out].sort_values("time")
        obs = table[table["OUTPUT"] == out]
        ax.scatter(obs["TIME"], obs["DV"], s=8, color="0.65", label="observations")
        for p, color, label in (("5", "C0", "5th and 95th percentiles"), ("50", "C3", "median"), ("95", "C0", None)):
            band = f"simulated {label}: 90% intervals" if label else None
            ax.fill_between(v["time"], v[f"sim_p{p}_lo"], v[f"sim_p{p}_hi"], color=color, alpha=0.2, label=band)
            observed = f"observed {label}" if label else None
            ax.plot(v["time"], v[f"obs_p{p}"], "o-", color=color, lw=1.3, ms=4, label=observed)
        ax.set_title(f"output {out}" if len(outputs) > 1 else "VPC", fontsize=10)
        ax.set_xlabel("TIME")
        ax.set_ylabel("DV")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    return _save(fig, path)


def _figures(result, table, vpc_table, folder: Path) -> Section:
    s = Section("gof", "Goodness of fit")
    plots = (
        ("PRED", "DV", True, "DV against the population prediction (PRED); the line is the identity."),
        ("IPRED", "DV", True, "DV against the individual prediction (IPRED); the line is the identity."),
        ("TIME", "CWRES", False, "Conditional weighted residuals against time; lines at 0 and +-2."),
        ("PRED", "CWRES", False, "Conditional weighted residuals against PRED; lines at 0 and +-2."),
    )
    for x, y, identity, caption in plots:
        s.image(_scatter(table, x, y, folder / f"{y}_{x}.png", identity=identity), caption)
    if vpc_table is not None:
        caption = (
            "Visual predictive check: observed 5th, 50th and 95th percentiles per time bin (points and lines) "
            "and the 90% intervals of the same percentiles over the simulated replicates (bands)."
        )
        s.image(_vpc_figure(vpc_table, table, folder / "vpc.png"), caption)
    return s


# ------------------------------------------------------------------ the page
def estimation_report(result, out_dir, *, vpc_table=None, title=None, table=None) -> Path:
    """Write ``report.html`` for ``result`` into ``out_dir`` and return its path; ``vpc_table``
    (from :func:`lenapk.estimation.vpc`) adds the VPC, ``table`` (an observation table) saves
    recomputing it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = observation_table(result) if table is None else table
    shrink = shrinkage(result, table)
    summary = Section("summary", "Summary").facts(_summary(result))
    if not result.converged:
        summary.warning(f"The estimation did not converge: {result.message}")
    if result.covariance is not None and not result.covariance.ok:
        summary.warning(f"The covariance step failed: {result.covariance.message}")
    estimates = Section("estimates", "Estimates").table(
        estimates_table(result),
        caption="THETAs and residual parameters as estimated; OMEGA elements are variances and covariances.",
        notes=["CV % = 100 sqrt(exp(omega) - 1): the CV of a log-normal parameter P = theta exp(eta)."],
    )
    if result.covariance is not None and result.covariance.ok:
        estimates.heading("Correlation of the estimates").table(_correlation_table(result.covariance))
    shrink_table = pd.DataFrame({"quantity": shrink.index, "shrinkage": [fmt.percent(v, 1) for v in shrink]})
    sections = [summary, estimates, Section("shrinkage", "Shrinkage").table(shrink_table)]
    with tempfile.TemporaryDirectory() as tmp:
        sections.append(_figures(result, table, vpc_table, Path(tmp)))
        return render_page(
            out_dir / "report.html",
            title=title or f"Population fit: {result.model.name} ({METHOD_NAMES.get(result.method, result.method)})",
            intro=f"{result.n_subjects} subjects, {result.n_observations} observations; OFV {result.ofv:.4f}.",
            sections=sections,
        )
