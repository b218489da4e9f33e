"""The search behind :func:`optimise_schedule`: deliverable schedules evaluated with the hard
endpoints (cached), and the augmented-Lagrangian iterations on the relaxed schedule for one limit
(see :mod:`lenapk.schedules._optimise` for the method)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._core import Regimen, solve_checked
from .._core._plan import broadcast_plan
from .._core._simulate import plan_for
from ..endpoints import event_probability
from ._deliverable import ceil_to, deliverable_regimen, floor_to, hard_metrics
from ._relax import SCHEDULE_FIELDS, Relax, _pack, _unpack, al_value_and_grad, relaxed_doses, smooth_metrics_jit


def f64(x):
    return jnp.asarray(x, dtype=jnp.float64)  # strong float64: no retrace


class Search:
    """The deliverable schedules evaluated so far (hard endpoints on the fixed population, cached
    by design and by daily doses) and the best of them under a limit (and, with ``event_limit``,
    a limit on the incidence of the hazard event ``spec.event``)."""

    def __init__(self, model, p, spec: Relax, settings, rules, caps, n_cycles, escalate_every_days, event_limit=None):
        self.model, self.p, self.spec, self.settings, self.rules = model, p, spec, settings, rules
        self.caps, self.n_cycles, self.escalate_every_days = caps, n_cycles, escalate_every_days
        self.event_limit = event_limit
        self.evaluated: dict[tuple, dict] = {}
        self.regimens: dict[tuple, Regimen] = {}
        self._by_doses: dict[bytes, tuple] = {}

    def evaluate(self, start, step, days_on, top) -> dict:
        top = max(top, start)
        step = 0.0 if top <= start else step
        top = start if step == 0 else top
        key = (float(start), float(step), int(days_on), float(top))
        if key in self.evaluated:
            return self.evaluated[key]
        reg = deliverable_regimen(
            start,
            step,
            days_on,
            n_cycles=self.n_cycles,
            cycle_days=self.spec.cycle_days,
            escalate_every_days=self.escalate_every_days,
            max_mg=top,
            capsules=self.caps,
        )
        digest = np.asarray(reg.doses).tobytes()
        if digest in self._by_doses:  # the same daily doses as a schedule already evaluated
            return self.evaluated[self._by_doses[digest]]
        m = self._hard(reg)
        m.update(
            start_mg=key[0],
            escalation_mg=key[1],
            days_on=key[2],
            top_mg=key[3],
            schedule=reg.name,
            total_mg=float(np.asarray(reg.doses).sum()),
        )
        self._by_doses[digest] = key
        self.evaluated[key], self.regimens[key] = m, reg
        return m

    def _hard(self, reg: Regimen) -> dict:
        doses = f64(reg.doses)
        n = next(iter(self.p.values.values())).shape[0]
        full = jnp.broadcast_to(doses, (n, self.spec.n_days))
        if self.rules is None:  # forward solve only; the hard metrics read the observables of aux
            _, aux = smooth_metrics_jit(doses, f64(0.1), self.model, self.p, self.spec, self.settings)
            if not bool(aux["ok"]):  # raises SolverError naming the patient
                solve_checked(self.model, self.p, broadcast_plan(plan_for(self.model, reg), (n,)), None, self.settings)
            event = float(aux["event"]) if self.spec.event is not None else np.nan
            return hard_metrics(
                aux["at_visits"], aux["end_ratio"], self.spec.visits, full, doses, self.spec, event=event
            )
        traj = solve_checked(
            self.model, self.p, broadcast_plan(plan_for(self.model, reg), (n,)), self.rules, self.settings
        )
        v = np.asarray(self.spec.visits)
        at = {k: np.asarray(a)[:, v] for k, a in traj.day_obs.items()}
        marker = np.asarray(traj.day_obs[self.spec.response.marker])
        event = np.nan
        if self.spec.event is not None:
            hazard = np.asarray(traj.day_obs[self.spec.event.observable])
            event = float(np.mean(event_probability(hazard[:, 0], hazard[:, -1])))
        return hard_metrics(
            at,
            marker[:, -1] / marker[:, 0],
            self.spec.visits,
            traj.doses,
            doses,
            self.spec,
            traj.rule_records.get("held"),
            event,
        )

    def score(self, m):  # larger is better: objective, then deeper marker fall, less toxicity, less drug
        if self.spec.objective == "response":
            return (m["response"], -m["mean_log_marker_ratio"], -m["toxicity"], -m["total_mg"])
        return (-m["mean_log_marker_ratio"], -m["toxicity"], -m["total_mg"])

    def event_excess(self, m) -> float:
        """How far the event incidence of ``m`` is above ``event_limit`` (0 when within it or unlimited)."""
        return 0.0 if self.event_limit is None else max(0.0, m["event"] - self.event_limit)

    def meets(self, m, limit) -> bool:
        return m["toxicity"] <= limit + 1e-12 and self.event_excess(m) <= 1e-12

    def best_feasible(self, limit):
        ok = [k for k, m in self.evaluated.items() if self.meets(m, limit)]
        return max(ok, key=lambda k: self.score(self.evaluated[k])) if ok else None

    def least_toxic(self):
        """The schedule closest to the event limit (if any), then least toxic."""
        return min(
            self.evaluated,
            key=lambda k: (
                self.event_excess(self.evaluated[k]),
                self.evaluated[k]["toxicity"],
                tuple(-x for x in self.score(self.evaluated[k])),
            ),
        )


def theta_of(spec: Relax, start, step, days_on, top):
    """Unconstrained parameters of a schedule, kept inside 2-98% of each range (where the
    sigmoids still have a gradient)."""

    def inside(x, lo, hi):
        return float(np.clip(x, lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo)))

    start = inside(start, spec.min_mg, spec.max_mg)
    return _pack(
        start,
        inside(step, 0.0, spec.max_step_mg),
        inside(days_on, spec.min_days_on, spec.cycle_days + 1),
        inside(top, start, spec.max_mg),
        spec,
    )


def optimise_level(
    search: Search,
    level: float,
    theta,
    *,
    optimizer,
    steps: int,
    inner_steps: int,
    temperature: float,
    temperature_start: float,
    rho,
    history: list,
    log,
):
    """The augmented-Lagrangian iterations for one limit: the best smooth-feasible iterate at the
    final temperature (or the last one), as ``(theta, row)``."""
    spec = search.spec
    anneal = max(1, (2 * steps) // 3) if temperature_start != temperature else 0
    lam, opt_state = f64(0.0), optimizer.init(theta)
    event_lam, event_limit = f64(0.0), f64(1.0 if search.event_limit is None else search.event_limit)
    best = last = None
    for it in range(steps):
        temp = temperature_start * (temperature / temperature_start) ** min(1.0, it / anneal) if anneal else temperature
        doses, pullback = jax.vjp(lambda th: relaxed_doses(th, spec), theta)
        (loss, aux), g_doses = al_value_and_grad(
            doses,
            lam,
            rho,
            f64(level),
            f64(temp),
            search.model,
            search.p,
            spec,
            search.settings,
            event_lam,
            event_limit,
        )
        (grad,) = pullback(g_doses)
        if not bool(aux["ok"]) or not np.all(np.isfinite(np.asarray(grad))):
            warnings.warn(
                f"optimise_schedule: solve failed or non-finite gradient at step {it} (limit {level}); "
                "stopping this level early",
                RuntimeWarning,
                stacklevel=3,
            )
            break
        design = dict(zip(SCHEDULE_FIELDS, (float(x) for x in _unpack(theta, spec))))
        row = {
            "constraint": level,
            "step": it,
            "temperature": temp,
            "loss": float(loss),
            "response": float(aux["response"]),
            "toxicity": float(aux["toxicity"]),
            "event": float(aux["event"]) if spec.event is not None else np.nan,
            "log_marker_ratio": float(aux["log_marker_ratio"]),
            "lambda": float(lam),
            "lambda_event": float(event_lam),
            **design,
        }
        history.append(row)
        last = (theta, row)
        if (
            (it >= anneal or it == steps - 1)
            and row["toxicity"] <= level
            and float(aux["event"]) <= float(event_limit)
            and (best is None or float(aux["reward"]) > best[1]["reward"])
        ):
            best = (theta, {**row, "reward": float(aux["reward"])})
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
        if (it + 1) % inner_steps == 0:
            lam = f64(jnp.maximum(0.0, lam + rho * (aux["toxicity"] - level)))
            event_lam = f64(jnp.maximum(0.0, event_lam + rho * (aux["event"] - event_limit)))
        if it % max(1, steps // 10) == 0 or it == steps - 1:
            log(
                f"limit {level:.2f} step {it:3d} (T {temp:.3f}): response {row['response']:.3f} toxicity "
                f"{row['toxicity']:.3f} event {row['event']:.3f} lambda {row['lambda']:.2f} | "
                f"start {design['start_mg']:.2f} mg, "
                f"+{design['escalation_mg']:.2f} mg to {design['top_mg']:.2f} mg, days on {design['days_on']:.1f}"
            )
    chosen = best if best is not None else last
    if chosen is None:
        raise RuntimeError("optimise_schedule: the first solve failed; check params / settings")
    return chosen


def round_to_deliverable(search: Search, level: float, relaxed: dict, step_grid, days_on_options) -> None:
    """Evaluate the deliverable neighbours of a relaxed optimum (each design value rounded down
    and up); if none meets the limit, step down (flat, lower start, fewer days on)."""
    caps = search.caps
    s_c, e_c, d_c, t_c = (relaxed[f] for f in SCHEDULE_FIELDS)
    for s_ in {floor_to(s_c, caps), ceil_to(s_c, caps)}:
        for t_ in {floor_to(t_c, caps), ceil_to(t_c, caps)}:
            for e_ in {floor_to(e_c, step_grid), ceil_to(e_c, step_grid)}:
                for d_ in {floor_to(d_c, days_on_options), ceil_to(d_c, days_on_options)}:
                    search.evaluate(s_, e_, int(d_), t_)
    for s_ in sorted((c for c in caps if c <= floor_to(s_c, caps)), reverse=True):
        for d_ in sorted(days_on_options, reverse=True):
            if search.best_feasible(level) is not None:
                return
            search.evaluate(s_, 0.0, d_, s_)
