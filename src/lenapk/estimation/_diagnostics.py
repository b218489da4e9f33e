r"""Goodness-of-fit diagnostics of a population fit, per observation and per subject.

Per observation (residuals on the error's scale: log for ``log_additive``):

- ``PRED`` :math:`f(\eta = 0)`, ``IPRED`` :math:`f(\hat\eta)`, ``RES`` = DV - PRED,
  ``IRES`` = DV - IPRED;
- ``WRES``: :math:`L_0^{-1}(y - f(0))` with :math:`L_0 L_0^T = C_0 = G_0 \Omega G_0^T + V(0)`
  (the FO weighted residual, NONMEM's WRES);
- ``CWRES``: :math:`L^{-1}(y - f(\hat\eta) + G\hat\eta)` with
  :math:`L L^T = G\Omega G^T + V` at :math:`\hat\eta` (V at :math:`\hat\eta` for methods with
  interaction): Hooker AC, Staatz CE, Karlsson MO (2007) Pharm Res 24:2187-2197;
- ``IWRES`` = IRES / :math:`\sqrt{V(\hat\eta)}`.

``L`` is the lower Cholesky factor (as Hooker et al.'s implementation), so a subject's first
residual is its own scaled residual.  Shrinkage (NONMEM 7's SD form): :math:`\eta`-shrinkage
:math:`1 - \mathrm{SD}(\hat\eta_k)/\sqrt{\omega_{kk}}`; :math:`\epsilon`-shrinkage
:math:`1 - \mathrm{SD}(\mathrm{IWRES})`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._objective import INTERACTION, _linearised, _scaled, prediction, residuals_and_variance

TABLE_COLUMNS = ("ID", "TIME", "DV", "PRED", "IPRED", "RES", "IRES", "WRES", "CWRES", "IWRES", "OUTPUT", "ROW")


def _decorrelated(r, v, g, eta, omega):
    """L^-1 (r + G eta) with L L^T = G Omega G^T + diag(V)."""
    c = g @ omega @ g.T + jnp.diag(v)
    return jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(c), r + g @ eta, lower=True)


def _subject_diagnostics(model, method, params, eta, subject):
    zero = jnp.zeros_like(eta)
    mask = subject.obs_mask
    pred = prediction(model, params, zero, subject)
    ipred = prediction(model, params, eta, subject)
    r0, v0, g0 = _linearised(model, params, zero, subject, False)
    r, v, g = _linearised(model, params, eta, subject, INTERACTION[method])
    _, v_ind = residuals_and_variance(model, params, eta, subject, True)
    y = _scaled(model, subject.dv, subject)
    return {
        "PRED": pred,
        "IPRED": ipred,
        "RES": jnp.where(mask, y - _scaled(model, pred, subject), 0.0),
        "IRES": r,
        "WRES": _decorrelated(r0, v0, g0, zero, params.omega),
        "CWRES": _decorrelated(r, v, g, eta, params.omega),
        "IWRES": r / jnp.sqrt(v_ind),
    }


def observation_table(result) -> pd.DataFrame:
    """One row per observation (see the module docstring), in data order within subject."""
    s = result.subjects
    out = jax.jit(jax.vmap(lambda e, subj: _subject_diagnostics(result.model, result.method, result.params, e, subj)))(
        jnp.asarray(result.etas), s
    )
    mask = np.asarray(s.obs_mask)
    ids = np.array(list(s.ids), dtype=object)[:, None].repeat(mask.shape[1], axis=1)
    columns = {
        "ID": ids[mask],
        "TIME": np.asarray(s.obs_time)[mask],
        "DV": np.asarray(s.dv)[mask],
        **{k: np.asarray(v)[mask] for k, v in out.items()},
        "OUTPUT": np.asarray(s.obs_output)[mask],
        "ROW": np.asarray(s.obs_row)[mask],
    }
    return pd.DataFrame(columns)[list(TABLE_COLUMNS)]


def shrinkage(result, table: pd.DataFrame | None = None) -> pd.Series:
    """eta-shrinkage per eta and epsilon-shrinkage (fractions, NONMEM 7's SD form)."""
    table = observation_table(result) if table is None else table
    omega_sd = np.sqrt(np.diag(np.asarray(result.params.omega)))
    etas = result.etas[np.asarray(result.subjects.obs_mask).any(axis=1)]  # subjects with data only
    eta = {f"eta_shrinkage({n})": 1 - np.std(etas[:, k], ddof=1) / omega_sd[k] for k, n in enumerate(result.model.etas)}
    return pd.Series({**eta, "epsilon_shrinkage": 1 - np.std(table["IWRES"], ddof=1)})
