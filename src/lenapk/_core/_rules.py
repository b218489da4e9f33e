"""The dose-rule interface: decisions taken inside the simulation, at the start of each day.

At the first segment of each day the solver hands the rule the day's planned total dose and
the patient's observables at that moment (pre-dose), and the rule returns the total to give
(every dose of that day is scaled by given / planned).  Rules are pure functions of a small
state PyTree, so they compile with the rest, run under ``vmap`` and need no Python loop per
patient or per day.  Concrete rule sets live in :mod:`lenapk.rules`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp


class AbstractDoseRules(eqx.Module):
    """``init(batch_shape) -> state`` and ``step(state, day, planned_dose, obs) -> (state, dose,
    record)``; ``observables_read`` names the observables ``step`` reads from ``obs``.

    ``record`` is a dict of arrays of the batch shape that the solver stacks over days (for
    example whether the day was a visit or a hold), returned in ``Trajectory.rule_records``."""

    @property
    @abc.abstractmethod
    def observables_read(self) -> tuple[str, ...]:
        """The model observables ``step`` reads."""

    @abc.abstractmethod
    def init(self, batch_shape):
        """The rule's state before the first day."""

    @abc.abstractmethod
    def step(self, state, day, planned_dose, obs):
        """Today's decision: ``(new_state, dose_given, record)``."""


class NoRules(AbstractDoseRules):
    """Every planned dose is given."""

    @property
    def observables_read(self) -> tuple[str, ...]:
        return ()

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        return state, planned_dose, {}
