"""The relaxed schedule: a smooth map from four unconstrained numbers to planned daily doses,
and the smooth endpoints and augmented Lagrangian that :func:`optimise_schedule` minimises.

``theta`` maps to a continuous schedule::

    start   = min_mg + (max_mg - min_mg) * sigmoid(theta_0)            (mg)
    step    = max_step_mg * sigmoid(theta_1)                           (mg per escalation)
    days_on = min_days_on + (cycle_days + 1 - min_days_on) * sigmoid(theta_2)
    top     = start + (max_mg - start) * sigmoid(theta_3)              (plateau, mg)
    dose(d) = min(start + step * floor(d / escalate_every_days), top)
              * sigmoid((days_on - (d mod cycle_days) - 1/2) / days_on_width)

The fixed virtual population (common random numbers) is solved as one batched ODE and the
endpoints are smooth (:mod:`lenapk.endpoints`): toxicity = mean over patients of "the model's
limiting toxicity reached its severe grade at a lab visit", response = mean of "the response
marker fell below the PR ratio of baseline at a visit" (PR or better by the marker, i.e. best
response), each with a smooth maximum over the visits 4x sharper than the threshold sigmoid,
which keeps the relaxed incidence close to the hard one.  With a hazard event
(:class:`lenapk.endpoints.HazardEventSpec`), event = mean over patients of
``1 - exp(-(H(end) - H(0)))``: smooth already, the same in the relaxed and the hard evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import solve_days
from ..endpoints import VISIT_SHARPNESS, GradeScale, HazardEventSpec, ResponseCriteria, event_probability


@dataclass(frozen=True)
class Relax:
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
    toxicity: GradeScale  # the limiting toxicity: its severe grade at any visit
    response: ResponseCriteria
    event: HazardEventSpec | None = None  # an event with a cumulative hazard: its incidence over the horizon


SCHEDULE_FIELDS = ("start_mg", "escalation_mg", "days_on", "top_mg")


def _unpack(theta, spec: Relax):
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


def _pack(start, step, days_on, top, spec: Relax) -> jnp.ndarray:
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


def relaxed_doses(theta, spec: Relax) -> jnp.ndarray:
    """Planned daily doses (mg) of the relaxed schedule ``theta`` (differentiable)::

    min(start + step * floor(d / escalate_every_days), top)
        * sigmoid((days_on - (d mod cycle_days) - 1/2) / days_on_width)
    """
    start, step, days_on, top = _unpack(theta, spec)
    day = jnp.arange(spec.n_days)
    level = jnp.minimum(start + step * (day // spec.escalate_every_days), top)
    on = jax.nn.sigmoid((days_on - (day % spec.cycle_days) - 0.5) / spec.days_on_width)
    return level * on


def smooth_metrics(doses, temperature, model, p, spec: Relax, settings):
    """Smooth endpoints of the planned daily ``doses`` (n_days,) on the population ``p``; the
    aux dict also carries the observables at the visits, for the hard endpoints."""
    n = next(iter(p.values.values())).shape[0]
    traj = solve_days(model, p, jnp.broadcast_to(doses, (n, spec.n_days)), None, None, settings)
    v = np.asarray(spec.visits)
    on = v > 0
    names = tuple(dict.fromkeys((spec.toxicity.observable, *spec.response.observables_read)))
    at_visits = {k: traj.day_obs[k][:, v] for k in names}
    marker = traj.day_obs[spec.response.marker]
    event = jnp.zeros((), dtype=marker.dtype)
    if spec.event is not None:
        hazard = traj.day_obs[spec.event.observable]
        event = jnp.mean(event_probability(hazard[:, 0], hazard[:, -1]))
    tox = jnp.mean(
        spec.toxicity.any_at_least(
            at_visits[spec.toxicity.observable][:, on],
            spec.toxicity.severe_grade,
            temperature,
            sharpness=VISIT_SHARPNESS,
        )
    )
    resp = jnp.mean(spec.response.ever_pr(at_visits, np.flatnonzero(on), temperature, sharpness=VISIT_SHARPNESS))
    end_ratio = marker[:, -1] / marker[:, 0]
    log_ratio_end = jnp.mean(jnp.log(end_ratio))
    ok = jnp.all(traj.ok) & jnp.all(jnp.isfinite(marker)) & jnp.isfinite(event)
    for a in at_visits.values():
        ok = ok & jnp.all(jnp.isfinite(a))
    reward = resp if spec.objective == "response" else -log_ratio_end
    return reward, {
        "response": resp,
        "toxicity": tox,
        "event": event,
        "log_marker_ratio": log_ratio_end,
        "ok": ok,
        "at_visits": at_visits,
        "end_ratio": end_ratio,
    }


def _al_loss(doses, lam, rho, limit, temperature, model, p, spec, settings, event_lam, event_limit):
    """Augmented Lagrangian of ``max reward s.t. toxicity <= limit and event <= event_limit``
    (inequality form, one multiplier per constraint; ``event_limit`` 1 leaves the event free)."""
    reward, aux = smooth_metrics(doses, temperature, model, p, spec, settings)
    penalty = 0.0
    for mult, g in ((lam, aux["toxicity"] - limit), (event_lam, aux["event"] - event_limit)):
        penalty = penalty + (jnp.maximum(0.0, mult + rho * g) ** 2 - mult**2) / (2.0 * rho)
    return -reward + penalty, {**aux, "reward": reward}


# Value and gradient with respect to the planned daily doses, compiled once per (model,
# population size, spec, settings): doses, the multipliers, rho, the limits and temperature are
# traced, so neither a limit, a multiplier, the temperature nor the schedule recompiles.  The chain rule to
# theta is a cheap jax.vjp of relaxed_doses outside; the same executable evaluates deliverable
# schedules (hard endpoints from the aux labs) when no dose rules are asked for.
al_value_and_grad = eqx.filter_jit(jax.value_and_grad(_al_loss, has_aux=True))
smooth_metrics_jit = eqx.filter_jit(smooth_metrics)
