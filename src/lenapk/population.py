"""Population model: between-patient variability and covariates for virtual cohorts.

Individual parameters are log-normal around the typical values::

    theta_i = theta * exp(eta_i),   eta_i ~ N(0, Omega)

with ``Omega`` built from the model's ``ParameterSpec.omega2`` (diagonal) and
``omega_covariances`` (e.g. cov(CL, V) = 0.247, Hughes 2019).  Covariates (patient
characteristics) come from a user's DataFrame of patients or are sampled from the documented
distributions in :data:`COVARIATE_DISTRIBUTIONS`.

Reproducibility: patient ``i``'s draws use the key ``fold_in(fold_in(PRNGKey(seed), stream), i)``
and therefore depend only on ``(seed, i)``: the first k patients of a cohort equal the k-patient
cohort with the same seed, however the cohort is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .model import Model
from .parameters import ParameterSet

ETA_STREAM, COVARIATE_STREAM = 0, 1


@dataclass(frozen=True)
class CovariateDistribution:
    """How one covariate is sampled: log-normal (median, CV) truncated to [low, high], or
    Bernoulli (probability)."""

    kind: str  # "lognormal" or "bernoulli"
    median: float = 0.0
    cv: float = 0.0
    low: float = 0.0
    high: float = np.inf
    probability: float = 0.0
    source: str = "assumed"


_LN = "lognormal"
# Per setting (untreated / relapsed).  Medians follow the trials in data/ where they report a
# value; everything else is an assumption stated here and in docs/model.md.
COVARIATE_DISTRIBUTIONS: dict[str, dict[str, CovariateDistribution]] = {
    "untreated": {
        "crcl": CovariateDistribution(_LN, 85.0, 0.30, 20.0, 200.0, source="assumed; median age 59 (early-stage trial)"),
        "ffm": CovariateDistribution(_LN, 55.0, 0.15, 30.0, 100.0, source="Hughes 2019 reference FFM; CV assumed"),
        "alc0": CovariateDistribution(_LN, 30.0, 0.80, 5.0, 400.0, source="assumed, early-stage CLL"),
        "anc0": CovariateDistribution(_LN, 4.0, 0.35, 1.5, 15.0, source="assumed (normal-range ANC)"),
        "plt0": CovariateDistribution(_LN, 180.0, 0.30, 60.0, 500.0, source="assumed"),
        "igg0": CovariateDistribution(_LN, 690.0, 0.30, 150.0, 2500.0, source="early-stage trial mean 722 mg/dL; CV assumed"),
        "igm0": CovariateDistribution(_LN, 90.0, 0.60, 10.0, 1000.0, source="early-stage trial mean 109 mg/dL; CV assumed"),
        "iga0": CovariateDistribution(_LN, 40.0, 0.65, 5.0, 500.0, source="early-stage trial mean 49 mg/dL; CV assumed"),
        "del17p": CovariateDistribution("bernoulli", probability=0.15, source="assumed, high-risk early-stage"),
        "ighv_unmutated": CovariateDistribution("bernoulli", probability=0.65, source="assumed, high-risk early-stage"),
        "relapsed": CovariateDistribution("bernoulli", probability=0.0, source="setting"),
    },
    "relapsed": {
        "crcl": CovariateDistribution(_LN, 75.0, 0.35, 20.0, 200.0, source="assumed, older pretreated patients"),
        "ffm": CovariateDistribution(_LN, 55.0, 0.15, 30.0, 100.0, source="Hughes 2019 reference FFM; CV assumed"),
        "alc0": CovariateDistribution(_LN, 40.0, 1.0, 5.0, 500.0, source="assumed, relapsed CLL"),
        "anc0": CovariateDistribution(_LN, 2.8, 0.45, 1.0, 15.0, source="assumed (pretreated marrow)"),
        "plt0": CovariateDistribution(_LN, 120.0, 0.45, 30.0, 500.0, source="assumed (pretreated marrow)"),
        "igg0": CovariateDistribution(_LN, 550.0, 0.40, 100.0, 2500.0, source="assumed"),
        "igm0": CovariateDistribution(_LN, 40.0, 0.70, 5.0, 1000.0, source="assumed"),
        "iga0": CovariateDistribution(_LN, 45.0, 0.70, 5.0, 500.0, source="assumed"),
        "del17p": CovariateDistribution("bernoulli", probability=0.3, source="assumed, Ferrajoli cohort"),
        "ighv_unmutated": CovariateDistribution("bernoulli", probability=0.7, source="assumed"),
        "relapsed": CovariateDistribution("bernoulli", probability=1.0, source="setting"),
    },
}


def _covariate_names(model: Model) -> tuple[str, ...]:
    return tuple(s.name for s in model.parameter_specs if s.kind == "covariate")


def omega_matrix(model: Model) -> tuple[tuple[str, ...], np.ndarray]:
    """Names of the parameters with variability and their covariance matrix Omega (log scale)."""
    names = tuple(s.name for s in model.parameter_specs if s.omega2 > 0)
    idx = {n: i for i, n in enumerate(names)}
    omega = np.diag([s.omega2 for s in model.parameter_specs if s.omega2 > 0])
    for (a, b), cov in model.omega_covariances.items():
        if a not in idx or b not in idx:
            raise ValueError(f"omega_covariances names ({a}, {b}) without omega2 > 0")
        omega[idx[a], idx[b]] = omega[idx[b], idx[a]] = cov
    if np.any(np.linalg.eigvalsh(omega) <= 0):
        raise ValueError("the model's Omega matrix is not positive definite")
    return names, omega


def _patient_keys(seed: int, stream: int, start: int, n: int):
    base = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + n))


def draw_etas(model: Model, n: int, seed: int, *, start: int = 0) -> tuple[tuple[str, ...], jnp.ndarray]:
    """Random effects of patients ``start .. start+n-1``: names and an array (n, k)."""
    names, omega = omega_matrix(model)
    chol = jnp.asarray(np.linalg.cholesky(omega))
    keys = _patient_keys(seed, ETA_STREAM, start, n)
    z = jax.vmap(lambda k: jax.random.normal(k, (len(names),), dtype=jnp.float64))(keys)
    return names, z @ chol.T


def sample_covariates(n: int, seed: int, *, setting: str = "untreated", start: int = 0) -> pd.DataFrame:
    """Covariates of patients ``start .. start+n-1`` drawn from :data:`COVARIATE_DISTRIBUTIONS`."""
    if setting not in COVARIATE_DISTRIBUTIONS:
        raise ValueError(f"setting must be one of {sorted(COVARIATE_DISTRIBUTIONS)}, got {setting!r}")
    dists = COVARIATE_DISTRIBUTIONS[setting]
    keys = _patient_keys(seed, COVARIATE_STREAM, start, n)
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (len(dists),), dtype=jnp.float64))(keys))
    z = np.asarray(jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (len(dists),), dtype=jnp.float64))(keys))
    cols = {}
    for j, (name, d) in enumerate(dists.items()):
        if d.kind == "bernoulli":
            cols[name] = (u[:, j] < d.probability).astype(float)
        else:
            sigma = np.sqrt(np.log1p(d.cv**2))
            cols[name] = np.clip(d.median * np.exp(sigma * z[:, j]), d.low, d.high)
    df = pd.DataFrame(cols)
    df.insert(0, "patient", np.arange(start, start + n))
    return df


def validate_patients(patients: pd.DataFrame, model: Model) -> pd.DataFrame:
    """Check a user's table of patients (one row each, a column per covariate).

    Missing covariate columns, non-numeric or NaN values and impossible values (negative or
    zero where the covariate must be positive, 0/1 flags other than 0 or 1) raise
    ``ValueError`` naming the column and the first bad row.
    """
    if not isinstance(patients, pd.DataFrame):
        raise ValueError(f"patients must be a pandas DataFrame, got {type(patients).__name__}")
    if len(patients) == 0:
        raise ValueError("patients: the table has no rows")
    specs = {s.name: s for s in model.parameter_specs if s.kind == "covariate"}
    missing = [c for c in specs if c not in patients.columns]
    if missing:
        raise ValueError(f"patients: missing covariate column(s) {missing}; expected {list(specs)}")
    out = patients.copy()
    for name, s in specs.items():
        vals = pd.to_numeric(out[name], errors="coerce")
        bad = vals.isna() | ~np.isfinite(vals)
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"patients.{name}: row {r} must be a finite number, got {patients[name].iloc[r]!r}")
        if s.unit == "0/1":
            bad = ~vals.isin([0, 1])
            expect = "0 or 1"
        else:
            bad = vals <= 0
            expect = f"> 0 {s.unit}"
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"patients.{name}: row {r} must be {expect}, got {vals.iloc[r]!r}")
        out[name] = vals.astype(float)
    if "alc0" in specs and "normal_lymph" in {s.name for s in model.parameter_specs}:
        normal = next(s.value for s in model.parameter_specs if s.name == "normal_lymph")
        bad = out["alc0"] <= normal
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"patients.alc0: row {r} must exceed the non-clonal lymphocyte count {normal} x10^9/L, "
                f"got {out['alc0'].iloc[r]!r}"
            )
    if "patient" not in out.columns:
        out.insert(0, "patient", np.arange(len(out)))
    return out


def individual_parameters(
    model: Model, typical: ParameterSet, covariates: pd.DataFrame | dict, eta_names, etas
) -> ParameterSet:
    """Per-patient parameters (arrays of shape (n,)): ``theta * exp(eta)`` for the parameters
    with variability, the patients' covariates, and the typical value for the rest.  Pure JAX
    in ``typical`` and ``etas``, so it can be differentiated (common random numbers)."""
    etas = jnp.asarray(etas)
    n = etas.shape[0]
    values = {}
    cov_names = set(_covariate_names(model))
    for name in typical.keys():
        if name in cov_names:
            values[name] = jnp.asarray(np.asarray(covariates[name], dtype=float))
        else:
            values[name] = jnp.broadcast_to(typical[name], (n,))
    for j, name in enumerate(eta_names):
        values[name] = values[name] * jnp.exp(etas[:, j])
    return ParameterSet(values)


@dataclass(frozen=True)
class VirtualPopulation:
    """Patients ``start .. start+n-1``: covariates (DataFrame), random effects, and a function
    of the typical parameters giving the individual ParameterSet."""

    covariates: pd.DataFrame
    eta_names: tuple[str, ...]
    etas: jnp.ndarray

    @property
    def n(self) -> int:
        return int(self.etas.shape[0])

    def parameters(self, model: Model, typical: ParameterSet) -> ParameterSet:
        return individual_parameters(model, typical, self.covariates, self.eta_names, self.etas)


def virtual_population(
    model: Model,
    n: int | None = None,
    seed: int = 0,
    *,
    setting: str = "untreated",
    patients: pd.DataFrame | None = None,
    start: int = 0,
    variability: bool = True,
) -> VirtualPopulation:
    """Draw (or take from ``patients``) covariates and random effects for a virtual cohort."""
    if patients is not None:
        cov = validate_patients(patients, model)
        if n is not None and n != len(cov):
            raise ValueError(f"n ({n}) differs from the number of patients in the table ({len(cov)})")
        cov = cov.iloc[start:] if start else cov
        n = len(cov)
    else:
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        cov = sample_covariates(int(n), seed, setting=setting, start=start)
    names, etas = draw_etas(model, int(n), seed, start=start)
    if not variability:
        etas = jnp.zeros_like(etas)
    return VirtualPopulation(covariates=cov.reset_index(drop=True), eta_names=names, etas=etas)
