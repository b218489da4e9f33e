"""Dose schedules: comparison on common random numbers, and optimisation under a toxicity limit.

:func:`compare` runs one virtual cohort (the same patients: draws depend only on ``(seed,
patient)``) under several regimens and tabulates the trial endpoints with 95% confidence
intervals; :func:`plot_comparison` draws the table.

:func:`optimise_schedule` looks for the start dose, escalation (step and plateau) and days-on
pattern that maximise response subject to a limit on the incidence of grade >= 3 neutropenia:

1. **Relaxation.**  Four unconstrained numbers ``theta`` map to a continuous schedule::

       start   = min_mg + (max_mg - min_mg) * sigmoid(theta_0)            (mg)
       step    = max_step_mg * sigmoid(theta_1)                           (mg per escalation)
       days_on = min_days_on + (cycle_days + 1 - min_days_on) * sigmoid(theta_2)
       top     = start + (max_mg - start) * sigmoid(theta_3)              (plateau, mg)
       dose(d) = min(start + step * floor(d / escalate_every_days), top)
                 * sigmoid((days_on - (d mod cycle_days) - 1/2) / days_on_width)

   so the planned daily doses are a smooth function of ``theta`` (the days-on pattern is a
   sigmoid over the day in the cycle, width 0.5 day).  The fixed virtual population (common
   random numbers) is solved as one batched ODE and the endpoints are smooth (``temperature``
   T, as in :mod:`lenapk.endpoints`): toxicity = mean over patients of ``smooth_any_below(ANC
   at the lab visits, 1.0)``, response = mean of ``smooth_any_below(ALC / ALC0 at the visits,
   0.5)`` (PR or better by ALC at any assessment, i.e. best response).
   :func:`smooth_any_below` is :func:`lenapk.endpoints.any_below` with a 4x sharper smooth
   maximum over the visits, which keeps the relaxed incidence close to the hard one (see its
   docstring).
2. **Constraint.**  Augmented Lagrangian for ``g = toxicity - limit <= 0``: Adam (optax)
   minimises ``-response + (max(0, lam + rho g)^2 - lam^2) / (2 rho)``, and every
   ``inner_steps`` steps ``lam <- max(0, lam + rho g)``.  Reverse-mode gradients go through the
   diffrax solves (pure JAX); the compiled value-and-gradient is reused across calls, limits,
   temperatures and multipliers (they are traced arrays).  Each limit starts from the best
   deliverable schedule found so far that meets it (flat schedules at every capsule strength
   are evaluated first), so the search starts near the boundary of the feasible set, where the
   smooth toxicity has a gradient.
3. **Deliverable schedule.**  The relaxed optimum is rounded to its neighbours among deliverable
   schedules (start dose and plateau capsule strengths, escalation step on a 2.5 mg grid with
   every daily dose rounded down to a capsule strength, days on one of ``days_on_options``),
   which are evaluated with the *hard* endpoints on the same patients (optionally under dose
   rules).  The best schedule meeting the limit is returned; if none does, lower flat doses are
   tried until one does.  Every deliverable schedule evaluated for any limit is a candidate for
   every limit, so the trade-off curve is monotone.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from . import endpoints as E
from .cll import LenalidomideCLL
from .model import Model
from .parameters import ParameterSet
from .population import virtual_population
from .regimen import Regimen, load_regimens
from .rules import DoseRules
from .solve import SolverSettings, solve_checked, solve_days

DEFAULT_CAPSULES = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0)
DEFAULT_DAYS_ON = (21, 28)
GRADE3_ANC = 1.0  # x10^9/L: grade >= 3 neutropenia below this (CTCAE v5)
PR_RATIO = 0.5  # ALC / ALC0 below this: PR or better (blood part of iwCLL 2008)
SOFTMAX_SHARPNESS = 4.0  # smooth maximum over visits this many times sharper than the threshold sigmoid


# ====================================================================== input checks
def _check_n(n, field_name: str = "n") -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{field_name} must be a whole number >= 1, got {n!r}")
    return int(n)


def _check_fraction(value, field_name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} must be a number in (0, 1), got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not (0.0 < x < 1.0):
        raise ValueError(f"{field_name} must be a number in (0, 1), got {value!r}")
    return x


def _check_positive(value, field_name: str, *, integer: bool = False, minimum: float = 0.0,
                    strict: bool = True) -> float:
    ok = not isinstance(value, (bool, np.bool_))
    try:
        x = float(value)
    except (TypeError, ValueError):
        ok = False
        x = math.nan
    ok = ok and math.isfinite(x) and (x > minimum if strict else x >= minimum)
    if ok and integer:
        ok = x == int(x)
    if not ok:
        what = "a whole number" if integer else "a number"
        rel = ">" if strict else ">="
        raise ValueError(f"{field_name} must be {what} {rel} {minimum}, got {value!r}")
    return int(x) if integer else x


def _check_setting(setting) -> str:
    from .population import COVARIATE_DISTRIBUTIONS

    if setting not in COVARIATE_DISTRIBUTIONS:
        raise ValueError(f"setting must be one of {sorted(COVARIATE_DISTRIBUTIONS)}, got {setting!r}")
    return setting


def _check_rules(rules, field_name: str = "rules"):
    if rules is not None and not isinstance(rules, DoseRules):
        raise ValueError(
            f"{field_name} must be None or a lenapk dose-rule object (e.g. lenapk.label_rule()), "
            f"got {type(rules).__name__}"
        )
    return rules


def _typical(model: Model, params) -> ParameterSet:
    if params is None:
        return model.default_params()
    if not isinstance(params, ParameterSet):
        raise ValueError(
            f"params must be a lenapk.ParameterSet (typical values), got {type(params).__name__}"
        )
    model.validate(params)
    return params


def resolve_regimens(regimens) -> dict[str, Regimen]:
    """``regimens`` as an ordered dict name -> Regimen.

    Accepts a dict name -> Regimen (or bundled regimen id), a list of Regimens (named by their
    ``name``) or bundled regimen ids, or a single Regimen.  Unknown bundled ids, duplicate
    names and an empty collection raise ``ValueError``.
    """
    if isinstance(regimens, (Regimen, str)):
        regimens = [regimens]
    if isinstance(regimens, Mapping):
        items = [(str(k), v) for k, v in regimens.items()]
    elif isinstance(regimens, Sequence):
        items = [(None, v) for v in regimens]
    else:
        raise ValueError(
            f"regimens must be a dict name -> Regimen or a list of Regimens / bundled regimen ids, "
            f"got {type(regimens).__name__}"
        )
    if not items:
        raise ValueError(f"regimens must contain at least one regimen, got {regimens!r}")
    bundled = None
    out: dict[str, Regimen] = {}
    for i, (key, r) in enumerate(items):
        where = f"regimens[{key!r}]" if key is not None else f"regimens[{i}]"
        if isinstance(r, str):
            bundled = load_regimens() if bundled is None else bundled
            if r not in bundled:
                raise ValueError(
                    f"{where}: unknown regimen name {r!r}; bundled regimens are {sorted(bundled)}"
                )
            reg = bundled[r]
            name = key if key is not None else r
        elif isinstance(r, Regimen):
            reg = r
            name = key if key is not None else r.name
        else:
            raise ValueError(
                f"{where} must be a lenapk.Regimen or a bundled regimen id, got {type(r).__name__}"
            )
        if np.ndim(reg.doses) != 1:
            raise ValueError(
                f"{where} must be one regimen (1-D doses), got doses of shape {np.shape(reg.doses)}"
            )
        if name in out:
            raise ValueError(
                f"regimens: two regimens named {name!r}; pass a dict name -> Regimen to name them"
            )
        out[name] = reg
    return out


def _resolve_rules(rules, names) -> dict[str, DoseRules | None]:
    """One rule object (or None) per regimen name: ``rules`` is None, one rule for all, or a dict
    regimen name -> rule (names left out get no rules)."""
    if isinstance(rules, Mapping):
        unknown = sorted(set(map(str, rules)) - set(names))
        if unknown:
            raise ValueError(f"rules: unknown regimen name(s) {unknown}; regimens are {list(names)}")
        return {n: _check_rules(rules.get(n), f"rules[{n!r}]") for n in names}
    _check_rules(rules)
    return {n: rules for n in names}


# ====================================================================== comparison
#: Metrics of the :func:`compare` table: (column, label, kind).  Each has ``<column>_lo`` and
#: ``<column>_hi`` (95% CI) beside it.  Rates: Wilson score intervals; means and the per-course
#: rate: Student-t intervals (the per-course rate is the mean over patients of the fraction of
#: their courses with grade >= 3 neutropenia: patients are the independent units).
COMPARE_METRICS = (
    ("g3_neutropenia", "grade >= 3 neutropenia (patients)", "rate"),
    ("g3_neutropenia_per_course", "grade >= 3 neutropenia (per 28-day course)", "mean"),
    ("response_c6", "response (PR or better) by cycle 6", "rate"),
    ("response_c12", "response (PR or better) by cycle 12", "rate"),
    ("response_c24", "response (PR or better) by cycle 24", "rate"),
    ("response", "response (PR or better), whole regimen", "rate"),
    ("igg_change_c12", "IgG change at cycle 12 (mg/dL)", "mean"),
    ("igg_change_c24", "IgG change at cycle 24 (mg/dL)", "mean"),
    ("igm_change_c12", "IgM change at cycle 12 (mg/dL)", "mean"),
    ("igm_change_c24", "IgM change at cycle 24 (mg/dL)", "mean"),
    ("iga_change_c12", "IgA change at cycle 12 (mg/dL)", "mean"),
    ("iga_change_c24", "IgA change at cycle 24 (mg/dL)", "mean"),
    ("dose_intensity", "delivered dose intensity (delivered / planned mg)", "mean"),
    ("days_held", "days held", "mean"),
)
#: Leading columns of the :func:`compare` table.
COMPARE_ID_COLUMNS = ("regimen", "rules", "n", "n_cycles")


def compare_columns() -> list[str]:
    """The columns of :func:`compare`'s table, in order."""
    cols = list(COMPARE_ID_COLUMNS)
    for c, _, _ in COMPARE_METRICS:
        cols += [c, f"{c}_lo", f"{c}_hi"]
    return cols


