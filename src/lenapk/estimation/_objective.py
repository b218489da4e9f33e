r"""The NONMEM objective of one subject under FO, FOCE, FOCE-I and Laplace.

Notation for subject *i* (observations *j*; padded observations count nowhere): residual
:math:`r_j = y_j - f_j(\eta)` (on the log scale for ``log_additive``), variance
:math:`V_j`, :math:`G = \partial f / \partial \eta`, :math:`D = \partial V / \partial \eta`.
The conditional objective (-2 log of data likelihood times prior, without constants) is

.. math::
    l(\eta) = \sum_j \left[\log V_j + r_j^2 / V_j\right] + \eta^T \Omega^{-1} \eta

with :math:`V_j = V(f_j(\eta))` when the method has interaction (FOCE-I, Laplace) and
:math:`V_j = V(f_j(0))` without.  :math:`\hat\eta` minimises :math:`l` (the EBE; FO uses 0).
The objective of subject *i* (Wang 2007, eqs. for FO, FOCE, FOCE-I and Laplace):

- FOCE-I: :math:`l(\hat\eta) + \log|\Omega| + \log|\Omega^{-1} + \sum_j (G_j G_j^T / V_j
  + \tfrac12 D_j D_j^T / V_j^2)|` (the Laplace approximation with the Hessian from first
  derivatives);
- Laplace: :math:`l(\hat\eta) + \log|\Omega| + \log|\tfrac12 \nabla^2 l(\hat\eta)|` (exact
  Hessian, by automatic differentiation);
- FOCE and FO: the Gaussian of the model linearised at :math:`\hat\eta`:
  :math:`\log|C| + \tilde r^T C^{-1} \tilde r` with :math:`\tilde r = r + G\hat\eta` and
  :math:`C = G\Omega G^T + \mathrm{diag}(V)`, computed by the matrix determinant lemma and
  Woodbury's identity (no observation-sized matrix).

The population objective is the sum over subjects: -2 log-likelihood *without* the
:math:`n_{obs}\log 2\pi` constant, as NONMEM prints it.  Source: Wang Y (2007) Derivation of
various NONMEM estimation methods.  J Pharmacokinet Pharmacodyn 34:575-593.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optimistix as optx

from ._model import PopulationModel, PopulationParameters
from ._subjects import Subjects

METHODS = ("focei", "foce", "fo", "laplace")
INTERACTION = {"focei": True, "laplace": True, "foce": False, "fo": False}
INNER_TOLERANCE = 1e-9
INNER_MAX_STEPS = 256


def prediction(model: PopulationModel, params: PopulationParameters, eta, subject: Subjects):
    """The individual prediction at each observation (untransformed)."""
    return model.predict(model.individual_parameters(params, eta, subject.covariates), subject)


def _scaled(model: PopulationModel, values, subject):
    """Values on the error's scale; padding replaced by 1 first so logs stay finite."""
    return model.error.transform(jnp.where(subject.obs_mask, values, 1.0), subject.obs_output)


def residuals_and_variance(model, params, eta, subject, interaction: bool):
    """(r, V) of every observation: zero residual and unit variance on padding."""
    mask = subject.obs_mask
    f = prediction(model, params, eta, subject)
    f_var = f if interaction else prediction(model, params, jnp.zeros_like(eta), subject)
    r = jnp.where(mask, _scaled(model, subject.dv, subject) - _scaled(model, f, subject), 0.0)
    v = jnp.where(mask, model.error.variance(jnp.where(mask, f_var, 1.0), params.sigma, subject.obs_output), 1.0)
    return r, v


def conditional_objective(eta, model, params, subject, interaction: bool):
    """l(eta) of the module docstring."""
    r, v = residuals_and_variance(model, params, eta, subject, interaction)
    quad = eta @ jnp.linalg.solve(params.omega, eta)
    return jnp.sum(jnp.where(subject.obs_mask, jnp.log(v) + r * r / v, 0.0)) + quad


