r"""A population model: structural prediction, parameter model and residual error.

:class:`PopulationModel` is what :func:`lenapk.estimation.estimate` fits:

- ``thetas``: typical values (NONMEM THETA), each a :class:`Theta` with bounds and FIX;
- ``etas``: the names of the random effects, with ``omega`` their initial covariance (OMEGA)
  and ``omega_blocks`` its structure: each block a tuple of eta names with a full covariance,
  etas in no block on the diagonal;
- ``individual(theta, eta, covariates) -> params``: the individual parameters from typical
  values, random effects and the subject's covariates (NONMEM's $PK), e.g.
  ``CL = exp(tcl + eta_cl) * (WT / 70) ** 0.75``;
- ``predict(params, subject) -> f``: the prediction at each of the subject's observations
  (a :class:`~lenapk.estimation.PK_STRUCTURES` closed form, an ODE model, or any function);
- ``error``: a :class:`ResidualError` (or :class:`OutputErrors`, one per output) with ``sigma``
  its initial parameters (:class:`Theta`).

The model for subject *i*, observation *j*:

.. math::
    y_{ij} = f(t_{ij}, \phi_i) + \sqrt{V(f_{ij})}\,\epsilon_{ij},\quad
    \phi_i = g(\theta, \eta_i, z_i),\quad \eta_i \sim N(0, \Omega),\quad \epsilon_{ij} \sim N(0, 1).

Everything given is checked here, before any computation, with errors naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._error import OutputErrors, ResidualError


@dataclass(frozen=True)
class Theta:
    """A population parameter: ``name``, initial value, bounds (open interval: the initial
    value, also of a fixed parameter, lies strictly inside) and FIX."""

    name: str
    init: float
    lower: float = -math.inf
    upper: float = math.inf
    fixed: bool = False

    def __post_init__(self):
        if not (isinstance(self.init, (int, float)) and math.isfinite(self.init)):
            raise ValueError(f"theta {self.name!r}: init must be a finite number, got {self.init!r}")
        if not self.lower < self.upper:
            raise ValueError(f"theta {self.name!r}: lower {self.lower} must be below upper {self.upper}")
        if not self.lower < self.init < self.upper:
            raise ValueError(
                f"theta {self.name!r}: init {self.init} must lie strictly inside its bounds "
                f"({self.lower}, {self.upper})"
            )


class PopulationParameters(eqx.Module):
    """Population parameter values: ``theta`` and ``sigma`` (name -> value), ``omega`` matrix."""

    theta: dict
    omega: jnp.ndarray
    sigma: dict


@dataclass(frozen=True)
class PopulationModel:
    """A population model (see the module docstring)."""

    thetas: tuple[Theta, ...]
    etas: tuple[str, ...]
    omega: np.ndarray
    individual: Callable
    predict: Callable
    error: ResidualError | OutputErrors
    sigma: tuple[Theta, ...]
    omega_blocks: tuple[tuple[str, ...], ...] = ()
    omega_fixed: bool = False
    covariates: tuple[str, ...] = ()
    name: str = "model"

    def __post_init__(self):
        object.__setattr__(self, "thetas", tuple(self.thetas))
        object.__setattr__(self, "sigma", tuple(self.sigma))
        object.__setattr__(self, "etas", tuple(self.etas))
        object.__setattr__(self, "omega", np.atleast_2d(np.asarray(self.omega, dtype=float)))
        object.__setattr__(self, "omega_blocks", tuple(tuple(b) for b in self.omega_blocks))
        self._check()

    def _check(self):
        names = [t.name for t in self.thetas] + [s.name for s in self.sigma] + list(self.etas)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model {self.name!r}: parameter names must be unique, got {dup} more than once")
        expected = set(self.error.parameter_names)
        if {s.name for s in self.sigma} != expected:
            raise ValueError(
                f"model {self.name!r}: sigma must give {sorted(expected)} for a {self.error.kind!r} error, "
                f"got {sorted(s.name for s in self.sigma)}"
            )
        n = len(self.etas)
        if self.omega.shape != (n, n):
            raise ValueError(
                f"model {self.name!r}: omega must be {n}x{n} for etas {list(self.etas)}, got {self.omega.shape}"
            )
        if n and (not np.allclose(self.omega, self.omega.T) or np.any(np.linalg.eigvalsh(self.omega) <= 0)):
            raise ValueError(
                f"model {self.name!r}: omega must be symmetric positive definite, got {self.omega.tolist()}"
            )
        seen = [e for b in self.omega_blocks for e in b]
        unknown = sorted(set(seen) - set(self.etas))
        if unknown or len(seen) != len(set(seen)):
            raise ValueError(f"model {self.name!r}: omega_blocks must name each eta of {list(self.etas)} at most once")
        mask = self.omega_structure()
        if np.any((self.omega != 0) & ~mask):
            raise ValueError(
                f"model {self.name!r}: omega has covariances outside omega_blocks {list(self.omega_blocks)}"
            )

    # ------------------------------------------------------------------ structure
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """Index blocks of Omega: the given blocks, then each remaining eta alone."""
        index = {e: i for i, e in enumerate(self.etas)}
        given = [tuple(index[e] for e in b) for b in self.omega_blocks]
        alone = [(i,) for i in range(len(self.etas)) if not any(i in b for b in given)]
        return tuple(given + alone)

    def omega_structure(self) -> np.ndarray:
        """Boolean mask of the Omega elements that may be non-zero."""
        n = len(self.etas)
        mask = np.eye(n, dtype=bool)
        for b in self.blocks():
            mask[np.ix_(b, b)] = True
        return mask

    def initial(self) -> PopulationParameters:
        return PopulationParameters(
            theta={t.name: jnp.asarray(float(t.init)) for t in self.thetas},
            omega=jnp.asarray(self.omega),
            sigma={s.name: jnp.asarray(float(s.init)) for s in self.sigma},
        )

    def individual_parameters(self, params: PopulationParameters, eta, covariates: Mapping):
        """The individual parameters of one subject with random effects ``eta`` (vector)."""
        eta_named = {name: eta[i] for i, name in enumerate(self.etas)}
        return self.individual(params.theta, eta_named, covariates)