def _rules_label(rules) -> str:
    return "none" if rules is None else getattr(rules, "label", None) or type(rules).__name__


def _compare_row(name: str, regimen: Regimen, rules, df: pd.DataFrame) -> dict:
    """One row of the comparison table from a :func:`lenapk.cohort` frame."""
    from .summary import mean_interval, wilson_interval

    L = regimen.cycle_days
    n_days = regimen.n_days
    n = len(df)
    row: dict = {"regimen": name, "rules": _rules_label(rules), "n": n, "n_cycles": regimen.n_cycles}

    def rate(col, events):
        k = int(np.sum(np.asarray(events, dtype=bool)))
        lo, hi = wilson_interval(k, n)
        row[col], row[f"{col}_lo"], row[f"{col}_hi"] = k / n, lo, hi

    def mean(col, values, clip=None):
        m, lo, hi, _ = mean_interval(values)
        if clip is not None:
            lo, hi = (float(np.clip(x, *clip)) if np.isfinite(x) else x for x in (lo, hi))
        row[col], row[f"{col}_lo"], row[f"{col}_hi"] = m, lo, hi

    def missing(col):
        row[col] = row[f"{col}_lo"] = row[f"{col}_hi"] = math.nan

    rate("g3_neutropenia", df["anc_grade"].to_numpy() >= 3)
    per_cycle = sorted((c for c in df.columns if c.startswith("anc_grade_c")), key=lambda c: int(c[11:]))
    mean("g3_neutropenia_per_course", (df[per_cycle].to_numpy() >= 3).mean(axis=1), clip=(0.0, 1.0))
    ttr = df["time_to_response"].to_numpy(dtype=float)
    for c in (6, 12, 24):
        if c * L <= n_days:
            rate(f"response_c{c}", np.nan_to_num(ttr, nan=np.inf) <= c * L)
        else:
            missing(f"response_c{c}")
    rate("response", df["best_response"].astype(str).isin(["CR", "PR"]).to_numpy())
    for ig in ("igg", "igm", "iga"):
        for c in (12, 24):
            col = f"{ig}_change_c{c}"
            if c * L <= n_days and f"{ig}_c{c}" in df:
                mean(col, df[f"{ig}_c{c}"].to_numpy(dtype=float) - df[f"{ig}0"].to_numpy(dtype=float))
            else:
                missing(col)
    # rules only ever lower a planned dose: the interval is clipped to the possible range
    mean("dose_intensity", df["dose_intensity"].to_numpy(dtype=float), clip=(0.0, 1.0))
    mean("days_held", df["days_held"].to_numpy(dtype=float), clip=(0.0, float(n_days)))
    return row


