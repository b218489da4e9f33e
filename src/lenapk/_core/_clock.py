"""The clock of a segment solve: time since the segment start on a log scale early, linear later.

Just after an oral dose the concentration rises from a low trough roughly in proportion to the
time since the dose, so a drug effect ``C^h / (EC50^h + C^h)`` is a smooth function of ``log t``
rather than of ``t``: its k-th derivative grows like ``t^-k``.  A step-size controller working in
``t`` then sees a step error that depends only on ``dt / t`` and can grow the step only by a
fixed factor per step (about 2x for Tsit5 near 10% of the tolerance), spending 6-8 steps of a
day in the first hour.  Integrating in the clock variable ``u``

    t(u) = T log(1 + (tau / T) (e^u - 1)),       dt/du = tau e^u / (1 + (tau / T) (e^u - 1))
    u(t) = log(1 + (T / tau) (e^(t/T) - 1))

makes that phase uniform: ``t ~ tau u`` for ``t << tau``, ``t ~ tau e^u`` (log scale) for
``tau << t << T``, and ``t ~ T u + const`` (linear, the elimination phase) for ``t >> T``.  The
ODE ``dy/dt = f(t, y)`` becomes ``dy/du = f(t(u), y) dt/du``: the same solution at the same
times, with the same tolerances on the same states, only the steps fall elsewhere.  Both maps
are evaluated in a form that cannot overflow (``x + log(a (1 - e^-x) + e^-x)`` for
``log(1 + a (e^x - 1))``).  The solve uses the clock for a batch of patients sharing a step, on
segments that start with a dose (:class:`lenapk._core.SolverSettings`); ``benchmarks/HISTORY.md``
(eighth session) has the step counts.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


def _log1p_scaled_expm1(x, a):
    """``log(1 + a (e^x - 1))`` for x >= 0, a > 0, without overflow."""
    return x + jnp.log(a * -jnp.expm1(-x) + jnp.exp(-x))


class SegmentClock(eqx.Module):
    """Log-linear clock of each segment solve.  ``tau_h``: where the log scale starts (hours
    after the segment start); ``linear_h``: where it turns linear (hours); ``tau_h < linear_h``.
    ``max_step_h``: the longest step in the linear phase (hours; :meth:`max_step` in ``u``).  The
    defaults (3 min, 1.5 h) suit an oral dose absorbed within about an hour.  Without the step
    limit a dose-free stretch of the day is crossed in one step in ``u`` that the embedded error
    estimate underrates (on a dose day with a negligible dose, the node burden's error over 200
    days was 9e-5 against 1e-7 with steps of at most 3 h; benchmarks/HISTORY.md)."""

    tau_h: float = eqx.field(static=True, default=0.05)
    linear_h: float = eqx.field(static=True, default=1.5)
    max_step_h: float = eqx.field(static=True, default=3.0)

    def __check_init__(self):
        for name in ("tau_h", "linear_h", "max_step_h"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"clock.{name} must be a positive number of hours, got {v!r}")
        if not self.tau_h < self.linear_h:
            raise ValueError(
                f"clock.tau_h ({self.tau_h!r} h) must be below clock.linear_h ({self.linear_h!r} h): "
                "the log scale starts before it turns linear"
            )

    def scales(self, time_unit_h: float) -> tuple[float, float]:
        """``(tau, T)`` in the model's time unit."""
        return self.tau_h / time_unit_h, self.linear_h / time_unit_h

    def max_step(self) -> float:
        """The longest step in ``u``: ``max_step_h`` of the linear phase, where ``dt/du = T``."""
        return self.max_step_h / self.linear_h

    def clock(self, t, time_unit_h: float):
        """``u(t)`` for local time ``t >= 0`` (model time unit)."""
        tau, big_t = self.scales(time_unit_h)
        return _log1p_scaled_expm1(jnp.asarray(t) / big_t, big_t / tau)

    def time_and_speed(self, u, time_unit_h: float):
        """``(t(u), dt/du)`` (model time unit; per clock unit) for clock ``u >= 0``, with one
        exponential and one logarithm: with ``d = e^-u`` and
        ``D = d + (tau / T) (1 - d)``, ``t = T (u + log D)`` and ``dt/du = tau / D``."""
        tau, big_t = self.scales(time_unit_h)
        u = jnp.asarray(u)
        decay = jnp.exp(-u)
        den = decay + (tau / big_t) * (1.0 - decay)
        return big_t * (u + jnp.log(den)), tau / den
