r"""The population parameters as flat vectors: natural scale (reported) and unconstrained (optimised).

Natural order, as NONMEM prints it: the THETAs, then the free elements of OMEGA (each block's
lower triangle, row by row), then the residual parameters.  Standard errors and the covariance
step are on this scale: OMEGA elements are variances and covariances.

The outer optimiser works on an unconstrained vector ``u``:

- a THETA with bounds ``(lo, hi)``: :math:`\mathrm{logit}((\theta - lo)/(hi - lo))`; with a
  lower bound only :math:`\log(\theta - lo)`; with an upper bound only
  :math:`\log(hi - \theta)`; unbounded: itself;
- each OMEGA block: its Cholesky factor :math:`L` (:math:`\Omega_b = L L^T`) with
  :math:`\log L_{kk}` on the diagonal, so every ``u`` gives a positive definite OMEGA;
- residual parameters: the log of each SD; a power exponent itself.

Fixed parameters keep their initial values and are not in ``u`` (nor in the covariance step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ._model import PopulationModel, PopulationParameters, Theta


def _to_free(t: Theta, x):
    lo, hi = t.lower, t.upper
    if math.isfinite(lo) and math.isfinite(hi):
        p = (x - lo) / (hi - lo)
        return jnp.log(p) - jnp.log1p(-p)
    if math.isfinite(lo):
        return jnp.log(x - lo)
    if math.isfinite(hi):
        return jnp.log(hi - x)
    return x


def _from_free(t: Theta, u):
    lo, hi = t.lower, t.upper
    if math.isfinite(lo) and math.isfinite(hi):
        return lo + (hi - lo) / (1.0 + jnp.exp(-u))
    if math.isfinite(lo):
        return lo + jnp.exp(u)
    if math.isfinite(hi):
        return hi - jnp.exp(u)
    return u


def _residual_theta(s: Theta) -> Theta:
    """Residual SDs are positive; an exponent is unbounded unless the user bounded it."""
    if s.name.endswith("_sd") and s.lower < 0:
        return Theta(s.name, s.init, 0.0, s.upper, s.fixed)
    return s


@dataclass(frozen=True)
class ParameterLayout:
    """Names, free mask and transforms of a model's population parameters."""

    model: PopulationModel

    @property
    def omega_elements(self) -> tuple[tuple[int, int], ...]:
        """(row, column) of each OMEGA element on the natural vector, block lower triangles."""
        return tuple((b[r], b[c]) for b in self.model.blocks() for r in range(len(b)) for c in range(r + 1))

    @property
    def names(self) -> tuple[str, ...]:
        etas = self.model.etas
        omega = tuple(f"omega({etas[r]},{etas[c]})" for r, c in self.omega_elements)
        return tuple(t.name for t in self.model.thetas) + omega + tuple(s.name for s in self.model.sigma)

    @property
    def free(self) -> np.ndarray:
        m = self.model
        omega = [not m.omega_fixed] * len(self.omega_elements)
        return np.array([not t.fixed for t in m.thetas] + omega + [not s.fixed for s in m.sigma], dtype=bool)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (
            ("theta",) * len(self.model.thetas)
            + ("omega",) * len(self.omega_elements)
            + ("sigma",) * len(self.model.sigma)
        )

    # ------------------------------------------------------------------ natural scale
    def natural(self, p: PopulationParameters) -> jnp.ndarray:
        m = self.model
        theta = [p.theta[t.name] for t in m.thetas]
        omega = [p.omega[r, c] for r, c in self.omega_elements]
        sigma = [p.sigma[s.name] for s in m.sigma]
        return jnp.stack([jnp.asarray(x, dtype=float) for x in theta + omega + sigma])

    def from_natural(self, v) -> PopulationParameters:
        m = self.model
        nt, no = len(m.thetas), len(self.omega_elements)
        n = len(m.etas)
        omega = jnp.zeros((n, n))
        for k, (r, c) in enumerate(self.omega_elements):
            omega = omega.at[r, c].set(v[nt + k]).at[c, r].set(v[nt + k])
        return PopulationParameters(
            theta={t.name: v[i] for i, t in enumerate(m.thetas)},
            omega=omega,
            sigma={s.name: v[nt + no + i] for i, s in enumerate(m.sigma)},
        )

    # ------------------------------------------------------------------ unconstrained scale
    def unconstrained(self, p: PopulationParameters) -> jnp.ndarray:
        """All parameters (free and fixed) on the unconstrained scale."""
        m = self.model
        theta = [_to_free(t, p.theta[t.name]) for t in m.thetas]
        chol = []
        for b in m.blocks():
            L = jnp.linalg.cholesky(p.omega[jnp.ix_(jnp.array(b), jnp.array(b))])
            chol += [jnp.log(L[r, c]) if r == c else L[r, c] for r in range(len(b)) for c in range(r + 1)]
        sigma = [_to_free(_residual_theta(s), p.sigma[s.name]) for s in m.sigma]
        return jnp.stack([jnp.asarray(x, dtype=float) for x in theta + chol + sigma])

    def from_unconstrained(self, u) -> PopulationParameters:
        m = self.model
        nt = len(m.thetas)
        n = len(m.etas)
        omega = jnp.zeros((n, n))
        k = nt
        for b in m.blocks():
            nb = len(b)
            L = jnp.zeros((nb, nb))
            for r in range(nb):
                for c in range(r + 1):
                    L = L.at[r, c].set(jnp.exp(u[k]) if r == c else u[k])
                    k += 1
            omega = omega.at[jnp.ix_(jnp.array(b), jnp.array(b))].set(L @ L.T)
        return PopulationParameters(
            theta={t.name: _from_free(t, u[i]) for i, t in enumerate(m.thetas)},
            omega=omega,
            sigma={s.name: _from_free(_residual_theta(s), u[k + i]) for i, s in enumerate(m.sigma)},
        )