def _cut(regimen: Regimen, n_cycles: int) -> Regimen:
    """The first ``n_cycles`` cycles of ``regimen`` (unchanged if it is not longer)."""
    n_days = n_cycles * regimen.cycle_days
    if regimen.n_days <= n_days:
        return regimen
    return Regimen.from_daily_doses(np.asarray(regimen.doses)[:n_days], cycle_days=regimen.cycle_days,
                                    name=regimen.name)


def compare(
    regimens,
    *,
    n: int = 200,
    seed: int = 0,
    rules=None,
    setting: str = "untreated",
    params: ParameterSet | None = None,
    n_cycles: int | None = None,
    visits="protocol",
    block_size: int | None = None,
    chunk_size: int | None = None,
    model: Model | None = None,
    settings: SolverSettings = SolverSettings(),
    progress: bool = False,
) -> pd.DataFrame:
    """Compare regimens on ONE virtual cohort (common random numbers: the same patients, drawn
    from ``(seed, patient)``, under every regimen).

    Main arguments:
        regimens: a dict name -> :class:`Regimen` (or bundled regimen id), or a list of Regimens
            (named by ``Regimen.name``) or bundled regimen ids.
        n, seed, setting, params: the virtual cohort (:func:`lenapk.cohort`) and the typical
            parameters (default: the model's).
        rules: dose rules for every regimen, or a dict regimen name -> rules (``None`` or left
            out: every planned dose is given).  Name a regimen twice (e.g. ``"x"`` and
            ``"x + label rule"``) to compare it with and without a rule.
    Other arguments:
        n_cycles: cut every regimen to its first ``n_cycles`` cycles (default: as given).
        visits: when labs are read (:func:`lenapk.cohort`): ``"protocol"`` (default: weekly in
            cycles 1-2, then every 14 days, as in a trial) or ``"daily"``.
        block_size: patients per shared-step ODE (default ``min(n, 128)``); chunk_size, model,
            settings, progress: passed to :func:`lenapk.cohort`.

    Returns one row per regimen: ``regimen``, ``rules``, ``n``, ``n_cycles``, then for each
    metric of :data:`COMPARE_METRICS` the estimate and its 95% CI (``_lo``, ``_hi``):
    grade >= 3 neutropenia incidence and per-course rate, response (best response PR or
    better) by cycles 6, 12 and 24 and over the whole regimen, IgG/IgM/IgA change from baseline
    at cycles 12 and 24 (mg/dL), delivered dose intensity and days held.  Endpoints beyond a
    regimen's length are NaN.
    """
    from .cohort import DEFAULT_BLOCK_SIZE, cohort

    model = LenalidomideCLL() if model is None else model
    n = _check_n(n)
    regs = resolve_regimens(regimens)
    rule_map = _resolve_rules(rules, list(regs))
    _check_setting(setting)
    typical = _typical(model, params)
    if n_cycles is not None:
        n_cycles = _check_positive(n_cycles, "n_cycles", integer=True)
        regs = {k: _cut(r, n_cycles) for k, r in regs.items()}
    block = min(n, DEFAULT_BLOCK_SIZE) if block_size is None else _check_n(block_size, "block_size")
    rows = []
    for name, reg in regs.items():
        df = cohort(
            reg, n=n, seed=seed, setting=setting, rules=rule_map[name], params=typical, chunk_size=chunk_size,
            progress=progress, block_size=block, visits=visits, model=model, settings=settings,
        )
        rows.append(_compare_row(name, reg, rule_map[name], df))
    return pd.DataFrame(rows, columns=compare_columns())


