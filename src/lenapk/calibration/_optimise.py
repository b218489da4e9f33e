"""Minimising an :class:`Objective` with an optax ``GradientTransformation``.

The transformation's update at the projected gradient is either searched along (``line_search``:
backtracking Armijo search run in Python, so the compiled objective is reused; for L-BFGS, whose
update is a quasi-Newton direction) or applied as a step (Adam and the like), in both cases
projected onto the bounds; a parameter held at a bound (on it, the gradient pushing outwards) is
left out of the update.  Dose rules make the simulated doses a discontinuous function of the
parameters; their decisions are frozen as data (:meth:`Objective.freeze_doses`) and refreshed
every ``dose_refresh`` iterations and whenever the search at the frozen doses is done:
convergence needs a self-consistent fixed point (at most ``dose_tol`` of patient-days changed).
A refresh that changes at most ``dose_tol`` of the patient-days keeps the frozen doses (they are
self-consistent within the tolerance), so the objective and the optimiser's memory go on; the
change is always counted against the doses frozen, so drift adds up until it passes the
tolerance.  Without this hysteresis a few patients at a rule threshold flip back and forth at
every refresh (a 2-cycle of the fixed-point iteration) and each flip restarts the memory.

A larger cycle is caught too: when the rules give back, within ``dose_tol``, doses that were
frozen before and replaced once the search at them had finished (the iteration returns to an
earlier history whose own optimum led away from it; a history replaced at a periodic refresh,
mid-search, is not on record, as its optimum might have been a fixed point), the frozen doses stay
and the run settles *in a dose cycle*: no history is self-consistent there, each point's rules
choose the other, and the fit ends at the optimum for the history it holds (stated in the
result's message with the share of patient-days the rules would change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._objective import Objective

#: Largest fraction of patient-days the dose rules may change at a refresh for the frozen doses to
#: stand (``lenapk.fit``'s ``dose_tol``): the tolerance of the dose fixed point.
DEFAULT_DOSE_TOL = 0.002
#: Earlier frozen dose histories a refresh is compared with to detect a cycle.
CYCLE_MEMORY = 4


def default_optimizer() -> optax.GradientTransformation:
    """optax L-BFGS directions (memory 10) with lenapk's line search (``line_search=True``)."""
    return optax.lbfgs(learning_rate=1.0, memory_size=10, linesearch=None)


@dataclass
class _Run:
    """The evolving state of one minimisation: the objective (dose histories refreshed), the
    point, value, gradient and the record."""

    obj: Objective
    x: np.ndarray
    f: float
    g: np.ndarray
    trace: list
    dose_refresh: int
    dose_tol: float
    changed: float = math.inf  # fraction of patient-days the last refresh changed
    cycled: bool = False  # the last refresh gave back (within dose_tol) doses replaced after a finished search
    frozen_at: np.ndarray | None = None  # the point where the rules were last run
    replaced: list = field(default_factory=list)  # the last CYCLE_MEMORY histories replaced after a finished search
    refreshes: list = field(default_factory=list)  # (after iteration, changed, objective before, after, kept, cycle)

    @property
    def settled(self) -> bool:
        """The rules, run at the current point, gave back the frozen doses (or, in a dose cycle,
        doses frozen and replaced after a finished search)."""
        at_x = self.frozen_at is not None and np.array_equal(self.frozen_at, self.x)
        return not self.obj.has_rules or (at_x and (self.changed <= self.dose_tol or self.cycled))

    def refresh(self, finished: bool = True) -> bool:
        """Run the rules at ``x``; when they change more than ``dose_tol`` of the patient-days
        (or nothing is frozen yet), freeze their doses and re-evaluate there, else keep the
        frozen doses (the objective is unchanged).  They are kept as well when the rules give
        back, within ``dose_tol``, an earlier history replaced after a finished search (a
        cycle).  ``finished``: the search at the frozen doses is done (False at a periodic
        refresh: the replaced doses are then not recorded for cycles).  Returns whether the
        doses were replaced."""
        before = self.f
        obj, self.changed = self.obj.freeze_doses(self.x)
        kept = bool(self.obj.frozen) and self.changed <= self.dose_tol
        self.cycled = not kept and any(obj.doses_changed_from(old) <= self.dose_tol for old in self.replaced)
        if not (kept or self.cycled):
            if self.obj.frozen and finished:
                self.replaced = [*self.replaced, self.obj.frozen][-CYCLE_MEMORY:]
            self.obj = obj
            self.f, self.g = self.obj.value_and_grad(self.x)
        self.frozen_at = np.array(self.x, copy=True)
        self.refreshes.append((max(len(self.trace) - 1, 0), self.changed, before, self.f, kept, self.cycled))
        return not (kept or self.cycled)

    def pgmax(self) -> float:
        return float(np.max(np.abs(self.obj.projected(self.x, self.g)))) if self.x.size else 0.0


def _line_search(run: _Run, d: np.ndarray, max_step: float):
    """Backtracking Armijo search from ``run.x`` along ``d``: (x, f, g, alpha) or None."""
    alpha = min(1.0, max_step / max(np.max(np.abs(d)), 1e-300))
    for _ in range(12):
        xn = np.clip(run.x + alpha * d, run.obj.lower, run.obj.upper)
        slope = float(run.g @ (xn - run.x))
        fn, gn = run.obj.value_and_grad(xn)
        if math.isfinite(fn) and slope < 0 and fn <= run.f + 1e-4 * slope:
            return xn, fn, gn, alpha
        alpha *= 0.25 if not math.isfinite(fn) else 0.5
    return None


