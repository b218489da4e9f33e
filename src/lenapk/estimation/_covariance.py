r"""The covariance step: standard errors of the population estimates, NONMEM's way.

On the natural scale of the free parameters :math:`\psi` (THETAs, OMEGA elements, residual
parameters; see :mod:`._parameters`), with :math:`OFV_i` subject *i*'s objective:

.. math::
    R = \tfrac12 \nabla^2_\psi \sum_i OFV_i, \qquad
    S = \sum_i \big(\tfrac12 \nabla_\psi OFV_i\big)\big(\tfrac12 \nabla_\psi OFV_i\big)^T, \qquad
    \mathrm{Cov} = R^{-1} S R^{-1}

(NONMEM's default "sandwich"; ``R^{-1}`` alone is ``MATRIX=R``).  :math:`R` is the Hessian of
-log L, by automatic differentiation through the per-subject EBEs (implicit function theorem;
``hessian="ad"``) or by central differences of the exact gradient (``hessian="fd"``, as NONMEM
differentiates but from an exact gradient; much faster to compile).  The per-subject gradients
of S are exact: forward mode on the unconstrained scale times :math:`\partial u/\partial\psi`.
A singular or indefinite ``R`` is reported as such (``ok`` false, the reason in ``message``,
standard errors NaN): never hidden.  The condition number is that of the correlation matrix
(ratio of its largest to smallest eigenvalue), as NONMEM prints it with ``PRINT=E``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ._compiled import compiled_objective
from ._objective import subject_objectives
from ._parameters import ParameterLayout

EIGEN_RELATIVE_FLOOR = 1e-12
FD_STEP = 1e-4


@dataclass(frozen=True)
class CovarianceStep:
    """R, S and the covariance of the free parameters (``names``), with their diagnostics."""

    names: tuple[str, ...]
    r_matrix: np.ndarray
    s_matrix: np.ndarray
    covariance: np.ndarray
    ok: bool
    message: str

    @property
    def standard_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    @property
    def correlation(self) -> np.ndarray:
        se = self.standard_errors
        return self.covariance / np.outer(se, se)

    @property
    def condition_number(self) -> float:
        if not self.ok:
            return float("nan")
        eig = np.linalg.eigvalsh(self.correlation)
        return float(eig[-1] / eig[0])


def _r_problem(r: np.ndarray) -> str:
    """Why R cannot be inverted, or '' when it can."""
    if not np.all(np.isfinite(r)):
        return "the R matrix has non-finite elements"
    eig = np.linalg.eigvalsh(0.5 * (r + r.T))
    if eig[0] <= EIGEN_RELATIVE_FLOOR * max(abs(eig[-1]), 1.0):
        return f"the R matrix is singular or not positive definite (eigenvalues {eig[0]:.3g} .. {eig[-1]:.3g})"
    return ""


def _natural_gradients(model, method, params, subjects):
    """(per-subject gradients wrt the free natural parameters at psi, psi -> those gradients):
    the compiled unconstrained Jacobian times d u / d psi (chain rule, exact)."""
    layout = ParameterLayout(model)
    fns = compiled_objective(model, method)
    free = jnp.array(fns.free, dtype=int)
    v_all = layout.natural(params)
    u_all = layout.unconstrained(params)

    def to_u(v_free):
        return layout.unconstrained(layout.from_natural(v_all.at[free].set(v_free)))[free]

    du_dv = jax.jit(jax.jacfwd(to_u))

    def gradients(v_free):
        return fns.jacobian(to_u(v_free), u_all, subjects)[1] @ du_dv(v_free)

    return v_all[free], gradients


def _hessian_ad(model, method, params, subjects):
    layout = ParameterLayout(model)
    free = jnp.array(compiled_objective(model, method).free, dtype=int)
    v_all = layout.natural(params)

    def total(v_free):
        p = layout.from_natural(v_all.at[free].set(v_free))
        return jnp.sum(subject_objectives(model, method, p, subjects)[0])

    return np.asarray(jax.jit(jax.hessian(total))(v_all[free]))


def _hessian_fd(gradients, x) -> np.ndarray:
    """Central differences of the exact gradient, step 1e-4 relative (floor 1e-6), symmetrised."""
    x = np.asarray(x)
    cols = []
    for k in range(x.size):
        h = FD_STEP * max(abs(x[k]), 1e-2)
        e = np.eye(x.size)[k] * h
        g_hi = np.asarray(gradients(jnp.asarray(x + e))).sum(0)
        g_lo = np.asarray(gradients(jnp.asarray(x - e))).sum(0)
        cols.append((g_hi - g_lo) / (2 * h))
    h = np.column_stack(cols)
    return 0.5 * (h + h.T)


def covariance_step(
    model, method: str, params, subjects, *, kind: str = "sandwich", hessian: str = "ad"
) -> CovarianceStep:
    """R, S and ``R^-1 S R^-1`` (``kind="sandwich"``) or ``R^-1`` (``kind="r"``) at ``params``;
    ``hessian``: ``"ad"`` (automatic differentiation) or ``"fd"`` (central differences of the
    exact gradient)."""
    if kind not in ("sandwich", "r"):
        raise ValueError(f"kind must be 'sandwich' or 'r', got {kind!r}")
    if hessian not in ("ad", "fd"):
        raise ValueError(f"hessian must be 'ad' or 'fd', got {hessian!r}")
    layout = ParameterLayout(model)
    names = tuple(n for n, f in zip(layout.names, layout.free) if f)
    x, gradients = _natural_gradients(model, method, params, subjects)
    grads = np.asarray(gradients(x))
    if hessian == "ad":
        r = 0.5 * _hessian_ad(model, method, params, subjects)
    else:
        r = 0.5 * _hessian_fd(gradients, x)
    s = 0.25 * grads.T @ grads
    problem = _r_problem(r)
    if problem:
        return CovarianceStep(names, r, s, np.full_like(r, np.nan), False, problem)
    r_inv = np.linalg.inv(0.5 * (r + r.T))
    cov = r_inv if kind == "r" else r_inv @ s @ r_inv
    return CovarianceStep(names, r, s, cov, True, f"{kind} covariance, R by {hessian.upper()}")