# ====================================================================== figures
def _bars(ax, table: pd.DataFrame, series, title: str, xlabel: str, xlim=None):
    """Grouped horizontal bars (one group per regimen, one bar per series) with 95% CIs."""
    labels = [str(r) if rl == "none" or "rule" in str(r).lower() else f"{r} [{rl}]"
              for r, rl in zip(table["regimen"], table["rules"])]
    y = np.arange(len(table))
    series = [(c, nm) for c, nm in series if np.isfinite(table[c].to_numpy(dtype=float)).any()]
    k = max(len(series), 1)
    h = 0.8 / k
    drawn = bool(series)
    for j, (col, name) in enumerate(series):
        est = table[col].to_numpy(dtype=float)
        lo = table[f"{col}_lo"].to_numpy(dtype=float)
        hi = table[f"{col}_hi"].to_numpy(dtype=float)
        ok = np.isfinite(est)
        err = np.vstack([np.where(np.isfinite(lo), est - lo, 0.0), np.where(np.isfinite(hi), hi - est, 0.0)])
        pos = y - 0.4 + h * (j + 0.5)
        ax.barh(pos[ok], est[ok], height=h * 0.9, label=name, color=f"C{j}")
        ax.errorbar(est[ok], pos[ok], xerr=err[:, ok], fmt="none", ecolor="k", elinewidth=0.8, capsize=2)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.axvline(0, color="0.5", lw=0.6)
    if drawn and k > 1:
        ax.legend(fontsize=7, loc="best")
    if not drawn:
        ax.text(0.5, 0.5, "not reached within the simulated cycles", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")


def plot_comparison(table: pd.DataFrame, path) -> Path:
    """Draw a :func:`compare` table (estimates with 95% CI whiskers) to ``path`` (PNG, PDF, ...,
    by suffix; matplotlib's Agg backend).  Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(table, pd.DataFrame):
        raise ValueError(
            f"table must be the DataFrame returned by lenapk.compare, got {type(table).__name__}"
        )
    missing = [c for c in compare_columns() if c not in table.columns]
    if missing:
        raise ValueError(
            f"table lacks the column(s) {missing[:5]}: pass the DataFrame returned by lenapk.compare"
        )
    if len(table) == 0:
        raise ValueError("table has no rows")
    path = Path(path)
    height = 2.2 + 0.45 * len(table) * 1.2
    fig, axes = plt.subplots(2, 3, figsize=(16, 2 * height))
    _bars(axes[0, 0], table, [("g3_neutropenia", "patients"), ("g3_neutropenia_per_course", "per course")],
          "Grade >= 3 neutropenia", "fraction", (0, 1))
    _bars(axes[0, 1], table, [("response_c6", "by cycle 6"), ("response_c12", "by cycle 12"),
                              ("response_c24", "by cycle 24"), ("response", "whole regimen")],
          "Response (PR or better, by ALC)", "fraction", (0, 1))
    _bars(axes[0, 2], table, [("dose_intensity", "dose intensity")], "Delivered dose intensity",
          "delivered / planned", (0, 1.05))
    for ax, c in ((axes[1, 0], 12), (axes[1, 1], 24)):
        series = [(f"{ig}_change_c{c}", ig[:2].capitalize() + ig[2].upper()) for ig in ("igg", "igm", "iga")]
        _bars(ax, table, series, f"Immunoglobulin change at cycle {c}", "mg/dL from baseline")
    _bars(axes[1, 2], table, [("days_held", "days held")], "Days held (dose rules)", "days")
    fig.suptitle(f"Schedule comparison: the same {int(table['n'].iloc[0])} virtual patients per regimen "
                 "(95% CIs)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tradeoff(tradeoff: pd.DataFrame, path) -> Path:
    """Draw :attr:`ScheduleOptimum.tradeoff`: best response and the toxicity reached against the
    toxicity limit (hard endpoints of the deliverable schedules; smooth relaxed values dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    need = ["constraint", "response", "g3_neutropenia", "schedule", "smooth_response", "smooth_toxicity"]
    if not isinstance(tradeoff, pd.DataFrame) or any(c not in tradeoff.columns for c in need):
        raise ValueError(f"tradeoff must be ScheduleOptimum.tradeoff (columns {need})")
    path = Path(path)
    t = tradeoff.sort_values("constraint")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    ax.plot(t["constraint"], t["response"], "o-", label="deliverable schedule (hard)")
    ax.plot(t["constraint"], t["smooth_response"], "s--", alpha=0.6, label="relaxed optimum (smooth)")
    for _, r in t.iterrows():
        ax.annotate(str(r["schedule"]), (r["constraint"], r["response"]), fontsize=7,
                    xytext=(3, 6), textcoords="offset points")
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("limit on grade >= 3 neutropenia incidence")
    ax.set_ylabel("response rate (PR or better)")
    ax.set_title("Best response under the toxicity limit", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t["constraint"], t["g3_neutropenia"], "o-", label="deliverable schedule (hard)")
    ax.plot(t["constraint"], t["smooth_toxicity"], "s--", alpha=0.6, label="relaxed optimum (smooth)")
    lim = [0, max(1e-3, float(t["constraint"].max()) * 1.1)]
    ax.plot(lim, lim, color="0.5", lw=0.8, label="limit")
    ax.set_xlabel("limit on grade >= 3 neutropenia incidence")
    ax.set_ylabel("grade >= 3 neutropenia incidence")
    ax.set_title("Toxicity reached", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ====================================================================== optimisation: relaxed schedule
@dataclass(frozen=True)
class _Relax:
    """Static description of the relaxed schedule and its smooth endpoints (hashable: part of
    the compiled function's cache key)."""

    n_days: int
    cycle_days: int
    escalate_every_days: int
    min_mg: float  # lowest start dose (smallest capsule)
    max_mg: float  # highest dose
    max_step_mg: float  # largest escalation step
    min_days_on: float
    days_on_width: float  # width (days) of the sigmoid edge of the dosing days in a cycle
    visits: tuple  # lab visits (pre-dose day index, day 0 first): toxicity and response assessments
    objective: str


SCHEDULE_FIELDS = ("start_mg", "escalation_mg", "days_on", "top_mg")


def _unpack(theta, spec: _Relax):
    """(start_mg, escalation_mg, days_on, top_mg) of the unconstrained ``theta`` (4,)."""
    s = jax.nn.sigmoid(theta)
    start = spec.min_mg + (spec.max_mg - spec.min_mg) * s[0]
    step = spec.max_step_mg * s[1]
    days_on = spec.min_days_on + (spec.cycle_days + 1 - spec.min_days_on) * s[2]
    top = start + (spec.max_mg - start) * s[3]
    return start, step, days_on, top


def _logit(p):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _pack(start, step, days_on, top, spec: _Relax) -> jnp.ndarray:
    """Inverse of :func:`_unpack` (values at the ends of their ranges are pulled inside)."""
    top_frac = (top - start) / (spec.max_mg - start) if spec.max_mg > start else 0.5
    return jnp.asarray(
        [
            _logit((start - spec.min_mg) / (spec.max_mg - spec.min_mg)),
            _logit(step / spec.max_step_mg),
            _logit((days_on - spec.min_days_on) / (spec.cycle_days + 1 - spec.min_days_on)),
            _logit(top_frac),
        ],
        dtype=jnp.float64,
    )


def relaxed_doses(theta, spec: _Relax) -> jnp.ndarray:
    """Planned daily doses (mg) of the relaxed schedule ``theta`` (differentiable)::

        min(start + step * floor(d / escalate_every_days), top)
            * sigmoid((days_on - (d mod cycle_days) - 1/2) / days_on_width)
    """
    start, step, days_on, top = _unpack(theta, spec)
    day = jnp.arange(spec.n_days)
    level = jnp.minimum(start + step * (day // spec.escalate_every_days), top)
    on = jax.nn.sigmoid((days_on - (day % spec.cycle_days) - 0.5) / spec.days_on_width)
    return level * on


def smooth_any_below(x, threshold, temperature, *, sharpness: float = SOFTMAX_SHARPNESS, axis: int = -1):
    """Smooth indicator that any value along ``axis`` is below ``threshold``.

    ``sigmoid(M / T)`` where ``M = tau * logsumexp(m / tau)`` is a smooth maximum of the log
    margins ``m = log(threshold) - log(x)`` at ``tau = T / sharpness``.  With ``sharpness = 1``
    this is :func:`lenapk.endpoints.any_below`; a sharper maximum keeps its upward bias (at most
    ``tau * log(visits)`` on the log scale: 0.34 with T = 0.1 and 30 visits, i.e. ANC read 40%
    too low, against 0.085 at sharpness 4) small, so that the relaxed incidence tracks the hard
    one.  Converges to the hard indicator as T -> 0.  ``temperature`` may be a traced array."""
    tau = temperature / sharpness
    m = (jnp.log(threshold) - jnp.log(x)) / tau
    return jax.nn.sigmoid(jax.nn.logsumexp(m, axis=axis) / sharpness)


def _smooth_metrics(doses, temperature, model, p, spec: _Relax, settings):
    """Smooth endpoints of the planned daily ``doses`` (n_days,) on the population ``p``; the
    aux dict also carries the labs at the visits, for the hard endpoints."""
    n = jnp.shape(p["alc0"])[0]
    traj = solve_days(model, p, jnp.broadcast_to(doses, (n, spec.n_days)), None, None, settings)
    v = np.asarray(spec.visits)
    on = v > 0
    anc_v, alc_v, plt_v = (traj.day_obs[k][:, v] for k in ("anc", "alc", "platelets"))
    alc = traj.day_obs["alc"]
    tox = jnp.mean(smooth_any_below(anc_v[:, on], GRADE3_ANC, temperature))
    resp = jnp.mean(smooth_any_below(alc_v[:, on] / alc[:, :1], PR_RATIO, temperature))
    end_ratio = alc[:, -1] / alc[:, 0]
    log_ratio_end = jnp.mean(jnp.log(end_ratio))
    ok = (jnp.all(traj.ok) & jnp.all(jnp.isfinite(alc)) & jnp.all(jnp.isfinite(anc_v))
          & jnp.all(jnp.isfinite(plt_v)))
    reward = resp if spec.objective == "response" else -log_ratio_end
    return reward, {"response": resp, "toxicity": tox, "log_alc_ratio": log_ratio_end, "ok": ok,
                    "anc_v": anc_v, "alc_v": alc_v, "plt_v": plt_v, "end_ratio": end_ratio}


def _al_loss(doses, lam, rho, limit, temperature, model, p, spec, settings):
    """Augmented Lagrangian of ``max reward s.t. toxicity <= limit`` (inequality form)."""
    reward, aux = _smooth_metrics(doses, temperature, model, p, spec, settings)
    g = aux["toxicity"] - limit
    penalty = (jnp.maximum(0.0, lam + rho * g) ** 2 - lam**2) / (2.0 * rho)
    return -reward + penalty, {**aux, "reward": reward}


# Value and gradient with respect to the planned daily doses, compiled once per (model,
# population size, spec, settings): doses, lam, rho, limit and temperature are traced, so neither
# the limit, the multiplier, the temperature nor the schedule recompiles.  The chain rule to
# theta is a cheap jax.vjp of relaxed_doses outside; the same executable evaluates deliverable
# schedules (hard endpoints from the aux labs) when no dose rules are asked for.
_al_value_and_grad = eqx.filter_jit(jax.value_and_grad(_al_loss, has_aux=True))


# ====================================================================== optimisation: deliverable schedules
def _floor_to(x: float, grid) -> float:
    grid = np.asarray(grid, dtype=float)
    below = grid[grid <= x + 1e-9]
    return float(below[-1]) if below.size else float(grid[0])


def _ceil_to(x: float, grid) -> float:
    grid = np.asarray(grid, dtype=float)
    above = grid[grid >= x - 1e-9]
    return float(above[0]) if above.size else float(grid[-1])


def deliverable_regimen(start_mg: float, escalation_mg: float, days_on: int, *, n_cycles: int,
                        cycle_days: int = 28, escalate_every_days: int = 28, max_mg: float = 25.0,
                        capsules=DEFAULT_CAPSULES) -> Regimen:
    """A clinically deliverable schedule: :meth:`Regimen.cycles` (``start_mg``, +``escalation_mg``
    every ``escalate_every_days`` up to ``max_mg``, ``days_on`` of each ``cycle_days``) with
    every daily dose rounded down to a capsule strength.  Named by :func:`describe_doses`."""
    caps = np.asarray(capsules, dtype=float)
    reg = Regimen.cycles(
        start_mg, n_cycles=n_cycles, cycle_days=cycle_days, days_on=int(days_on),
        escalation_mg=escalation_mg, escalate_every_days=escalate_every_days if escalation_mg > 0 else None,
        max_mg=max(max_mg, start_mg),
    )
    d = np.asarray(reg.doses)
    idx = np.searchsorted(caps, d + 1e-9, side="right") - 1
    snapped = np.where(d > 0, caps[np.clip(idx, 0, None)], 0.0)
    return Regimen.from_daily_doses(snapped, cycle_days=cycle_days, name=describe_doses(snapped, cycle_days))


def describe_doses(doses, cycle_days: int = 28) -> str:
    """A short label of a cyclic schedule, e.g. ``"d1-21/28: 10 mg c1-2, 15 mg c3+"``: the days on
    of the first cycle, then the highest daily dose of each cycle, run-length encoded."""
    d = np.asarray(doses, dtype=float)
    n_cyc = -(-d.size // cycle_days)
    first = d[:cycle_days] > 0
    on = int(first.sum())
    contiguous = on == 0 or (first[:on].all() and not first[on:].any())
    pattern = f"d1-{on}/{cycle_days}" if contiguous else f"{on}/{cycle_days} days"
    per = [float(d[c * cycle_days:(c + 1) * cycle_days].max()) for c in range(n_cyc)]
    runs: list[list] = []
    for c, x in enumerate(per):
        if runs and runs[-1][0] == x:
            runs[-1][2] = c
        else:
            runs.append([x, c, c])
    parts = []
    for i, (x, a, b) in enumerate(runs):
        if len(runs) == 1:
            parts.append(f"{x:g} mg")
        elif i == len(runs) - 1 and b > a:
            parts.append(f"{x:g} mg c{a + 1}+")
        else:
            parts.append(f"{x:g} mg c{a + 1}" + (f"-{b + 1}" if b > a else ""))
    return f"{pattern}: " + ", ".join(parts)


def _hard_metrics(anc_v, alc_v, plt_v, end_ratio, visits, given, planned, held=None) -> dict:
    """Hard endpoints from the labs at ``visits`` (which start with day 0), as in
    :func:`lenapk.cohort` with ``visits="protocol"``: grade >= 3 neutropenia = ANC < 1.0 at an
    on-treatment visit; response = best response CR or PR (:func:`lenapk.endpoints.best_response`)."""
    anc_v, alc_v, plt_v = (np.asarray(a) for a in (anc_v, alc_v, plt_v))
    on = np.asarray(visits) > 0
    tox = (anc_v[:, on] < GRADE3_ANC).any(axis=1)
    label, _ = E.best_response(alc_v, anc_v, plt_v, np.arange(len(visits)))
    resp = np.isin(label, ("CR", "PR"))
    plan = float(np.sum(planned))
    return {
        "response": float(resp.mean()),
        "g3_neutropenia": float(tox.mean()),
        "mean_log_alc_ratio": float(np.mean(np.log(np.asarray(end_ratio)))),
        "dose_intensity": float(np.mean(np.asarray(given).sum(axis=-1) / plan)) if plan > 0 else math.nan,
        "days_held": float(np.mean((np.asarray(held) > 0).sum(axis=-1))) if held is not None else 0.0,
        "n": int(anc_v.shape[0]),
    }


@dataclass
class ScheduleOptimum:
    """What :func:`optimise_schedule` returns.

    - ``regimen``: the best deliverable schedule for ``constraint`` (a :class:`Regimen`, named
      by :func:`describe_doses`);
    - ``metrics``: its hard endpoints on the optimisation cohort (``response``: best response PR
      or better by ALC within the horizon; ``g3_neutropenia``: ANC < 1.0 at any lab visit;
      ``mean_log_alc_ratio`` at the end, ``dose_intensity``, ``days_held``, ``n``);
    - ``feasible``: whether ``metrics["g3_neutropenia"] <= constraint``;
    - ``schedule``: its design (``start_mg``, ``escalation_mg``, ``days_on``, ``top_mg``, ...);
    - ``relaxed``: the continuous optimum for ``constraint`` and its smooth endpoints;
    - ``tradeoff``: one row per constraint level (``constraint``, ``feasible``, hard
      ``response`` and ``g3_neutropenia`` of the best deliverable schedule, its design and
      ``schedule`` label, the relaxed optimum and its ``smooth_response`` /
      ``smooth_toxicity``);
    - ``candidates``: every deliverable schedule evaluated, with its hard metrics;
    - ``history``: the optimiser's trace (limit, step, temperature, smooth response and
      toxicity, multiplier, schedule).
    """

    regimen: Regimen
    metrics: dict
    feasible: bool
    constraint: float
    schedule: dict
    relaxed: dict
    tradeoff: pd.DataFrame
    candidates: pd.DataFrame
    history: pd.DataFrame
    settings: dict = field(default_factory=dict)


def _check_options(capsules, max_mg, days_on_options, cycle_days):
    caps = np.array([np.nan]) if isinstance(capsules, (str, bytes)) else capsules
    try:
        caps = np.asarray(caps, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        caps = np.array([np.nan])
    if caps.size == 0 or not np.all(np.isfinite(caps)) or np.any(caps <= 0) or np.any(np.diff(caps) <= 0):
        raise ValueError(f"capsules must be increasing capsule strengths > 0 mg, got {capsules!r}")
    max_mg = _check_positive(max_mg, "max_mg")
    if max_mg < caps[0]:
        raise ValueError(f"max_mg must be >= the smallest capsule ({caps[0]:g} mg), got {max_mg!r}")
    caps = caps[caps <= max_mg + 1e-9]
    bad = ValueError(
        f"days_on_options must be whole days in 1..cycle_days ({cycle_days}), got {days_on_options!r}"
    )
    if isinstance(days_on_options, (str, bytes)) or not isinstance(days_on_options, (Sequence, np.ndarray)):
        raise bad
    try:
        don = sorted({_check_positive(d, "days_on_options", integer=True) for d in days_on_options})
    except ValueError:
        raise bad from None
    if not don or don[-1] > cycle_days:
        raise bad
    return caps, max_mg, don


def optimise_schedule(
    constraint: float = 0.30,
    *,
    constraint_levels: Sequence[float] | None = None,
    n: int = 64,
    seed: int = 0,
    setting: str = "untreated",
    params: ParameterSet | None = None,
    n_cycles: int = 6,
    cycle_days: int = 28,
    escalate_every_days: int = 28,
    max_mg: float = 25.0,
    capsules: Sequence[float] = DEFAULT_CAPSULES,
    days_on_options: Sequence[int] = DEFAULT_DAYS_ON,
    objective: str = "response",
    rules: DoseRules | None = None,
    steps: int = 60,
    inner_steps: int | None = None,
    learning_rate: float = 0.15,
    temperature: float = 0.1,
    temperature_start: float | None = None,
    penalty: float = 20.0,
    init: Mapping[str, float] | None = None,
    model: Model | None = None,
    settings: SolverSettings = SolverSettings(),
    progress: bool = False,
) -> ScheduleOptimum:
    """Best start dose, escalation (step and plateau) and days-on pattern under a limit on
    grade >= 3 neutropenia.

    Main arguments:
        constraint: the limit on the incidence of grade >= 3 neutropenia (ANC < 1.0 x10^9/L at
            any lab visit of the horizon: weekly in cycles 1-2, then every 14 days), a fraction
            in (0, 1).
        constraint_levels: further limits for the trade-off curve (each in (0, 1));
            ``constraint`` is always among them.
        n, seed, setting, params: the fixed virtual population (common random numbers: the
            first ``n`` patients of ``seed``, as in :func:`lenapk.cohort`) and the typical
            parameters (default: the model's).
        n_cycles: the horizon; response is the best response within it.
    Schedule family:
        start dose, +step every ``escalate_every_days`` up to a plateau (<= ``max_mg``), dosing
        on days 1..days_on of each ``cycle_days``.  Deliverable: doses rounded down to
        ``capsules`` (mg), days on one of ``days_on_options``.
    Optimiser:
        objective: ``"response"`` (PR-or-better rate) or ``"alc_reduction"`` (mean log fall of
            the ALC at the end of the horizon: informative on horizons too short for responses).
        steps: Adam steps per level; inner_steps: steps between multiplier updates (default
            ``max(1, steps // 6)``); learning_rate; penalty: the augmented Lagrangian's rho.
        temperature: of the smooth endpoints.  ``temperature_start`` (default: the same) makes
            it fall geometrically from that value over the first two thirds of the steps.
        init: the first level's starting schedule (``start_mg``, ``escalation_mg``, ``days_on``,
            ``top_mg``); by default each level starts from the best deliverable schedule found
            so far that meets it (flat schedules at every capsule strength are evaluated first).
        rules: dose rules applied in the hard evaluation of the deliverable schedules (the
            relaxed problem gives every planned dose).

    Returns a :class:`ScheduleOptimum`.  See the module docstring for the method.
    """
    t0 = time.time()
    model = LenalidomideCLL() if model is None else model
    n = _check_n(n)
    constraint = _check_fraction(constraint, "constraint")
    levels = [constraint]
    if constraint_levels is not None:
        if isinstance(constraint_levels, (str, bytes)) or not isinstance(
            constraint_levels, (Sequence, np.ndarray)
        ):
            raise ValueError(
                f"constraint_levels must be a sequence of fractions in (0, 1), got {constraint_levels!r}"
            )
        levels += [_check_fraction(c, f"constraint_levels[{i}]") for i, c in enumerate(constraint_levels)]
    levels = sorted(set(levels))
    _check_setting(setting)
    n_cycles = _check_positive(n_cycles, "n_cycles", integer=True)
    cycle_days = _check_positive(cycle_days, "cycle_days", integer=True)
    escalate_every_days = _check_positive(escalate_every_days, "escalate_every_days", integer=True)
    steps = _check_positive(steps, "steps", integer=True)
    if inner_steps is None:
        inner_steps = max(1, steps // 6)
    inner_steps = _check_positive(inner_steps, "inner_steps", integer=True)
    learning_rate = _check_positive(learning_rate, "learning_rate")
    temperature = _check_positive(temperature, "temperature")
    if temperature_start is None:
        temperature_start = temperature
    temperature_start = _check_positive(temperature_start, "temperature_start")
    penalty = _check_positive(penalty, "penalty")
    if objective not in ("response", "alc_reduction"):
        raise ValueError(f"objective must be 'response' or 'alc_reduction', got {objective!r}")
    caps, max_mg, don = _check_options(capsules, max_mg, days_on_options, cycle_days)
    _check_rules(rules)
    init = dict(init or {})
    unknown = sorted(set(init) - set(SCHEDULE_FIELDS))
    if unknown:
        raise ValueError(f"init: unknown key(s) {unknown}; expected {list(SCHEDULE_FIELDS)}")
    typical = _typical(model, params)

    n_days = n_cycles * cycle_days
    visits = E.default_visits(n_days, cycle_days=cycle_days)
    min_days_on = float(max(1, min(don) - 7))
    step_grid = np.arange(0.0, max_mg - caps[0] + 2.5 + 1e-9, 2.5)
    spec = _Relax(
        n_days=n_days, cycle_days=cycle_days, escalate_every_days=escalate_every_days,
        min_mg=float(caps[0]), max_mg=float(max_mg), max_step_mg=float(max(max_mg - caps[0], 2.5)),
        min_days_on=min_days_on, days_on_width=0.5, visits=tuple(int(v) for v in visits), objective=objective,
    )
    p = virtual_population(model, n, seed, setting=setting).parameters(model, typical)
    f64 = lambda x: jnp.asarray(x, dtype=jnp.float64)  # noqa: E731  (strong float64: no retrace)
    rho = f64(float(penalty))
    log = print if progress else (lambda *a, **k: None)  # noqa: E731

    def theta_of(start, step, days_on, top):
        """Unconstrained parameters of a schedule, kept inside 2-98% of each range (where the
        sigmoids still have a gradient)."""
        def inside(x, lo, hi):
            return float(np.clip(x, lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo)))
        start = inside(start, spec.min_mg, spec.max_mg)
        return _pack(start, inside(step, 0.0, spec.max_step_mg), inside(days_on, min_days_on, cycle_days + 1),
                     inside(top, start, spec.max_mg), spec)

    # ---------------------------------------------------------------- hard evaluation (cached)
    evaluated: dict[tuple, dict] = {}  # (start, step, days_on, top) -> hard metrics
    regimens: dict[tuple, Regimen] = {}
    by_doses: dict[bytes, tuple] = {}

    def evaluate(start, step, days_on, top):
        top = max(top, start)
        step = 0.0 if top <= start else step
        top = start if step == 0 else top
        key = (float(start), float(step), int(days_on), float(top))
        if key in evaluated:
            return evaluated[key]
        reg = deliverable_regimen(start, step, days_on, n_cycles=n_cycles, cycle_days=cycle_days,
                                  escalate_every_days=escalate_every_days, max_mg=top, capsules=caps)
        digest = np.asarray(reg.doses).tobytes()
        if digest in by_doses:  # the same daily doses as a schedule already evaluated
            return evaluated[by_doses[digest]]
        doses = f64(reg.doses)
        full = jnp.broadcast_to(doses, (n, n_days))
        if rules is None:
            (_, aux), _ = _al_value_and_grad(doses, f64(0.0), rho, f64(0.5), f64(temperature), model, p, spec,
                                             settings)
            if not bool(aux["ok"]):
                solve_checked(model, p, full, None, None, settings)  # raises SolverError naming the patient
            m = _hard_metrics(aux["anc_v"], aux["alc_v"], aux["plt_v"], aux["end_ratio"], visits, full, doses)
        else:
            traj = solve_checked(model, p, full, None, rules, settings)
            obs = {k: np.asarray(traj.day_obs[k])[:, visits] for k in ("anc", "alc", "platelets")}
            alc = np.asarray(traj.day_obs["alc"])
            m = _hard_metrics(obs["anc"], obs["alc"], obs["platelets"], alc[:, -1] / alc[:, 0], visits,
                              traj.doses, doses, traj.rule_records.get("held"))
        m.update(start_mg=key[0], escalation_mg=key[1], days_on=key[2], top_mg=key[3], schedule=reg.name,
                 total_mg=float(np.asarray(reg.doses).sum()))
        by_doses[digest] = key
        evaluated[key], regimens[key] = m, reg
        return m

    def score(m):  # larger is better: objective, then deeper ALC fall, less toxicity, less drug
        if objective == "response":
            return (m["response"], -m["mean_log_alc_ratio"], -m["g3_neutropenia"], -m["total_mg"])
        return (-m["mean_log_alc_ratio"], -m["g3_neutropenia"], -m["total_mg"])

    def best_feasible(limit):
        ok = [k for k, m in evaluated.items() if m["g3_neutropenia"] <= limit + 1e-12]
        return max(ok, key=lambda k: score(evaluated[k])) if ok else None

    def least_toxic():
        return min(evaluated, key=lambda k: (evaluated[k]["g3_neutropenia"],
                                             tuple(-x for x in score(evaluated[k]))))

    # ---------------------------------------------------------------- optimise each level
    # Coarse start: flat schedules at every capsule strength (hard endpoints); each level starts
    # from the best schedule evaluated so far that meets it (or the least toxic one).
    for c in caps:
        evaluate(c, 0.0, don[-1], c)
    history = []
    relaxed_by_level = {}
    optim = optax.adam(learning_rate)
    anneal = max(1, (2 * steps) // 3) if temperature_start != temperature else 0
    for li, level in enumerate(levels):
        if li == 0 and init:
            theta = theta_of(init.get("start_mg", 5.0), init.get("escalation_mg", 0.0),
                             init.get("days_on", cycle_days), init.get("top_mg", max_mg))
        else:
            k = best_feasible(level)
            theta = theta_of(*(least_toxic() if k is None else k))
        lam = f64(0.0)
        opt_state = optim.init(theta)
        best = None  # best smooth-feasible iterate at the final temperature
        last = None
        for it in range(steps):
            temp = temperature
            if anneal:
                temp = temperature_start * (temperature / temperature_start) ** min(1.0, it / anneal)
            doses, pullback = jax.vjp(lambda th: relaxed_doses(th, spec), theta)
            (loss, aux), g_doses = _al_value_and_grad(doses, lam, rho, f64(level), f64(temp), model, p, spec,
                                                      settings)
            (grad,) = pullback(g_doses)
            if not bool(aux["ok"]) or not np.all(np.isfinite(np.asarray(grad))):
                warnings.warn(f"optimise_schedule: solve failed or non-finite gradient at step {it} "
                              f"(limit {level}); stopping this level early", RuntimeWarning, stacklevel=2)
                break
            design = dict(zip(SCHEDULE_FIELDS, (float(x) for x in _unpack(theta, spec))))
            row = {"constraint": level, "step": it, "temperature": temp, "loss": float(loss),
                   "response": float(aux["response"]), "toxicity": float(aux["toxicity"]),
                   "log_alc_ratio": float(aux["log_alc_ratio"]), "lambda": float(lam), **design}
            history.append(row)
            last = (theta, row)
            at_final_t = it >= anneal or it == steps - 1
            better = best is None or float(aux["reward"]) > best[1]["reward"]
            if at_final_t and row["toxicity"] <= level and better:
                best = (theta, {**row, "reward": float(aux["reward"])})
            updates, opt_state = optim.update(grad, opt_state, theta)
            theta = optax.apply_updates(theta, updates)
            if (it + 1) % inner_steps == 0:
                lam = f64(jnp.maximum(0.0, lam + rho * (aux["toxicity"] - level)))
            if progress and (it % max(1, steps // 10) == 0 or it == steps - 1):
                log(f"[{time.time() - t0:6.1f}s] limit {level:.2f} step {it:3d} (T {temp:.3f}): response "
                    f"{row['response']:.3f} toxicity {row['toxicity']:.3f} lambda {row['lambda']:.2f} | "
                    f"start {design['start_mg']:.2f} mg, +{design['escalation_mg']:.2f} mg to "
                    f"{design['top_mg']:.2f} mg, days on {design['days_on']:.1f}")
        chosen = best if best is not None else last
        if chosen is None:
            raise RuntimeError("optimise_schedule: the first solve failed; check params / settings")
        relaxed_by_level[level] = chosen[1]
        # -------- deliverable neighbours of the relaxed optimum: each design value rounded down
        # and up (start and plateau to capsules, step to 2.5 mg, days on to the options)
        s_c, e_c, d_c, t_c = (chosen[1][f] for f in SCHEDULE_FIELDS)
        for s_ in {_floor_to(s_c, caps), _ceil_to(s_c, caps)}:
            for t_ in {_floor_to(t_c, caps), _ceil_to(t_c, caps)}:
                for e_ in {_floor_to(e_c, step_grid), _ceil_to(e_c, step_grid)}:
                    for d_ in {_floor_to(d_c, don), _ceil_to(d_c, don)}:
                        evaluate(s_, e_, int(d_), t_)
        # -------- none meets the limit: step down (flat, lower start, fewer days on)
        if best_feasible(level) is None:
            for s_ in sorted((c for c in caps if c <= _floor_to(s_c, caps)), reverse=True):
                for d_ in sorted(don, reverse=True):
                    evaluate(s_, 0.0, d_, s_)
                    if best_feasible(level) is not None:
                        break
                if best_feasible(level) is not None:
                    break

    # ---------------------------------------------------------------- assemble
    rows = []
    for level in levels:
        k = best_feasible(level)
        feasible = k is not None
        k = least_toxic() if k is None else k
        m, r = evaluated[k], relaxed_by_level[level]
        rows.append({
            "constraint": level, "feasible": feasible, "response": m["response"],
            "g3_neutropenia": m["g3_neutropenia"], "mean_log_alc_ratio": m["mean_log_alc_ratio"],
            "dose_intensity": m["dose_intensity"], "days_held": m["days_held"],
            **dict(zip(SCHEDULE_FIELDS, (k[0], k[1], k[2], k[3]))), "schedule": m["schedule"],
            **{f"relaxed_{f}": r[f] for f in SCHEDULE_FIELDS},
            "smooth_response": r["response"], "smooth_toxicity": r["toxicity"], "_key": k,
        })
    tradeoff = pd.DataFrame(rows)
    main = tradeoff.loc[tradeoff["constraint"] == constraint].iloc[0]
    key = main["_key"]
    if not main["feasible"]:
        warnings.warn(
            f"optimise_schedule: no deliverable schedule evaluated meets constraint={constraint:g} "
            f"(lowest grade >= 3 neutropenia incidence {evaluated[key]['g3_neutropenia']:.3f}); returning it",
            RuntimeWarning, stacklevel=2,
        )
    tradeoff = tradeoff.drop(columns="_key")
    cand = pd.DataFrame(list(evaluated.values()))
    cand = cand.sort_values(["g3_neutropenia", "response"]).reset_index(drop=True)
    m, r = evaluated[key], relaxed_by_level[constraint]
    return ScheduleOptimum(
        regimen=regimens[key],
        metrics={k_: m[k_] for k_ in ("response", "g3_neutropenia", "mean_log_alc_ratio", "dose_intensity",
                                      "days_held", "n")},
        feasible=bool(main["feasible"]),
        constraint=constraint,
        schedule={**dict(zip(SCHEDULE_FIELDS, key)), "cycle_days": cycle_days,
                  "escalate_every_days": escalate_every_days, "n_cycles": n_cycles},
        relaxed={k_: r[k_] for k_ in (*SCHEDULE_FIELDS, "response", "toxicity", "log_alc_ratio")},
        tradeoff=tradeoff,
        candidates=cand,
        history=pd.DataFrame(history),
        settings={"n": n, "seed": seed, "setting": setting, "objective": objective,
                  "temperature": temperature,
                  "temperature_start": temperature_start, "steps": steps, "inner_steps": inner_steps,
                  "penalty": penalty, "learning_rate": learning_rate,
                  "rules": None if rules is None else _rules_label(rules), "seconds": time.time() - t0},
    )
