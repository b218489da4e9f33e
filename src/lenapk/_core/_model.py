"""The model interface that lenapk's engine runs (equinox's abstract/final pattern).

A model is a stateless ``equinox.Module`` that declares what the generic layers need:

- ``state_names``: its ODE states (closed-form PK is *not* among them);
- ``parameter_specs``: named parameters with units, variability and sources
  (:class:`ParameterSpec`), patient covariates included (``kind="covariate"``), and
  ``omega_covariances`` for correlated between-patient variability;
- ``observable_specs``: what :meth:`observables` returns, with units;
- ``pk``: its exposure (:class:`OneCompartment`, :class:`TwoCompartment` or
  :class:`OdeDosing`) and ``pk_constants(p)``, the patient's micro-constants;
- ``populations``: per setting, a distribution for each covariate (``LogNormal``,
  ``Bernoulli``); the first setting is the default;
- ``time_unit``: ``"day"`` or ``"h"``, the unit of the ODE's time (doses are in hours);
- optionally ``endpoints``: the toxicity grades, response criteria and values at cycles that
  cohorts report (a :class:`lenapk.endpoints.EndpointSet`, observable names as data),
  ``calibration`` (a :class:`lenapk.calibration.CalibrationSpec`) and ``dose_levels`` (the dose
  strengths, mg, that schedule searches may use);
- ``derive(p)``: per-patient constants computed once per solve, outside the ODE loop;
- ``initial_state(c)``, ``rhs(t, y, conc, c)`` and ``observables(y, conc, c)``, where ``c`` is
  what ``derive`` returned and ``conc`` the closed-form concentration (``None`` with
  :class:`OdeDosing`).

States lie on the *first* axis: ``y`` has shape ``(n_states, *batch)`` and every parameter the
batch shape, so the same code serves one patient, ``vmap`` and a batch solved as one ODE with a
shared step.  Rules, endpoints, cohorts and fits name observables and covariates as data and
check them against these declarations.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import numpy as np
import pandas as pd

from ._covariates import CovariateDistribution
from ._parameters import ParameterSet, ParameterSpec, default_parameters, validate_parameters
from ._pk import AbstractPK, PKConstants

TIME_UNITS_H = {"day": 24.0, "h": 1.0}


@dataclass(frozen=True)
class ObservableSpec:
    """One model output: its name, unit and meaning."""

    name: str
    unit: str
    description: str


class AbstractModel(eqx.Module):
    """Abstract base of lenapk models (see the module docstring for the contract)."""

    state_names: eqx.AbstractClassVar[tuple[str, ...]]
    parameter_specs: eqx.AbstractClassVar[tuple[ParameterSpec, ...]]
    observable_specs: eqx.AbstractClassVar[tuple[ObservableSpec, ...]]
    pk: eqx.AbstractClassVar[AbstractPK]
    populations: eqx.AbstractClassVar[Mapping[str, Mapping[str, CovariateDistribution]]]
    time_unit: eqx.AbstractClassVar[str]
    omega_covariances: ClassVar[Mapping[tuple[str, str], float]] = {}
    endpoints: ClassVar[object] = None  # a lenapk.endpoints.EndpointSet: what cohorts report
    dose_levels: ClassVar[tuple[float, ...] | None] = None  # strengths a clinic can give (mg)

    # ------------------------------------------------------------------ the equations
    @abc.abstractmethod
    def pk_constants(self, p: ParameterSet) -> PKConstants | None:
        """The patient's PK micro-constants (``None`` for :class:`OdeDosing` models)."""

    @abc.abstractmethod
    def initial_state(self, c: dict):
        """The ODE state at time 0, shape ``(n_states, *batch)``."""

    @abc.abstractmethod
    def rhs(self, t, y, conc, c: dict):
        """dy/dt in the model's time unit (``t`` since the first dose)."""

    @abc.abstractmethod
    def observables(self, y, conc, c: dict) -> dict:
        """The observables of ``observable_specs`` at state ``y``."""

    def derive(self, p: ParameterSet) -> dict:
        """Per-patient constants for the right-hand side; the default is the parameters."""
        return dict(p.values)

    # ------------------------------------------------------------------ derived declarations
    @property
    def n_states(self) -> int:
        return len(self.state_names)

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.observable_specs)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.parameter_specs if s.kind == "covariate")

    @property
    def time_unit_h(self) -> float:
        return TIME_UNITS_H[self.time_unit]

    @property
    def default_population(self) -> str:
        return next(iter(self.populations))

    def __check_init__(self):
        if self.time_unit not in TIME_UNITS_H:
            raise ValueError(f"{type(self).__name__}.time_unit must be 'day' or 'h', got {self.time_unit!r}")
        covariates = set(self.covariate_names)
        for setting, dists in self.populations.items():
            if set(dists) != covariates:
                raise ValueError(
                    f"{type(self).__name__}.populations[{setting!r}] must give a distribution for each "
                    f"covariate {sorted(covariates)}, got {sorted(dists)}"
                )

    def default_params(self) -> ParameterSet:
        return default_parameters(self.parameter_specs)

    def validate(self, params: ParameterSet) -> None:
        validate_parameters(self.parameter_specs, params)

    def require_observables(self, names, *, who: str) -> None:
        """Refuse a rule, endpoint or fit that reads observables this model does not have."""
        missing = [n for n in names if n not in self.observable_names]
        if missing:
            raise ValueError(
                f"{who} reads the observable(s) {missing}, which model {type(self).__name__} does not "
                f"declare; its observables are {list(self.observable_names)}"
            )

    def check_covariates(self, table: pd.DataFrame) -> None:
        """Model-specific checks of a patients table beyond units (override to add some); raise
        ``ValueError`` naming the column and row."""


# ---------------------------------------------------------------------- the default model
_DEFAULT: list[AbstractModel] = []


def set_default_model(model: AbstractModel) -> None:
    """The model that ``simulate``, ``cohort``, ``compare``, ``fit`` and ``optimise_schedule``
    use when they are given none (lenapk sets its flagship model on import)."""
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model must be a lenapk model (AbstractModel), got {type(model).__name__}")
    _DEFAULT[:] = [model]


def resolve_model(model: AbstractModel | None) -> AbstractModel:
    """``model``, or the default model when ``None``."""
    if model is None:
        if not _DEFAULT:
            raise ValueError("no model given and no default model set (lenapk.set_default_model)")
        return _DEFAULT[0]
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model must be a lenapk model (AbstractModel), got {type(model).__name__}")
    return model


def omega_matrix(model: AbstractModel) -> tuple[tuple[str, ...], np.ndarray]:
    """Names of the parameters with variability and their covariance matrix Omega (log scale)."""
    names = tuple(s.name for s in model.parameter_specs if s.omega2 > 0)
    idx = {n: i for i, n in enumerate(names)}
    omega = np.diag([s.omega2 for s in model.parameter_specs if s.omega2 > 0])
    for (a, b), cov in model.omega_covariances.items():
        if a not in idx or b not in idx:
            raise ValueError(f"omega_covariances names ({a}, {b}) without omega2 > 0")
        omega[idx[a], idx[b]] = omega[idx[b], idx[a]] = cov
    if names and np.any(np.linalg.eigvalsh(omega) <= 0):
        raise ValueError("the model's Omega matrix is not positive definite")
    return names, omega
