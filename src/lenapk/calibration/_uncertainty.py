"""Uncertainty of the estimates: the Hessian by central differences of the exact gradient, the
covariance, identifiability flags, and the smooth-vs-hard check of the relaxation.

``jax.hessian`` cannot differentiate through the solver (the forward-sensitivity gradient is
not reverse-differentiable), hence the finite differences of the exact gradient.  Standard
errors: ``cov(x) = H^{-1}``; natural scale by the delta method, ``SE(theta) = theta SE(x)``, and
95% intervals ``theta exp(+/- 1.96 SE(x))``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._objective import Objective


def hessian_fd(obj: Objective, x, step: float = 1e-3) -> np.ndarray:
    """Hessian of the objective on the log scale: column j is the central difference of the exact
    (sensitivity) gradient along x_j.  Only the studies a parameter acts on are re-solved.  Not
    symmetrised here: its asymmetry measures the finite-difference error (:func:`covariance`
    symmetrises)."""
    x = np.asarray(x, dtype=float)
    k = len(x)
    H = np.zeros((k, k))
    for j, f in enumerate(obj.free):
        studies = [s for s in obj.studies if f in s.active]
        cols = []
        for sign in (1.0, -1.0):
            xs = x.copy()
            xs[j] += sign * step
            cols.append(obj.gradient_at(xs, studies) + obj.prior(xs)[1])
        # the other studies' gradients do not depend on x_j: they cancel in the difference
        H[:, j] = (cols[0] - cols[1]) / (2 * step)
    return H


def covariance(H: np.ndarray, free, rel_tol=1e-8, load=0.3):
    """Covariance ``H^-1`` (log scale) of the symmetrised Hessian, SEs, eigenvalues and the
    parameters flagged as not identifiable: those loading (|component| > ``load``) on an
    eigenvector with an eigenvalue below ``rel_tol`` of the largest, or with a log-scale SE above 1
    (a 95% interval wider than a factor of 50)."""
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    bad = w <= rel_tol * max(np.max(np.abs(w)), 1e-300)
    flagged = set()
    for j in np.flatnonzero(bad):
        flagged |= {free[i] for i in np.flatnonzero(np.abs(V[:, j]) > load)}
    inv_w = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, w))
    cov = (V * inv_w) @ V.T
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    se = np.where([f in flagged for f in free], np.inf, se)
    flagged |= {f for f, s in zip(free, se) if s > 1.0}
    return cov, se, w, flagged


CHECK_TEMPERATURES = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)


def temperature_check(obj: Objective, x, temperatures=CHECK_TEMPERATURES) -> pd.DataFrame:
    """Smooth predictions of the thresholded rows at several temperatures beside the hard count
    (T = 0), on the cohorts of the fit: how the relaxation converges to the clinical count."""
    tables = {T: obj.table_at(x, temperature=T)[0] for T in temperatures}
    first = next(iter(tables.values()))
    rows = first["statistic"] != "mean"
    out = first.loc[rows, ["row", "study", "endpoint", "statistic", "observed", "predicted"]].rename(
        columns={"predicted": "hard"}
    )
    for T, t in tables.items():
        out[f"T={T:g}"] = t.loc[rows, "predicted_smooth"].to_numpy()
    return out.reset_index(drop=True)
