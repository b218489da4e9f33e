"""The model interface that lenapk's engine runs.

A model is a stateless ``equinox.Module`` that declares

- ``state_names``: the ODE states (PK is *not* among them: it is solved in closed form by
  :mod:`lenapk.exposure`);
- ``parameter_specs``: its named parameters (:class:`lenapk.ParameterSpec`), covariates
  included, and ``omega_covariances`` for correlated between-patient variability;
- ``observable_names``: what :meth:`observables` returns;
- ``derive(p)``: per-patient constants computed once per solve, outside the ODE loop (rate
  constants, covariate factors, logarithms), returned as a dict;
- ``initial_state(c)``, ``rhs(t, y, conc, c)`` (time in days, concentration in ng/mL) and
  ``observables(y, conc, c)``, where ``c`` is what ``derive`` returned.

States lie on the *first* axis: ``y`` has shape ``(n_states, *batch)`` and every parameter
the batch shape, so that the same code serves one patient, ``vmap`` and a batch solved as one
ODE with a shared step (where each state is then one contiguous vector over patients).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .exposure import pk_constants
from .parameters import ParameterSet, ParameterSpec, default_parameters, validate_parameters


class Model(eqx.Module):
    """Abstract base of lenapk models (see the module docstring for the contract)."""

    state_names: ClassVar[tuple[str, ...]] = ()
    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = ()
    omega_covariances: ClassVar[dict[tuple[str, str], float]] = {}
    observable_names: ClassVar[tuple[str, ...]] = ()

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def default_params(self) -> ParameterSet:
        return default_parameters(self.parameter_specs)

    def validate(self, params: ParameterSet) -> None:
        validate_parameters(self.parameter_specs, params)

    def pk_constants(self, p: ParameterSet):
        """(ka [1/h], k [1/h], V [L]); the default reads ``ka``, ``cl``, ``v``, ``ffm``, ``crcl``."""
        return pk_constants(p)

    def derive(self, p: ParameterSet) -> dict:
        """Per-patient constants for the right-hand side; the default is the parameters."""
        return dict(p.values)

    def initial_state(self, c: dict) -> jnp.ndarray:
        raise NotImplementedError

    def rhs(self, t, y, conc, c: dict) -> jnp.ndarray:
        raise NotImplementedError

    def observables(self, y, conc, c: dict) -> dict[str, jnp.ndarray]:
        raise NotImplementedError
