"""Schedule optimisation: the start dose, escalation and days-on pattern that maximise response
under a limit on the model's limiting toxicity (and optionally on the incidence of its first
hazard event, ``event_constraint``).

1. **Relaxation** (:mod:`._relax`): four unconstrained numbers map to smooth planned daily doses,
   and the endpoints are smooth (temperature T).
2. **Constraint**: augmented Lagrangian for ``g = toxicity - limit <= 0``: the optimizer (an optax
   transformation, Adam by default) minimises ``-response + (max(0, lam + rho g)^2 - lam^2) /
   (2 rho)``, and every ``inner_steps`` steps ``lam <- max(0, lam + rho g)``.  Reverse-mode
   gradients go through the diffrax solves; the compiled value-and-gradient is reused across
   limits, temperatures and multipliers (traced arrays).  With ``event_constraint``, ``e = event
   incidence - event_constraint <= 0`` gets its own multiplier and the same penalty.  Each limit starts from the best
   deliverable schedule found so far that meets it (flat schedules at every capsule strength are
   evaluated first), near the boundary of the feasible set, where the smooth toxicity has a
   gradient.
3. **Deliverable schedule**: the relaxed optimum is rounded to its neighbours among deliverable
   schedules (:mod:`._deliverable`), evaluated with the *hard* endpoints on the same patients
   (optionally under dose rules).  The best schedule meeting the limit (and the event limit) is
   returned; if none does, lower flat doses are tried until one does.  Every deliverable
   schedule evaluated for any limit is a candidate for every limit, so the trade-off curve is
   monotone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optax
import pandas as pd

from .._core import (
    AbstractDoseRules,
    AbstractModel,
    ParameterSet,
    Regimen,
    SolverSettings,
    resolve_model,
)
from .._core import _validate as V
from ..endpoints import endpoints_of
from ..population import check_setting, virtual_population
from ..rules import LabVisits
from ._compare import rules_label
from ._deliverable import DEFAULT_DAYS_ON
from ._relax import SCHEDULE_FIELDS, Relax
from ._search import Search, f64, optimise_level, round_to_deliverable, theta_of

OBJECTIVES = ("response", "marker_reduction")


@dataclass(frozen=True)
class ScheduleOptimum:
    """What :func:`optimise_schedule` returns.

    - ``regimen``: the best deliverable schedule for ``constraint`` (named by
      :func:`describe_doses`);
    - ``metrics``: its hard endpoints on the optimisation cohort (``response``: best response PR
      or better by the marker within the horizon; ``toxicity``: the limiting toxicity's severe
      grade at any lab visit; ``event``: the expected incidence of the model's first hazard event
      over the horizon, NaN without one; ``mean_log_marker_ratio`` at the end,
      ``dose_intensity``, ``days_held``, ``n``);
    - ``feasible``: whether ``metrics["toxicity"] <= constraint`` (and ``metrics["event"] <=
      event_constraint`` when that is given);
    - ``schedule``: its design (``start_mg``, ``escalation_mg``, ``days_on``, ``top_mg``, ...);
    - ``relaxed``: the continuous optimum for ``constraint`` and its smooth endpoints;
    - ``tradeoff``: one row per constraint level (hard ``response``, ``toxicity`` and ``event`` of
      the best deliverable schedule, its design and label, the relaxed optimum and its smooth
      values); ``tradeoff.attrs["toxicity_label"]`` names the toxicity and
      ``tradeoff.attrs["event_label"]`` the event (``None`` without one);
    - ``candidates``: every deliverable schedule evaluated, with its hard metrics;
    - ``history``: the optimiser's trace (limit, step, temperature, smooth response, toxicity
      and event, multipliers, schedule);
    - ``event_constraint``: the limit on the event incidence (``None``: not limited)."""

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
    event_constraint: float | None = None


def _check_options(capsules, max_mg, days_on_options, cycle_days, model):
    """(capsule strengths <= max_mg, max_mg, sorted days-on options); ``capsules`` default to the
    model's ``dose_levels`` and ``max_mg`` to the largest capsule."""
    capsules = getattr(model, "dose_levels", None) if capsules is None else capsules
    if capsules is None:
        raise ValueError(
            f"capsules: give the dose strengths (mg) a clinic can deliver; {type(model).__name__} "
            "declares no dose_levels"
        )
    caps = np.array([np.nan]) if isinstance(capsules, (str, bytes)) else capsules
    try:
        caps = np.asarray(caps, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        caps = np.array([np.nan])
    if caps.size == 0 or not np.all(np.isfinite(caps)) or np.any(caps <= 0) or np.any(np.diff(caps) <= 0):
        raise ValueError(f"capsules must be increasing capsule strengths > 0 mg, got {capsules!r}")
    max_mg = V.number("max_mg", caps[-1] if max_mg is None else max_mg, minimum=float(caps[0]))
    caps = caps[caps <= max_mg + 1e-9]
    bad = ValueError(f"days_on_options must be whole days in 1..cycle_days ({cycle_days}), got {days_on_options!r}")
    if isinstance(days_on_options, (str, bytes)) or not isinstance(days_on_options, (Sequence, np.ndarray)):
        raise bad
    try:
        don = sorted({V.number("days_on_options", d, minimum=0, strict=True, integer=True) for d in days_on_options})
    except ValueError:
        raise bad from None
    if not don or don[-1] > cycle_days:
        raise bad
    return caps, max_mg, don


def _levels(constraint, constraint_levels) -> list[float]:
    levels = [V.fraction("constraint", constraint)]
    if constraint_levels is not None:
        if isinstance(constraint_levels, (str, bytes)) or not isinstance(constraint_levels, (Sequence, np.ndarray)):
            raise ValueError(f"constraint_levels must be a sequence of fractions in (0, 1), got {constraint_levels!r}")
        levels += [V.fraction(f"constraint_levels[{i}]", c) for i, c in enumerate(constraint_levels)]
    return sorted(set(levels))


def _assemble(
    search: Search,
    levels,
    constraint: float,
    relaxed_by_level: dict,
    history: list,
    record: dict,
    toxicity_label: str,
    event_label: str | None = None,
) -> ScheduleOptimum:
    rows = []
    for level in levels:
        k = search.best_feasible(level)
        feasible = k is not None
        k = search.least_toxic() if k is None else k
        m, r = search.evaluated[k], relaxed_by_level[level]
        rows.append(
            {
                "constraint": level,
                "feasible": feasible,
                "response": m["response"],
                "toxicity": m["toxicity"],
                "event": m["event"],
                "mean_log_marker_ratio": m["mean_log_marker_ratio"],
                "dose_intensity": m["dose_intensity"],
                "days_held": m["days_held"],
                **dict(zip(SCHEDULE_FIELDS, k)),
                "schedule": m["schedule"],
                **{f"relaxed_{f}": r[f] for f in SCHEDULE_FIELDS},
                "smooth_response": r["response"],
                "smooth_toxicity": r["toxicity"],
                "smooth_event": r["event"],
                "_key": k,
            }
        )
    tradeoff = pd.DataFrame(rows)
    main = tradeoff.loc[tradeoff["constraint"] == constraint].iloc[0]
    key = main["_key"]
    if not main["feasible"]:
        m = search.evaluated[key]
        limits, closest = f"constraint={constraint:g}", f"lowest {toxicity_label} incidence {m['toxicity']:.3f}"
        if search.event_limit is not None:
            limits += f" and event_constraint={search.event_limit:g}"
            closest = (
                f"closest: {event_label} incidence {m['event']:.3f}, {toxicity_label} incidence {m['toxicity']:.3f}"
            )
        warnings.warn(
            f"optimise_schedule: no deliverable schedule evaluated meets {limits} ({closest}); returning it",
            RuntimeWarning,
            stacklevel=3,
        )
    tradeoff = tradeoff.drop(columns="_key")
    tradeoff.attrs["toxicity_label"] = toxicity_label
    tradeoff.attrs["event_label"] = event_label
    cand = pd.DataFrame(list(search.evaluated.values())).sort_values(["toxicity", "response"]).reset_index(drop=True)
    m, r = search.evaluated[key], relaxed_by_level[constraint]
    return ScheduleOptimum(
        regimen=search.regimens[key],
        metrics={
            k_: m[k_]
            for k_ in ("response", "toxicity", "event", "mean_log_marker_ratio", "dose_intensity", "days_held", "n")
        },
        feasible=bool(main["feasible"]),
        constraint=constraint,
        schedule={
            **dict(zip(SCHEDULE_FIELDS, key)),
            "cycle_days": search.spec.cycle_days,
            "escalate_every_days": search.escalate_every_days,
            "n_cycles": search.n_cycles,
        },
        relaxed={k_: r[k_] for k_ in (*SCHEDULE_FIELDS, "response", "toxicity", "event", "log_marker_ratio")},
        tradeoff=tradeoff,
        candidates=cand,
        history=pd.DataFrame(history),
        settings=record,
        event_constraint=search.event_limit,
    )


@dataclass(frozen=True)
class _Checked:
    """optimise_schedule's arguments after the checks."""

    levels: list
    event_constraint: float | None
    n: int
    setting: str
    n_cycles: int
    cycle_days: int
    escalate_every_days: int
    steps: int
    inner_steps: int
    temperature: float
    temperature_start: float
    penalty: float
    caps: np.ndarray
    max_mg: float
    days_on: list
    step_mg: float
    visits: tuple
    init: dict
    typical: ParameterSet


def _check(model, a: dict) -> _Checked:
    """Every argument of :func:`optimise_schedule` checked, naming the argument."""
    whole = {
        k: V.number(k, a[k], minimum=0, strict=True, integer=True)
        for k in ("n_cycles", "cycle_days", "escalate_every_days", "steps")
    }
    temperature = V.number("temperature", a["temperature"], minimum=0, strict=True)
    t_start = a["temperature_start"]
    caps, max_mg, don = _check_options(a["capsules"], a["max_mg"], a["days_on_options"], whole["cycle_days"], model)
    V.one_of("objective", a["objective"], OBJECTIVES)
    if a["rules"] is not None:
        V.instance("rules", a["rules"], AbstractDoseRules, "None or a lenapk dose-rule object")
    init = dict(a["init"] or {})
    unknown = sorted(set(init) - set(SCHEDULE_FIELDS))
    if unknown:
        raise ValueError(f"init: unknown key(s) {unknown}; expected {list(SCHEDULE_FIELDS)}")
    typical = model.default_params() if a["params"] is None else a["params"]
    V.instance("params", typical, ParameterSet, "a lenapk.ParameterSet (typical values)")
    model.validate(typical)
    n_days = whole["n_cycles"] * whole["cycle_days"]
    visits = LabVisits.standard(cycle_days=whole["cycle_days"]) if a["visits"] is None else a["visits"]
    V.instance("visits", visits, LabVisits, "a lenapk.LabVisits schedule")
    return _Checked(
        levels=_levels(a["constraint"], a["constraint_levels"]),
        event_constraint=None
        if a["event_constraint"] is None
        else V.fraction("event_constraint", a["event_constraint"]),
        n=V.count("n", a["n"], 1),
        setting=check_setting(model, a["setting"]),
        **whole,
        inner_steps=V.number(
            "inner_steps",
            max(1, whole["steps"] // 6) if a["inner_steps"] is None else a["inner_steps"],
            minimum=0,
            strict=True,
            integer=True,
        ),
        temperature=temperature,
        temperature_start=V.number(
            "temperature_start", temperature if t_start is None else t_start, minimum=0, strict=True
        ),
        penalty=V.number("penalty", a["penalty"], minimum=0, strict=True),
        caps=caps,
        max_mg=max_mg,
        days_on=don,
        step_mg=float(caps[0])
        if a["escalation_step_mg"] is None
        else V.number("escalation_step_mg", a["escalation_step_mg"], minimum=0, strict=True),
        visits=tuple(int(v) for v in visits.with_last_day(n_days)),
        init=init,
        typical=typical,
    )


def optimise_schedule(
    constraint: float = 0.30,
    *,
    constraint_levels: Sequence[float] | None = None,
    event_constraint: float | None = None,
    n: int = 64,
    seed: int = 0,
    setting: str | None = None,
    params: ParameterSet | None = None,
    n_cycles: int = 6,
    cycle_days: int = 28,
    escalate_every_days: int = 28,
    max_mg: float | None = None,
    capsules: Sequence[float] | None = None,
    escalation_step_mg: float | None = None,
    days_on_options: Sequence[int] = DEFAULT_DAYS_ON,
    visits: LabVisits | None = None,
    objective: str = "response",
    rules: AbstractDoseRules | None = None,
    steps: int = 60,
    inner_steps: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    temperature: float = 0.1,
    temperature_start: float | None = None,
    penalty: float = 20.0,
    init: Mapping[str, float] | None = None,
    model: AbstractModel | None = None,
    settings: SolverSettings = SolverSettings(),
    progress: bool = False,
) -> ScheduleOptimum:
    """Best start dose, escalation (step and plateau) and days-on pattern under a limit on the
    model's limiting toxicity (``model.endpoints``: its limiting grade scale at its severe grade,
    at any lab visit).

    Main arguments:
        constraint: the limit on the incidence of the limiting toxicity at any lab visit of the
            horizon, in (0, 1).
        constraint_levels: further limits for the trade-off curve; ``constraint`` is among them.
        event_constraint: a limit in (0, 1) on the expected incidence over the horizon of the
            model's first hazard event (``model.endpoints.events[0]``), at every level; ``None``
            (default): not limited (the incidence is still reported when the model declares one).
        n, seed, setting, params: the fixed virtual population (common random numbers: the
            first ``n`` patients of ``seed``, as in :func:`lenapk.cohort`) and the typical
            parameters (default: the model's).
        n_cycles: the horizon; response is the best response within it.
    Schedule family:
        start dose, +step every ``escalate_every_days`` up to a plateau (<= ``max_mg``, default
        the largest capsule), dosing on days 1..days_on of each ``cycle_days``.  Deliverable:
        doses rounded down to ``capsules`` (mg; default the model's ``dose_levels``), escalation
        steps on a grid of ``escalation_step_mg`` (default the smallest capsule), days on one of
        ``days_on_options``.  Labs at ``visits`` (default :meth:`LabVisits.standard` of
        ``cycle_days``) and the last day.
    Optimiser:
        objective: ``"response"`` (PR-or-better rate) or ``"marker_reduction"`` (mean log fall of
            the response marker at the end of the horizon: informative on horizons too short
            for responses).
        steps: optimiser steps per level; inner_steps: steps between multiplier updates (default
            ``max(1, steps // 6)``); optimizer: an optax transformation (default
            ``optax.adam(0.15)``); penalty: the augmented Lagrangian's rho.
        temperature: of the smooth endpoints.  ``temperature_start`` (default: the same) makes
            it fall geometrically from that value over the first two thirds of the steps.
        init: the first level's starting schedule (``start_mg``, ``escalation_mg``, ``days_on``,
            ``top_mg``); by default each level starts from the best deliverable schedule found
            so far that meets it.
        rules: dose rules applied in the hard evaluation of the deliverable schedules (the
            relaxed problem gives every planned dose).

    Returns a :class:`ScheduleOptimum`.  See the module docstring for the method.
    """
    t0 = time.time()
    model = resolve_model(model)
    endpoints = endpoints_of(model)
    if endpoints.response is None or endpoints.limiting is None:
        raise ValueError(
            f"optimise_schedule needs the model's response criteria and limiting toxicity "
            f"(model.endpoints); {type(model).__name__} declares {endpoints}"
        )
    a = _check(model, dict(locals()))  # every argument, checked
    if a.event_constraint is not None and not endpoints.events:
        raise ValueError(
            f"event_constraint limits the incidence of the model's first hazard event, but "
            f"{type(model).__name__} declares none (model.endpoints.events)"
        )
    event = endpoints.events[0] if endpoints.events else None
    optimizer_name = "optax.adam(0.15)" if optimizer is None else "given by the caller"
    optimizer = optax.adam(0.15) if optimizer is None else optimizer
    spec = Relax(
        n_days=a.n_cycles * a.cycle_days,
        cycle_days=a.cycle_days,
        escalate_every_days=a.escalate_every_days,
        min_mg=float(a.caps[0]),
        max_mg=float(a.max_mg),
        max_step_mg=float(max(a.max_mg - a.caps[0], a.step_mg)),
        min_days_on=float(max(1, min(a.days_on) - 7)),
        days_on_width=0.5,
        visits=a.visits,
        objective=objective,
        toxicity=endpoints.limiting_scale,
        response=endpoints.response,
        event=event,
    )
    p = virtual_population(model, a.n, seed, setting=a.setting).parameters(model, a.typical)
    search = Search(
        model, p, spec, settings, rules, a.caps, a.n_cycles, a.escalate_every_days, event_limit=a.event_constraint
    )
    step_grid = np.arange(0.0, a.max_mg - a.caps[0] + a.step_mg + 1e-9, a.step_mg)
    log = (lambda msg: print(f"[{time.time() - t0:6.1f}s] {msg}")) if progress else (lambda msg: None)
    for c in a.caps:  # coarse start: flat schedules at every capsule strength
        search.evaluate(c, 0.0, a.days_on[-1], c)
    history, relaxed_by_level = [], {}
    for li, level in enumerate(a.levels):
        if li == 0 and a.init:
            start = [a.init.get(f, d) for f, d in zip(SCHEDULE_FIELDS, (a.caps[0], 0.0, a.cycle_days, a.max_mg))]
            theta = theta_of(spec, *start)
        else:
            k = search.best_feasible(level)
            theta = theta_of(spec, *(search.least_toxic() if k is None else k))
        _, relaxed = optimise_level(
            search,
            level,
            theta,
            optimizer=optimizer,
            steps=a.steps,
            inner_steps=a.inner_steps,
            temperature=a.temperature,
            temperature_start=a.temperature_start,
            rho=f64(a.penalty),
            history=history,
            log=log,
        )
        relaxed_by_level[level] = relaxed
        round_to_deliverable(search, level, relaxed, step_grid, a.days_on)
    record = {
        "n": a.n,
        "seed": seed,
        "setting": a.setting,
        "objective": objective,
        "temperature": a.temperature,
        "temperature_start": a.temperature_start,
        "steps": a.steps,
        "inner_steps": a.inner_steps,
        "penalty": a.penalty,
        "optimizer": optimizer_name,
        "rules": None if rules is None else rules_label(rules),
        "event_constraint": a.event_constraint,
        "seconds": time.time() - t0,
    }
    tox = spec.toxicity
    return _assemble(
        search,
        a.levels,
        a.levels[a.levels.index(float(constraint))],
        relaxed_by_level,
        history,
        record,
        f"grade >= {tox.severe_grade} {tox.event}",
        None if event is None else event.shown,
    )
