r"""Population estimation: the one entry point, :func:`estimate`.

The population objective (:mod:`._objective`) is minimised over the free parameters on the
unconstrained scale (:mod:`._parameters`) by optax's L-BFGS with a backtracking line search.
Its gradient is exact: forward-mode automatic differentiation through each subject's EBE by the
implicit function theorem (the inner problems, one per subject, are solved together by
``vmap``).  The compiled functions are cached per model and method (:mod:`._compiled`).  Then the covariance step
(:mod:`._covariance`) and the EBEs at the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._compiled import OPTIMISER, compiled_objective
from ._covariance import CovarianceStep, covariance_step
from ._error import OutputErrors
from ._model import PopulationModel, PopulationParameters
from ._objective import check_method, posthoc_etas
from ._ode import EngineStructure, OdeStructure
from ._parameters import ParameterLayout
from ._subjects import Subjects

GRADIENT_TOLERANCE = 1e-6  # max |d OFV / d u| at convergence
OBJECTIVE_TOLERANCE = 1e-10  # relative change of the OFV over three iterations ...
NEWTON_DECREMENT_TOLERANCE = 1e-5  # ... accepted when g' H^-1 g is below this (OFV units)
NEWTON_RESTARTS = 3  # Newton steps tried where L-BFGS stalls short of that
OUTER_MAX_STEPS = 1000


class EstimationError(RuntimeError):
    """Estimation cannot start or its result is unusable; the message names the subject."""


@dataclass(frozen=True)
class EstimationResult:
    """A population fit.  ``ofv``: NONMEM's objective (-2 log-likelihood without the
    ``n_observations * log(2 pi)`` constant); ``minus2ll`` adds it."""

    model: PopulationModel
    method: str
    subjects: Subjects
    params: PopulationParameters
    ofv: float
    converged: bool
    n_iterations: int
    etas: np.ndarray
    subject_ofv: np.ndarray
    covariance: CovarianceStep | None
    message: str

    @property
    def n_subjects(self) -> int:
        return self.subjects.n_subjects

    @property
    def n_observations(self) -> int:
        return self.subjects.n_observations

    @property
    def minus2ll(self) -> float:
        return self.ofv + self.n_observations * float(np.log(2 * np.pi))

    @property
    def n_parameters(self) -> int:
        return int(ParameterLayout(self.model).free.sum())

    @property
    def aic(self) -> float:
        return self.minus2ll + 2 * self.n_parameters

    @property
    def bic(self) -> float:
        return self.minus2ll + np.log(self.n_observations) * self.n_parameters

    def estimates(self) -> pd.DataFrame:
        """One row per parameter: kind, estimate, fixed, se, rse_percent (free ones from the
        covariance step; NaN when it failed or was not run)."""
        layout = ParameterLayout(self.model)
        values = np.asarray(layout.natural(self.params))
        se = np.full(len(values), np.nan)
        if self.covariance is not None and self.covariance.ok:
            se[np.flatnonzero(layout.free)] = self.covariance.standard_errors
        return pd.DataFrame(
            {
                "parameter": layout.names,
                "kind": layout.kinds,
                "estimate": values,
                "fixed": ~layout.free,
                "se": se,
                "rse_percent": 100 * se / np.abs(values),
            }
        )

    def eta_table(self) -> pd.DataFrame:
        """The EBEs, one row per subject."""
        return pd.DataFrame(self.etas, columns=list(self.model.etas)).assign(ID=list(self.subjects.ids))[
            ["ID", *self.model.etas]
        ]


def _check(model: PopulationModel, subjects: Subjects) -> None:
    missing = sorted(set(model.covariates) - set(subjects.covariates))
    if missing:
        raise EstimationError(
            f"model {model.name!r} uses covariate(s) {missing} that the data lack; "
            f"read them with read_nonmem(..., covariates={list(model.covariates)})"
        )


def _check_data(model: PopulationModel, subjects: Subjects) -> None:
    """Data the model cannot take, named before any computation."""
    mask = np.asarray(subjects.obs_mask)
    if model.error.log_scale:
        dv = np.asarray(subjects.dv)
        bad = np.argwhere(mask & np.asarray(model.error.on_log_scale(subjects.obs_output)) & ~(dv > 0))
        if bad.size:
            i, j = bad[0]
            raise EstimationError(
                f"a log_additive error needs DV > 0: subject ID {subjects.ids[i]} has DV {dv[i, j]:g} at TIME "
                f"{float(subjects.obs_time[i, j]):g} (data row {int(subjects.obs_row[i, j])})"
            )
    n_out = int(np.asarray(subjects.obs_output)[mask].max(initial=0)) + 1
    if isinstance(model.error, OutputErrors):
        if n_out > len(model.error.errors):
            raise EstimationError(
                f"the data have {n_out} outputs (DVID) but the model's OutputErrors has "
                f"{len(model.error.errors)} ({list(model.error.outputs)}): give one error per output"
            )
    structure = getattr(model.predict, "__self__", None)
    if isinstance(structure, EngineStructure):
        if n_out > len(structure.observables):
            raise EstimationError(
                f"the data have {n_out} outputs (DVID) but the model predicts {len(structure.observables)} "
                f"({list(structure.observables)}): give model_structure one observable per output"
            )
    if subjects.has_steady_state and isinstance(structure, (OdeStructure, EngineStructure)):
        ss = np.asarray(subjects.dose_ss).any(axis=1)
        ids = [subjects.ids[i] for i in np.flatnonzero(ss)[:5]]
        raise EstimationError(
            f"steady-state doses (SS=1) are supported by the closed-form structures only, not by "
            f"{type(structure).__name__}; subject ID(s) {ids} have them"
        )


def _check_finite(fns, u_free, u_all, subjects) -> None:
    ofv = fns.jacobian(u_free, u_all, subjects)[0]
    bad = np.flatnonzero(~np.isfinite(np.asarray(ofv)))
    if bad.size:
        ids = [subjects.ids[i] for i in bad[:5]]
        raise EstimationError(f"the objective is not finite at the initial estimates for subject ID(s) {ids}")


def _as_subjects(data) -> Subjects:
    return data if isinstance(data, Subjects) else data.subjects


def _flat(history: list[float]) -> bool:
    """The OFV changed by less than OBJECTIVE_TOLERANCE (relative) over three iterations."""
    if len(history) < 4:
        return False
    return max(history[-4:]) - min(history[-4:]) <= OBJECTIVE_TOLERANCE * (1.0 + abs(history[-1]))


def _hessian_forward(gradient, u: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Forward differences of the exact gradient (one evaluation per parameter, step 1e-6
    relative with a floor of 1e-6), symmetrised: accurate to about 1e-6 relative, enough to
    judge convergence (the covariance step uses central differences)."""
    cols = []
    for k in range(u.size):
        h = 1e-6 * max(abs(u[k]), 1.0)
        cols.append((gradient(jnp.asarray(u + np.eye(u.size)[k] * h)) - g) / h)
    m = np.column_stack(cols)
    return 0.5 * (m + m.T)