def eta_mode(model, params, subject, interaction: bool):
    """The mode of l (the empirical Bayes estimate) by BFGS from 0, and whether it converged.
    Differentiable in ``params`` by the implicit function theorem (optimistix's default)."""
    n = len(model.etas)
    solver = optx.BFGS(rtol=INNER_TOLERANCE, atol=INNER_TOLERANCE)
    fn = lambda e, _: conditional_objective(e, model, params, subject, interaction)  # noqa: E731
    sol = optx.minimise(fn, solver, jnp.zeros(n), max_steps=INNER_MAX_STEPS, throw=False)
    return sol.value, sol.result == optx.RESULTS.successful


def _linearised(model, params, eta, subject, interaction):
    """r, V and G = d f / d eta (on the error's scale) at eta, padding zeroed."""
    r, v = residuals_and_variance(model, params, eta, subject, interaction)
    mask = subject.obs_mask
    g = jax.jacfwd(lambda e: _scaled(model, prediction(model, params, e, subject), subject))(eta)
    return r, v, jnp.where(mask[:, None], g, 0.0)


def _logdet(m):
    return jnp.linalg.slogdet(m)[1]


def _logdet_positive(m):
    """log det of a matrix that must be positive definite: NaN when it is not (a Hessian at a
    saddle or a failed EBE search), so the objective cannot be finite and silently wrong."""
    chol = jnp.linalg.cholesky(m)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def _gaussian_ofv(r, v, g, eta, omega):
    """log|C| + rt' C^-1 rt with C = G Omega G' + diag(V), rt = r + G eta (lemma and Woodbury)."""
    rt = r + g @ eta
    gv = g / v[:, None]
    m = jnp.linalg.inv(omega) + g.T @ gv
    b = gv.T @ rt
    logdet = jnp.sum(jnp.log(v)) + _logdet(omega) + _logdet(m)
    return logdet + jnp.sum(rt * rt / v) - b @ jnp.linalg.solve(m, b)


def _focei_ofv(model, params, eta, subject):
    r, v, g = _linearised(model, params, eta, subject, True)
    mask = subject.obs_mask
    d = jax.jacfwd(lambda e: residuals_and_variance(model, params, e, subject, True)[1])(eta)
    d = jnp.where(mask[:, None], d, 0.0)
    info = jnp.linalg.inv(params.omega) + (g / v[:, None]).T @ g + 0.5 * (d / v[:, None] ** 2).T @ d
    return conditional_objective(eta, model, params, subject, True) + _logdet(params.omega) + _logdet(info)


def _laplace_ofv(model, params, eta, subject):
    h = jax.hessian(lambda e: conditional_objective(e, model, params, subject, True))(eta)
    return conditional_objective(eta, model, params, subject, True) + _logdet(params.omega) + _logdet_positive(0.5 * h)


def subject_objective(model: PopulationModel, method: str, params: PopulationParameters, subject: Subjects):
    """(objective, EBE, inner converged) of one subject."""
    if method == "fo":
        eta = jnp.zeros(len(model.etas))
        ok = jnp.array(True)
    else:
        eta, ok = eta_mode(model, params, subject, INTERACTION[method])
    if method == "focei":
        ofv = _focei_ofv(model, params, eta, subject)
    elif method == "laplace":
        ofv = _laplace_ofv(model, params, eta, subject)
    else:
        r, v, g = _linearised(model, params, eta, subject, False)
        ofv = _gaussian_ofv(r, v, g, eta, params.omega)
    return ofv, eta, ok


def posthoc_etas(model, params, subjects: Subjects):
    """EBEs after an FO fit (NONMEM's POSTHOC): the modes of l without interaction, as FO's
    residual variance; FO's objective itself does not use them."""
    return jax.vmap(lambda s: eta_mode(model, params, s, False))(subjects)


def subject_objectives(model, method, params, subjects: Subjects):
    """Per-subject (objective, EBE, converged), vmapped over subjects."""
    return jax.vmap(lambda s: subject_objective(model, method, params, s))(subjects)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method
