"""Minimising an :class:`Objective` with an optax ``GradientTransformation``.

The transformation's update at the projected gradient is either searched along (``line_search``:
backtracking Armijo search run in Python, so the compiled objective is reused; for L-BFGS, whose
update is a quasi-Newton direction) or applied as a step (Adam and the like), in both cases
projected onto the bounds.  Dose rules make the simulated doses a discontinuous function of the
parameters; their decisions are frozen as data (:meth:`Objective.freeze_doses`) and refreshed
every ``dose_refresh`` iterations and before convergence is declared: convergence needs a
self-consistent fixed point (at most ``dose_tol`` of patient-days changed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._objective import Objective


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
    frozen_at: np.ndarray | None = None  # the point where the doses were last frozen

    @property
    def settled(self) -> bool:
        """The rules, run at the current point, gave back the frozen doses."""
        at_x = self.frozen_at is not None and np.array_equal(self.frozen_at, self.x)
        return not self.obj.has_rules or (at_x and self.changed <= self.dose_tol)

    def refresh(self) -> None:
        self.obj, self.changed = self.obj.freeze_doses(self.x)
        self.frozen_at = np.array(self.x, copy=True)
        self.f, self.g = self.obj.value_and_grad(self.x)

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
    """Up to ``steps`` iterations on ``run`` (updated in place); returns (iterations, converged,
    message)."""
    update = jax.jit(optimizer.update)
    state = optimizer.init(jnp.asarray(run.x))
    best = (run.f, run.x, run.g)
    stall, it = 0, 0
    if not math.isfinite(run.f):
        return 0, False, "the objective is not finite at the start (solver failure?)"
    for it in range(1, steps + 1):
        if _converged(run, gtol):
            return (
                it - 1,
                True,
                f"projected gradient max |g| < {gtol:g}"
                + (", dose histories at a fixed point" if run.obj.has_rules else ""),
            )
        pg = run.obj.projected(run.x, run.g)
        d, new_state = update(jnp.asarray(pg), state, jnp.asarray(run.x))
        d = np.asarray(d)
        if line_search:
            if not (float(pg @ d) < 0 and np.all(np.isfinite(d))):  # not a descent direction: restart memory
                state = optimizer.init(jnp.asarray(run.x))
                d, new_state = update(jnp.asarray(pg), state, jnp.asarray(run.x))
                d = np.asarray(d)
            found = _line_search(run, d, max_step)
            if found is None:
                return it, _converged(run, gtol), "line search failed (no decrease along the update)"
            xn, fn, gn, step = found
        else:
            xn = np.clip(run.x + d, run.obj.lower, run.obj.upper)
            (fn, gn), step = run.obj.value_and_grad(xn), float(np.max(np.abs(d)))
            if not math.isfinite(fn):
                run.x, run.f, run.g = best[1], best[0], best[2]
                return it, False, "objective not finite (solver failure)"
        df_ = run.f - fn
        run.x, run.f, run.g, state = xn, fn, gn, new_state
        if run.obj.has_rules and it % run.dose_refresh == 0:
            run.refresh()
            best = (math.inf, run.x, run.g)  # a new objective: earlier values are not comparable
        if run.f < best[0]:
            best = (run.f, run.x, run.g)
        run.trace.append((len(run.trace), run.obj.temperature, run.f, run.pgmax(), float(step)))
        bar.update(1)
        bar.set_postfix(objective=f"{run.f:.4f}", grad=f"{run.pgmax():.2e}")
        stall = stall + 1 if line_search and 0 <= df_ < ftol * (1 + abs(run.f)) else 0
        if stall >= 3:
            return it, _converged(run, gtol), f"objective changed by < {ftol:g} (relative) in 3 iterations"
    if not line_search and best[0] < run.f:
        run.f, run.x, run.g = best
    return it, _converged(run, gtol), f"reached steps={steps}"
