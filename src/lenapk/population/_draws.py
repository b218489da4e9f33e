"""Between-patient variability and covariates of virtual patients.

Individual parameters are log-normal around the typical values::

    theta_i = theta * exp(eta_i),   eta_i ~ N(0, Omega)

with ``Omega`` from the model's ``ParameterSpec.omega2`` (diagonal) and ``omega_covariances``
(e.g. cov(CL, V) = 0.247 in Hughes 2019).  Covariates come from a user's table of patients or
are drawn from the distributions the model declares for a setting (``model.populations``).

Reproducibility: patient ``i``'s draws use the key ``fold_in(fold_in(PRNGKey(seed), stream), i)``
and depend only on ``(seed, i)``: the first k patients of a cohort equal the k-patient cohort
with the same seed, however the cohort is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._core import AbstractModel, ParameterSet, omega_matrix
from .._core import _validate as V
from ._patients import validate_patients

ETA_STREAM, COVARIATE_STREAM = 0, 1


def _patient_keys(seed: int, stream: int, start: int, n: int):
    base = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + n))


def draw_etas(model: AbstractModel, n: int, seed: int, *, start: int = 0) -> tuple[tuple[str, ...], jnp.ndarray]:
    """Random effects of patients ``start .. start+n-1``: names and an array (n, k)."""
    names, omega = omega_matrix(model)
    chol = jnp.asarray(np.linalg.cholesky(omega)) if names else jnp.zeros((0, 0))
    keys = _patient_keys(seed, ETA_STREAM, start, n)
    z = jax.vmap(lambda k: jax.random.normal(k, (len(names),), dtype=jnp.float64))(keys)
    return names, z @ chol.T


def check_setting(model: AbstractModel, setting: str | None) -> str:
    """``setting`` (default: the model's first population) if the model declares it."""
    setting = model.default_population if setting is None else setting
    if setting not in model.populations:
        raise ValueError(
            f"setting must be one of {sorted(model.populations)} (the populations of "
            f"{type(model).__name__}), got {setting!r}"
        )
    return setting


def sample_covariates(
    model: AbstractModel, n: int, seed: int, *, setting: str | None = None, start: int = 0
) -> pd.DataFrame:
    """Covariates of patients ``start .. start+n-1`` drawn from ``model.populations[setting]``
    (one uniform and one normal number per patient and covariate)."""
    dists = model.populations[check_setting(model, setting)]
    keys = _patient_keys(seed, COVARIATE_STREAM, start, n)
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (len(dists),), dtype=jnp.float64))(keys))
    z = np.asarray(
        jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (len(dists),), dtype=jnp.float64))(keys)
    )
    df = pd.DataFrame({name: d.sample(u[:, j], z[:, j]) for j, (name, d) in enumerate(dists.items())})
    df.insert(0, "patient", np.arange(start, start + n))
    return df


FILLS = ("drawn", "typical")


def fill_covariates(
    patients: pd.DataFrame, model: AbstractModel, *, fill: str, setting: str | None = None, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A patients table with the model's missing covariate columns filled in, and what was filled
    (column -> ``"drawn"`` or ``"typical"``).

    ``fill="drawn"``: each missing covariate of row ``i`` is drawn from ``model.populations[setting]``
    with the patient's own random numbers (``seed``, ``i``), as a drawn cohort would: independently
    of the covariates given (conditional on nothing).  ``fill="typical"``: the typical value in
    that population (median of a log-normal, most likely value of a 0/1 characteristic), or the
    model's typical value for a covariate the population does not describe.  Columns given are
    kept as they are (validate with :func:`validate_patients`)."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {list(FILLS)}, got {fill!r}")
    if not isinstance(patients, pd.DataFrame):
        raise ValueError(f"patients must be a pandas DataFrame, got {type(patients).__name__}")
    missing = [c for c in model.covariate_names if c not in patients.columns]
    out = patients.copy()
    if not missing:
        return out, {}
    if fill == "drawn":
        drawn = sample_covariates(model, len(out), seed, setting=setting)
        for c in missing:
            out[c] = drawn[c].to_numpy()
    else:
        dists, typical = model.populations[check_setting(model, setting)], model.default_params()
        for c in missing:
            out[c] = dists[c].typical() if c in dists else float(typical[c])
    return out, {c: fill for c in missing}


def individual_parameters(model: AbstractModel, typical: ParameterSet, covariates, eta_names, etas) -> ParameterSet:
    """Per-patient parameters (arrays of shape (n,)): ``theta * exp(eta)`` for the parameters
    with variability, the patients' covariates, and the typical value for the rest.  Pure JAX
    in ``typical`` and ``etas``, so it can be differentiated (common random numbers)."""
    etas = jnp.asarray(etas)
    n = etas.shape[0]
    cov_names = set(model.covariate_names)
    values = {}
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
    """Patients ``start .. start+n-1``: covariates (DataFrame) and random effects; their
    parameters for given typical values come from :meth:`parameters`."""

    covariates: pd.DataFrame
    eta_names: tuple[str, ...]
    etas: jnp.ndarray

    @property
    def n(self) -> int:
        return int(self.etas.shape[0])

    def parameters(self, model: AbstractModel, typical: ParameterSet) -> ParameterSet:
        return individual_parameters(model, typical, self.covariates, self.eta_names, self.etas)


def virtual_population(
    model: AbstractModel,
    n: int | None = None,
    seed: int = 0,
    *,
    setting: str | None = None,
    patients: pd.DataFrame | None = None,
    start: int = 0,
    variability: bool = True,
) -> VirtualPopulation:
    """Draw (or take from ``patients``) covariates and random effects for a virtual cohort.

    ``setting``: one of ``model.populations`` (default: the model's first); ``variability=False``
    sets every random effect to 0 (typical patients with their own covariates)."""
    V.flag("variability", variability)
    if patients is not None:
        cov = validate_patients(patients, model)
        if n is not None and n != len(cov):
            raise ValueError(f"n ({n}) differs from the number of patients in the table ({len(cov)})")
        cov = cov.iloc[start:] if start else cov
        n = len(cov)
    else:
        n = V.count("n", n, 1)
        cov = sample_covariates(model, n, seed, setting=setting, start=start)
    names, etas = draw_etas(model, int(n), seed, start=start)
    if not variability:
        etas = jnp.zeros_like(etas)
    return VirtualPopulation(covariates=cov.reset_index(drop=True), eta_names=names, etas=etas)