def newton_step(fns, u, u_all, subjects, grad):
    """(Newton step -H^-1 g, decrement g' H^-1 g) with H the Hessian of the OFV on the
    unconstrained scale by forward differences of the exact gradient; decrement inf where H is
    not positive definite.

    The decrement is twice the OFV still to gain, and sqrt(decrement / 2) the distance to the
    optimum in standard errors (OFV = -2 log L, so Cov(u) = 2 H^-1): a scale-free test of
    convergence, where an absolute gradient tolerance would depend on the number of subjects."""
    g = np.asarray(grad)
    h = _hessian_forward(lambda x: np.asarray(fns.jacobian(x, u_all, subjects)[1]).sum(0), np.asarray(u), g)
    try:
        chol = np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        return np.zeros_like(g), float("inf")
    step = -np.linalg.solve(chol.T, np.linalg.solve(chol, g))
    return step, float(-g @ step)


def minimise(fns, u0, u_all, subjects, *, max_iterations: int = OUTER_MAX_STEPS):
    """L-BFGS (optax, backtracking Armijo line search) on the compiled objective; returns
    (u, iterations, converged, max |gradient|, Newton decrement or NaN).

    Converged: the gradient is below GRADIENT_TOLERANCE, or the OFV is flat and the Newton
    decrement below NEWTON_DECREMENT_TOLERANCE.  Where the OFV is flat with a larger decrement
    (L-BFGS's line search stalled), a Newton step is taken if it lowers the OFV and L-BFGS
    restarts from there, at most NEWTON_RESTARTS times."""
    u, state, history, restarts = u0, OPTIMISER.init(u0), [], 0
    for it in range(1, max_iterations + 1):
        ofv_i, jac, _, _ = fns.jacobian(u, u_all, subjects)
        value, grad = jnp.sum(ofv_i), jnp.sum(jac, axis=0)
        history.append(float(value))
        grad_max = float(jnp.max(jnp.abs(grad)))
        if grad_max <= GRADIENT_TOLERANCE:
            return u, it, True, grad_max, float("nan")
        if _flat(history):
            step, decrement = newton_step(fns, u, u_all, subjects, grad)
            if decrement <= NEWTON_DECREMENT_TOLERANCE:
                return u, it, True, grad_max, decrement
            trial = u + jnp.asarray(step)
            if restarts == NEWTON_RESTARTS or not float(fns.value(trial, u_all, subjects)) < history[-1]:
                return u, it, False, grad_max, decrement
            u, state, history, restarts = trial, OPTIMISER.init(trial), [], restarts + 1
            continue
        u, state = fns.step(u, state, value, grad, u_all, subjects)
    return u, max_iterations, False, grad_max, float("nan")