def _direction(update, pg, state, x, held):
    """The transformation's update at the projected gradient ``pg``, with the parameters held at
    a bound left where they are.  Without this a quasi-Newton direction, which mixes the
    components through its memory, moves a held parameter off its bound and back at alternate
    iterations, and its memory fills with those jumps (projected quasi-Newton with a binding set,
    as in Kim, Sra & Dhillon, Optim Methods Softw 2010)."""
    d, new_state = update(jnp.asarray(pg), state, jnp.asarray(x))
    return np.where(held, 0.0, np.asarray(d)), new_state


def _converged(run: _Run, gtol: float) -> bool:
    """Projected gradient below ``gtol`` at dose histories that the rules give back."""
    if run.pgmax() >= gtol:
        return False
    if not run.settled:
        run.refresh()
    return run.settled and run.pgmax() < gtol


def minimise(
    run: _Run,
    optimizer: optax.GradientTransformation,
    *,
    line_search: bool,
    steps: int,
    gtol: float,
    ftol: float,
    max_step: float,
    bar,
) -> tuple[int, bool, str]:
    """Up to ``steps`` iterations on ``run`` (updated in place); returns (steps taken, converged,
    message).

    With dose rules, the doses are refreshed every ``run.dose_refresh`` iterations and whenever
    the search at the frozen doses is done (projected gradient below ``gtol``, objective stalled
    or line search failed) but the rules do not give them back yet.  A refresh that replaces the
    doses makes a new objective, so the optimiser's memory starts afresh: a quasi-Newton pair
    that straddled it would record the jump of the gradient as curvature.  A line search that
    fails along a direction from the memory is tried once more from a fresh memory (the projected
    steepest-descent direction), the usual restart of L-BFGS (Nocedal & Wright 2006, sec. 7.2);
    only a failure from a fresh memory ends the search."""
    update = jax.jit(optimizer.update)
    state, seen = optimizer.init(jnp.asarray(run.x)), len(run.refreshes)
    fresh = True  # the optimiser's memory holds no pair yet
    best = (run.f, run.x, run.g)
    stall, n0 = 0, len(run.trace)
    taken = lambda: len(run.trace) - n0  # noqa: E731  (iterations that moved the point)
    if not math.isfinite(run.f):
        return 0, False, "the objective is not finite at the start (solver failure?)"
    for _ in range(steps):
        if _converged(run, gtol):
            return (
                taken(),
                True,
                f"projected gradient max |g| < {gtol:g}"
                + (", dose histories at a fixed point" if run.obj.has_rules and not run.cycled else ""),
            )
        if any(not (kept or cycle) for *_, kept, cycle in run.refreshes[seen:]):  # a new objective: fresh memory
            state, stall, best, fresh = optimizer.init(jnp.asarray(run.x)), 0, (run.f, run.x, run.g), True
        seen = len(run.refreshes)
        found, state = _iterate(run, update, optimizer, state, line_search, max_step)
        if found is None:
            if not line_search:
                run.x, run.f, run.g = best[1], best[0], best[2]
                return taken(), False, "objective not finite (solver failure)"
            if not fresh:  # the quasi-Newton memory may be stale: search again from the gradient alone
                state, fresh = optimizer.init(jnp.asarray(run.x)), True
                continue
            if _refreshed_to_new_doses(run):
                continue
            return taken(), _converged(run, gtol), "line search failed (no decrease along the update)"
        df_, step = found
        fresh = False
        if run.f < best[0]:
            best = (run.f, run.x, run.g)
        run.trace.append((len(run.trace), run.obj.temperature, run.f, run.pgmax(), float(step)))
        bar.update(1)
        bar.set_postfix(objective=f"{run.f:.4f}", grad=f"{run.pgmax():.2e}")
        if run.obj.has_rules and taken() % run.dose_refresh == 0:
            if run.refresh(finished=False):  # new doses: earlier values of the objective are not comparable
                best = (run.f, run.x, run.g)
            continue
        stall = stall + 1 if line_search and 0 <= df_ < ftol * (1 + abs(run.f)) else 0
        if stall >= 3:
            if _refreshed_to_new_doses(run):
                continue
            return taken(), _converged(run, gtol), f"objective changed by < {ftol:g} (relative) in 3 iterations"
    if not line_search and best[0] < run.f:
        run.f, run.x, run.g = best
    return taken(), _converged(run, gtol), f"reached steps={steps}"


def _refreshed_to_new_doses(run: _Run) -> bool:
    """When the search at the frozen doses is done: run the rules again if they may not give the
    frozen doses back, and say whether they changed them (then the search goes on)."""
    if run.settled:
        return False
    run.refresh()
    return not run.settled


def _iterate(run: _Run, update, optimizer, state, line_search: bool, max_step: float):
    """One iteration from ``run.x``: ((decrease of the objective, step size) or None when the line
    search failed or, without one, the objective is not finite; the optimiser's new state).
    ``run`` moves to the new point on success."""
    held = run.obj.binding(run.x, run.g)
    pg = np.where(held, 0.0, run.g)
    d, new_state = _direction(update, pg, state, run.x, held)
    if line_search:
        if not (float(pg @ d) < 0 and np.all(np.isfinite(d))):  # not a descent direction: restart memory
            d, new_state = _direction(update, pg, optimizer.init(jnp.asarray(run.x)), run.x, held)
        found = _line_search(run, d, max_step)
        if found is None:
            return None, state
        xn, fn, gn, step = found
    else:
        xn = np.clip(run.x + d, run.obj.lower, run.obj.upper)
        (fn, gn), step = run.obj.value_and_grad(xn), float(np.max(np.abs(d)))
        if not math.isfinite(fn):
            return None, state
    df_ = run.f - fn
    run.x, run.f, run.g = xn, fn, gn
    return (df_, step), new_state
