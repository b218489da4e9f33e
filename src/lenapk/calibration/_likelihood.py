"""The likelihood of summary rows: Gaussian means, binomial and multinomial counts (see
:mod:`lenapk.calibration._rows` for which row gets which)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln


@dataclass(frozen=True)
class Likelihood:
    """Arrays of the per-row likelihood (one entry per row; unfitted rows weigh nothing)."""

    fitted: np.ndarray
    code: np.ndarray  # 1 gaussian, 2 binomial, 3 multinomial
    observed: np.ndarray
    se: np.ndarray
    k: np.ndarray
    N: np.ndarray
    group: np.ndarray
    constant: np.ndarray = field(repr=False)

    @classmethod
    def from_rows(cls, rows) -> "Likelihood":
        codes = {"gaussian": 1, "binomial": 2, "multinomial": 3}
        fitted = np.array([r.fitted for r in rows], dtype=bool)
        code = np.array([codes.get(r.likelihood, 0) if r.fitted else 0 for r in rows])
        k = np.array([r.k for r in rows], dtype=float)
        N = np.array([r.N for r in rows], dtype=float)
        se = np.array([r.se for r in rows], dtype=float)
        group = np.array([r.group for r in rows])
        const = np.zeros(len(rows))
        for i, r in enumerate(rows):
            if code[i] == 1:
                const[i] = math.log(r.se * math.sqrt(2 * math.pi))
            elif code[i] == 2:
                const[i] = -float(gammaln(r.N + 1) - gammaln(r.k + 1) - gammaln(r.N - r.k + 1))
            elif code[i] == 3:
                const[i] = float(gammaln(r.k + 1))
        seen = set()
        for i, r in enumerate(rows):  # the multinomial's -log N! once per group
            if code[i] == 3 and r.group not in seen:
                seen.add(r.group)
                const[i] -= float(gammaln(r.N + 1))
        obs = np.array([r.observed for r in rows], dtype=float)
        return cls(fitted, code, obs, se, k, N, group, const)

    def per_row(self, pred) -> jnp.ndarray:
        """Negative log-likelihood of each row (0 for unfitted rows)."""
        pred = jnp.asarray(pred)
        safe = jnp.where(jnp.isfinite(pred), pred, 0.5)
        p = jnp.clip(safe, 1e-9, 1.0 - 1e-9)
        se = np.where(self.code == 1, self.se, 1.0)
        k, N = np.nan_to_num(self.k), np.nan_to_num(self.N)
        gauss = 0.5 * ((np.nan_to_num(self.observed) - safe) / se) ** 2
        binom = -(k * jnp.log(p) + (N - k) * jnp.log1p(-p))
        # multinomial: -k log(p_i / sum_group p)
        totals = jnp.zeros(len(self.code))
        for g in np.unique(self.group[self.code == 3]):
            members = self.code == 3
            members = members & (self.group == g)
            totals = totals + jnp.where(members, jnp.sum(jnp.where(members, p, 0.0)), 0.0)
        multi = -k * (jnp.log(p) - jnp.log(jnp.where(self.code == 3, totals, 1.0)))
        nll = jnp.where(self.code == 1, gauss, jnp.where(self.code == 2, binom, jnp.where(self.code == 3, multi, 0.0)))
        return jnp.where(self.fitted, nll + self.constant, 0.0)

    def nll(self, pred) -> jnp.ndarray:
        return jnp.sum(self.per_row(pred))

    def residuals(self, pred) -> np.ndarray:
        """Standardised residuals (observed - predicted) / SD: SE for means, sqrt(p(1-p)/N) for
        proportions (NaN for rows without a likelihood)."""
        pred = np.asarray(pred, dtype=float)
        out = np.full(pred.shape, np.nan)
        g = self.code == 1
        out[g] = (self.observed[g] - pred[g]) / self.se[g]
        b = (self.code >= 2) & np.isfinite(self.N)
        p = np.clip(pred[b], 1e-9, 1 - 1e-9)
        out[b] = (self.k[b] / self.N[b] - p) / np.sqrt(p * (1 - p) / self.N[b])
        return out
