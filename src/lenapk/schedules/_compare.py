"""Schedule comparison on common random numbers: one virtual cohort under several regimens.

The same patients (draws depend only on ``(seed, patient)``) receive every regimen, and the
model's endpoints (:class:`lenapk.endpoints.EndpointSet`) are tabulated with 95% confidence
intervals: rates with Wilson score intervals, means with Student-t intervals (the per-course
rate is the mean over patients of the fraction of their courses with the toxicity: patients
are the independent units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._core import AbstractDoseRules, AbstractModel, ParameterSet, Regimen, SolverSettings, resolve_model
from .._core import _validate as V
from ..cohorts import DEFAULT_BLOCK_SIZE, cohort
from ..endpoints import endpoints_of, mean_interval, wilson_interval
from ..population import check_setting

#: Leading columns of the :func:`compare` table.
COMPARE_ID_COLUMNS = ("regimen", "rules", "n", "n_cycles")


def resolve_regimens(regimens, bundled: Mapping[str, Regimen] | None = None) -> dict[str, Regimen]:
    """``regimens`` as an ordered dict name -> Regimen: a dict name -> Regimen (or regimen id of
    ``bundled``), a list of Regimens (named by their ``name``) or ids, or one Regimen.  Unknown
    ids, duplicate names and an empty collection raise ``ValueError``."""
    if isinstance(regimens, (Regimen, str)):
        regimens = [regimens]
    if isinstance(regimens, Mapping):
        items = [(str(k), v) for k, v in regimens.items()]
    elif isinstance(regimens, Sequence):
        items = [(None, v) for v in regimens]
    else:
        raise ValueError(
            f"regimens must be a dict name -> Regimen or a list of Regimens / regimen ids, "
            f"got {type(regimens).__name__}"
        )
    if not items:
        raise ValueError(f"regimens must contain at least one regimen, got {regimens!r}")
    out: dict[str, Regimen] = {}
    for i, (key, r) in enumerate(items):
        where = f"regimens[{key!r}]" if key is not None else f"regimens[{i}]"
        if isinstance(r, str):
            if bundled is None:
                raise ValueError(
                    f"{where} must be a lenapk.Regimen, got the name {r!r} (load it first, e.g. with "
                    "lenapk.load_regimens())"
                )
            if r not in bundled:
                raise ValueError(f"{where}: unknown regimen name {r!r}; known regimens are {sorted(bundled)}")
            reg, name = bundled[r], key if key is not None else r
        elif isinstance(r, Regimen):
            reg, name = r, key if key is not None else r.name
        else:
            raise ValueError(f"{where} must be a lenapk.Regimen or a regimen id, got {type(r).__name__}")
        if name in out:
            raise ValueError(f"regimens: two regimens named {name!r}; pass a dict name -> Regimen to name them")
        out[name] = reg
    return out


def resolve_rules(rules, names) -> dict[str, AbstractDoseRules | None]:
    """One rule object (or None) per regimen name: ``rules`` is None, one rule for all, or a dict
    regimen name -> rule (names left out get no rules)."""

    def check(r, field):
        return r if r is None else V.instance(field, r, AbstractDoseRules, "None or a lenapk dose-rule object")

    if isinstance(rules, Mapping):
        unknown = sorted(set(map(str, rules)) - set(names))
        if unknown:
            raise ValueError(f"rules: unknown regimen name(s) {unknown}; regimens are {list(names)}")
        return {n: check(rules.get(n), f"rules[{n!r}]") for n in names}
    check(rules, "rules")
    return {n: rules for n in names}


def rules_label(rules) -> str:
    return "none" if rules is None else getattr(rules, "label", None) or type(rules).__name__


def compare_row(name: str, regimen: Regimen, rules, df: pd.DataFrame, model) -> tuple[dict, list[dict]]:
    """One row of the comparison table from a :func:`lenapk.cohort` frame, and the metrics it
    holds (``column``, ``label``, ``panel``, ``fraction``: a proportion, shown as a percentage)."""
    n_days, n = regimen.n_days, len(df)
    row: dict = {"regimen": name, "rules": rules_label(rules), "n": n, "n_cycles": regimen.n_cycles}
    specs: list[dict] = []

    def put(col, label, panel, est, lo, hi, fraction=False):
        specs.append({"column": col, "label": label, "panel": panel, "fraction": fraction})
        row[col], row[f"{col}_lo"], row[f"{col}_hi"] = est, lo, hi

    def rate(col, label, panel, events):
        k = int(np.sum(np.asarray(events, dtype=bool)))
        put(col, label, panel, k / n, *wilson_interval(k, n), fraction=True)

    def mean(col, label, panel, values, clip=None):
        m, lo, hi, _ = mean_interval(values)
        if clip is not None:
            lo, hi = (float(np.clip(x, *clip)) if np.isfinite(x) else x for x in (lo, hi))
        put(col, label, panel, m, lo, hi, fraction=clip == (0.0, 1.0))

    def missing(col, label, panel):
        put(col, label, panel, math.nan, math.nan, math.nan)

    endpoints_of(model).metrics(df, n_days, regimen.cycle_days, rate, mean, missing)
    # rules only ever lower a planned dose: the intervals are clipped to the possible range
    mean(
        "dose_intensity",
        "delivered dose intensity (delivered / planned mg)",
        "Delivered dose intensity",
        df["dose_intensity"].to_numpy(dtype=float),
        (0.0, 1.0),
    )
    mean(
        "days_held", "days held", "Days held (dose rules)", df["days_held"].to_numpy(dtype=float), (0.0, float(n_days))
    )
    return row, specs


def compare(
    regimens,
    *,
    n: int = 200,
    seed: int = 0,
    rules=None,
    setting: str | None = None,
    params: ParameterSet | None = None,
    n_cycles: int | None = None,
    visits="protocol",
    block_size: int | None = None,
    chunk_size: int | None = None,
    model: AbstractModel | None = None,
    settings: SolverSettings = SolverSettings(),
    progress: bool = False,
) -> pd.DataFrame:
    """Compare regimens on ONE virtual cohort (common random numbers: the same patients, drawn
    from ``(seed, patient)``, under every regimen).

    Main arguments:
        regimens: a dict name -> :class:`Regimen`, or a list of Regimens (named by
            ``Regimen.name``).
        n, seed, setting, params: the virtual cohort (:func:`lenapk.cohort`) and the typical
            parameters (default: the model's).
        rules: dose rules for every regimen, or a dict regimen name -> rules (``None`` or left
            out: every planned dose is given).  Name a regimen twice to compare it with and
            without a rule.
    Other arguments:
        n_cycles: cut every regimen to its first ``n_cycles`` cycles (default: as given).
        visits: when labs are read: ``"protocol"`` (default: the standard lab schedule, as in a
            trial) or ``"daily"``.
        block_size: patients per shared-step ODE (default ``min(n, 256)``); chunk_size, model,
            settings, progress: passed to :func:`lenapk.cohort`.

    Returns one row per regimen: ``regimen``, ``rules``, ``n``, ``n_cycles``, then for each
    metric of the model's endpoints (the severe-grade toxicity rate and
    per-course rate of each grade scale, response by cycles 6, 12 and 24 and over the regimen,
    changes from baseline at the endpoint cycles) plus delivered dose intensity and days held,
    the estimate and its 95% CI (``_lo``, ``_hi``).  Endpoints beyond a regimen's length are NaN.
    ``table.attrs["metrics"]`` lists the metrics (for :func:`plot_comparison`).
    """
    model = resolve_model(model)
    n = V.count("n", n, 1)
    regs = resolve_regimens(regimens)
    rule_map = resolve_rules(rules, list(regs))
    setting = check_setting(model, setting)
    if n_cycles is not None:
        n_cycles = V.number("n_cycles", n_cycles, minimum=0, strict=True, integer=True)
        regs = {k: r.first_cycles(n_cycles) for k, r in regs.items()}
    block = min(n, DEFAULT_BLOCK_SIZE) if block_size is None else V.count("block_size", block_size, 1)
    rows, specs = [], {}
    for name, reg in regs.items():
        df = cohort(
            reg,
            n=n,
            seed=seed,
            setting=setting,
            rules=rule_map[name],
            params=params,
            chunk_size=chunk_size,
            progress=progress,
            block_size=block,
            visits=visits,
            model=model,
            settings=settings,
        )
        row, row_specs = compare_row(name, reg, rule_map[name], df, model)
        rows.append(row)
        specs.update({s["column"]: s for s in row_specs})
    specs = list(specs.values())
    columns = list(COMPARE_ID_COLUMNS) + [
        c for s in specs for c in (s["column"], f"{s['column']}_lo", f"{s['column']}_hi")
    ]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["metrics"] = specs
    return table
