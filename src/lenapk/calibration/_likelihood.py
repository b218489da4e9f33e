r"""The likelihood of summary rows: Gaussian means, beta-binomial and Dirichlet-multinomial
counts (see :mod:`lenapk.calibration._rows` for which row gets which, and for the assumptions).

Per row, with the prediction ``p`` (or the predicted mean ``mu``):

- **Gaussian** (code 1): ``-log N(observed; mu, SE_total)``, ``SE_total^2 = SE^2 + se_mc^2``
  (the data's SE and the Monte Carlo SE of the virtual cohort's mean).
- **beta-binomial** (code 2): ``k`` of ``N`` with mean ``p`` and intra-class correlation ``rho =
  min(rho_data + rho_mc, RHO_MAX)``: ``a = p s``, ``b = (1 - p) s``, ``s = (1 - rho) / rho``,

  .. math:: -\log P(k) = -\log\binom{N}{k} - \log\frac{B(k + a, N - k + b)}{B(a, b)},

  so ``E k = N p`` and ``Var k = N p (1 - p) [1 + (N - 1) rho]``; ``rho = 0`` (below
  :data:`RHO_BINOMIAL`) is the binomial ``-log Binom(k; N, p)``.
- **Dirichlet-multinomial** (code 3): the categories of one group with shares ``q_i = p_i /
  sum p`` and precision ``alpha0 = (1 - rho) / rho`` (``rho = rho_mc = 1 / n_v``):

  .. math:: -\log P(k) = -\log\frac{N!\,\Gamma(\alpha_0)}{\Gamma(N + \alpha_0)}
            - \sum_i \log\frac{\Gamma(k_i + \alpha_0 q_i)}{k_i!\,\Gamma(\alpha_0 q_i)},

  the multinomial ``-log Mult(k; N, q)`` at ``rho = 0``.

Residuals are standardised by the same total variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from ._rows import RHO_MAX

RHO_BINOMIAL = 1e-8  # below this intra-class correlation a count row is binomial (multinomial)


@dataclass(frozen=True)
class Likelihood:
    """Arrays of the per-row likelihood (one entry per row; unfitted rows weigh nothing).
    ``se``: the total SE of a mean; ``rho``: the total intra-class correlation of a count."""

    fitted: np.ndarray
    code: np.ndarray  # 1 gaussian, 2 (beta-)binomial, 3 (Dirichlet-)multinomial
    observed: np.ndarray
    se: np.ndarray
    k: np.ndarray
    N: np.ndarray
    group: np.ndarray
    rho: np.ndarray
    constant: np.ndarray = field(repr=False)

    @classmethod
    def from_rows(cls, rows) -> "Likelihood":
        codes = {"gaussian": 1, "binomial": 2, "multinomial": 3}
        fitted = np.array([r.fitted for r in rows], dtype=bool)
        code = np.array([codes.get(r.likelihood, 0) if r.fitted else 0 for r in rows])
        k = np.array([r.k for r in rows], dtype=float)
        N = np.array([r.N for r in rows], dtype=float)
        se = np.array([math.hypot(r.se, getattr(r, "se_mc", 0.0)) for r in rows], dtype=float)
        rho = np.array([getattr(r, "rho", 0.0) + getattr(r, "rho_mc", 0.0) for r in rows], dtype=float)
        rho = np.where((code >= 2) & (rho >= RHO_BINOMIAL), np.minimum(rho, RHO_MAX), 0.0)
        group = np.array([r.group for r in rows])
        const = np.zeros(len(rows))
        for i, r in enumerate(rows):
            if code[i] == 1:
                const[i] = math.log(se[i] * math.sqrt(2 * math.pi))
            elif code[i] == 2:
                const[i] = -float(gammaln(r.N + 1) - gammaln(r.k + 1) - gammaln(r.N - r.k + 1))
                if rho[i] > 0:  # -log B-normalisation: -log Gamma(s) + log Gamma(N + s)
                    s = (1 - rho[i]) / rho[i]
                    const[i] += float(gammaln(r.N + s) - gammaln(s))
            elif code[i] == 3:
                const[i] = float(gammaln(r.k + 1))
        seen = set()
        for i, r in enumerate(rows):  # the multinomial's -log N! (and Dirichlet terms) once per group
            if code[i] == 3 and r.group not in seen:
                seen.add(r.group)
                members = (code == 3) & (group == r.group)
                if len(set(rho[members])) != 1:
                    raise ValueError(f"multinomial group {r.group}: its rows differ in rho {sorted(set(rho[members]))}")
                const[i] -= float(gammaln(r.N + 1))
                if rho[i] > 0:
                    s = (1 - rho[i]) / rho[i]
                    const[i] += float(gammaln(r.N + s) - gammaln(s))
        obs = np.array([r.observed for r in rows], dtype=float)
        return cls(fitted, code, obs, se, k, N, group, rho, const)

    def per_row(self, pred) -> jnp.ndarray:
        """Negative log-likelihood of each row (0 for unfitted rows)."""
        pred = jnp.asarray(pred)
        safe = jnp.where(jnp.isfinite(pred), pred, 0.5)
        p = jnp.clip(safe, 1e-9, 1.0 - 1e-9)
        se = np.where(self.code == 1, self.se, 1.0)
        k, N = np.nan_to_num(self.k), np.nan_to_num(self.N)
        over = self.rho > 0
        s = np.where(over, (1 - self.rho) / np.where(over, self.rho, 1.0), 1.0)  # a + b (alpha0)
        gauss = 0.5 * ((np.nan_to_num(self.observed) - safe) / se) ** 2
        binom = -(k * jnp.log(p) + (N - k) * jnp.log1p(-p))
        a, b = p * s, (1 - p) * s
        beta_binom = -(gammaln(k + a) - gammaln(a) + gammaln(N - k + b) - gammaln(b))
        # multinomial: -k log q_i, q_i = p_i / sum_group p; Dirichlet: -log(Gamma(k + s q) / Gamma(s q))
        totals = jnp.zeros(len(self.code))
        for g in np.unique(self.group[self.code == 3]):
            members = self.code == 3
            members = members & (self.group == g)
            totals = totals + jnp.where(members, jnp.sum(jnp.where(members, p, 0.0)), 0.0)
        q = p / jnp.where(self.code == 3, totals, 1.0)
        multi = -k * jnp.log(q)
        dirichlet = -(gammaln(k + s * q) - gammaln(s * q))
        count = jnp.where(self.code == 2, jnp.where(over, beta_binom, binom), jnp.where(over, dirichlet, multi))
        nll = jnp.where(self.code == 1, gauss, jnp.where(self.code >= 2, count, 0.0))
        return jnp.where(self.fitted, nll + self.constant, 0.0)

    def nll(self, pred) -> jnp.ndarray:
        return jnp.sum(self.per_row(pred))

    def residuals(self, pred) -> np.ndarray:
        """Standardised residuals (observed - predicted) / SD with the total variance: SE_total
        for means, ``sqrt(p (1 - p) [1 + (N - 1) rho] / N)`` for proportions (NaN for rows
        without a likelihood)."""
        pred = np.asarray(pred, dtype=float)
        out = np.full(pred.shape, np.nan)
        g = self.code == 1
        out[g] = (self.observed[g] - pred[g]) / self.se[g]
        b = (self.code >= 2) & np.isfinite(self.N)
        p = np.clip(pred[b], 1e-9, 1 - 1e-9)
        N, rho = self.N[b], self.rho[b]
        out[b] = (self.k[b] / N - p) / np.sqrt(p * (1 - p) * (1 + (N - 1) * rho) / N)
        return out
