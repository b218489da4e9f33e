"""Dose decisions taken inside the simulation, day by day.

The solver (:mod:`lenapk.solve`) scans over days.  At the start of each day, before the dose,
it hands the rule object the planned dose and the patient's observables at that moment (ANC,
platelets, ...), and the rule returns the dose actually given.  Rules are pure functions of a
small state PyTree, so they compile with the rest, run under ``vmap`` and need no Python loop
per patient or per day.

:class:`DoseRules` is the interface; :class:`NoRules` gives every planned dose unchanged.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


class DoseRules(eqx.Module):
    """Interface: ``init(batch_shape) -> state`` and
    ``step(state, day, planned_dose, obs) -> (state, dose, record)``.

    ``obs`` maps observable names to arrays of the batch shape; ``record`` is a dict of arrays
    of the batch shape that the solver stacks over days (for example whether the day was a
    visit or a hold), returned in the trajectory's ``rule_records``.
    """

    def init(self, batch_shape):
        raise NotImplementedError

    def step(self, state, day, planned_dose, obs):
        raise NotImplementedError


class NoRules(DoseRules):
    """Every planned dose is given."""

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        return state, planned_dose, {}