def estimate(
    model: PopulationModel,
    data,
    method: str = "focei",
    *,
    covariance: str | None = "sandwich",
    hessian: str = "ad",
) -> EstimationResult:
    """Fit ``model`` to ``data`` (:class:`NonmemData` or :class:`Subjects`) by ``method``
    (``"focei"``, ``"foce"``, ``"fo"`` or ``"laplace"``).

    ``covariance``: ``"sandwich"`` (R^-1 S R^-1, NONMEM's default), ``"r"`` (R^-1) or ``None``
    to skip the step; ``hessian``: the R matrix by automatic differentiation (``"ad"``) or by
    central differences of the exact gradient (``"fd"``, faster to compile)."""
    method = check_method(method)
    subjects = _as_subjects(data)
    _check(model, subjects)
    _check_data(model, subjects)
    layout = ParameterLayout(model)
    free = np.flatnonzero(layout.free)
    u_all = layout.unconstrained(model.initial())
    fns = compiled_objective(model, method)
    _check_finite(fns, u_all[free], u_all, subjects)
    if free.size:
        u_free, iterations, converged, grad_max, decrement = minimise(fns, u_all[free], u_all, subjects)
    else:
        u_free, iterations, converged, grad_max, decrement = u_all[free], 0, True, 0.0, float("nan")
    params = layout.from_unconstrained(u_all.at[free].set(u_free))
    ofv_i, _, etas, inner_ok = fns.jacobian(u_free, u_all, subjects)
    if method == "fo":  # FO's objective uses eta = 0; the EBEs for tables are POSTHOC ones
        etas, inner_ok = jax.jit(lambda s: posthoc_etas(model, params, s))(subjects)
    failed = [subjects.ids[i] for i in np.flatnonzero(~np.asarray(inner_ok))]
    status = "converged" if converged else f"no convergence in {iterations} iterations"
    message = f"{status} (max |gradient| {grad_max:.2g} on the unconstrained scale"
    message += ")" if np.isnan(decrement) else f", Newton decrement {decrement:.2g})"
    if failed:
        message += f"; the EBE search did not converge for subject ID(s) {failed[:10]}"
    cov = None
    if covariance and free.size:
        cov = covariance_step(model, method, params, subjects, kind=covariance, hessian=hessian)
    return EstimationResult(
        model=model,
        method=method,
        subjects=subjects,
        params=params,
        ofv=float(np.sum(ofv_i)),
        converged=converged and not failed,
        n_iterations=iterations,
        etas=np.asarray(etas),
        subject_ofv=np.asarray(ofv_i),
        covariance=cov,
        message=message,
    )
