"""Events with a cumulative hazard, given as data.

A model that integrates the hazard of an event (an adverse reaction, say) exposes the cumulative
hazard ``H(t)`` as an observable (dimensionless, 0 at day 0, non-decreasing).  A patient has at
least one event between days ``a`` and ``b`` with probability ``1 - exp(-(H(b) - H(a)))``; the
cohort incidence is the mean of these probabilities over the patients.  Both are smooth in the
model's parameters and doses (no relaxation is needed for fitting or optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


def event_probability(h_start, h_end):
    """Probability of at least one event between two values of a cumulative hazard:
    ``1 - exp(-(h_end - h_start))``.  JAX arrays (or tracers) in, a JAX array out
    (differentiable, for fits and schedule searches); otherwise NumPy, computed on the host, so
    that a cohort's endpoint tables never queue behind a solve on an accelerator."""
    xp = jnp if isinstance(h_start, jax.Array) or isinstance(h_end, jax.Array) else np
    return -xp.expm1(-(xp.asarray(h_end) - xp.asarray(h_start)))


@dataclass(frozen=True)
class HazardEventSpec:
    """An event whose cumulative hazard is the model's ``observable``.

    Cohort columns (:class:`EndpointSet`; ``label`` defaults to the observable without a trailing
    ``_hazard``): ``{label}_probability``, the patient's probability of at least one event over the
    regimen (day 0 to the last day), and ``{label}_probability_c{c}``, by the end of each cycle of
    ``cycles`` (NaN when the regimen is shorter).  :func:`lenapk.trial_summary` reports their means,
    the cohort incidences; ``title`` is how tables call the event."""

    observable: str
    title: str = ""
    label: str | None = None
    cycles: tuple[int, ...] = (1,)

    def __post_init__(self):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1 for c in self.cycles):
            raise ValueError(f"HazardEventSpec {self.name}: cycles must be whole numbers >= 1, got {self.cycles!r}")

    @property
    def name(self) -> str:
        return self.label or self.observable.removesuffix("_hazard")

    @property
    def shown(self) -> str:
        """How tables call the event (``title``, or the column prefix)."""
        return self.title or self.name

    def column(self, cycle: int | None = None) -> str:
        """``{label}_probability`` (whole regimen) or ``{label}_probability_c{cycle}``."""
        return f"{self.name}_probability" if cycle is None else f"{self.name}_probability_c{cycle}"

    def probabilities(self, daily: np.ndarray, cycle_days: int) -> dict:
        """The cohort columns from the daily cumulative hazard ``(n, n_days + 1)`` (index = day)."""
        h = np.asarray(daily, dtype=np.float64)
        n_days = h.shape[-1] - 1
        out = {self.column(): np.asarray(event_probability(h[:, 0], h[:, -1]))}
        for c in self.cycles:
            day = c * cycle_days
            out[self.column(c)] = (
                np.asarray(event_probability(h[:, 0], h[:, day])) if day <= n_days else np.full(len(h), np.nan)
            )
        return out
