r"""Simulation from a fitted population model on the data's own design, and the VPC.

A replicate draws for every subject :math:`\eta_i \sim N(0, \Omega)` and for every observation
:math:`\epsilon_{ij} \sim N(0, 1)`, and gives
:math:`y_{ij} = f_{ij}(\eta_i) + \sqrt{V(f_{ij})}\,\epsilon_{ij}` (on the log scale for
``log_additive``, then exponentiated).  The visual predictive check bins observation times
(equal-count bins), and per bin and output compares the observed 5th/50th/95th percentiles
with the median and 90% interval of the same percentiles over the replicates (Bergstrand M et
al. (2011) AAPS J 13:143-151 describe the method; this is the plain, uncorrected VPC).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._objective import prediction

PERCENTILES = (5.0, 50.0, 95.0)


def _simulate_subject(model, params, subject, key):
    k_eta, k_eps = jax.random.split(key)
    n_eta = len(model.etas)
    eta = jnp.linalg.cholesky(params.omega) @ jax.random.normal(k_eta, (n_eta,)) if n_eta else jnp.zeros(0)
    f = prediction(model, params, eta, subject)
    safe = jnp.where(subject.obs_mask, f, 1.0)
    output = subject.obs_output
    sd = jnp.sqrt(model.error.variance(safe, params.sigma, output))
    y = model.error.transform(safe, output) + sd * jax.random.normal(k_eps, f.shape)
    return jnp.where(model.error.on_log_scale(output), jnp.exp(y), y)


def simulate_observations(model, params, subjects, n_replicates: int, seed: int = 0) -> np.ndarray:
    """Simulated observations, shape (replicates, subjects, observations); padding is junk."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n_replicates * subjects.n_subjects)
    keys = keys.reshape(n_replicates, subjects.n_subjects, *keys.shape[1:])
    one = jax.vmap(lambda subj, k: _simulate_subject(model, params, subj, k))
    return np.asarray(jax.jit(jax.vmap(lambda ks: one(subjects, ks)))(keys))


def _bins(times: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each time: equal-count bins on the distinct times."""
    distinct = np.unique(times)
    if distinct.size <= n_bins:
        return np.searchsorted(distinct, times)
    edges = np.unique(np.quantile(times, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, times, side="right")


def vpc(result, *, n_replicates: int = 200, n_bins: int = 8, seed: int = 0) -> pd.DataFrame:
    """The VPC table: per output and time bin, observed percentiles and the simulated ones'
    median and 90% interval (columns ``obs_p5``, ``sim_p5_median``, ``sim_p5_lo``, ...)."""
    if n_replicates < 20:
        raise ValueError(f"n_replicates must be >= 20 for 90% intervals, got {n_replicates}")
    s = result.subjects
    sims = simulate_observations(result.model, result.params, s, n_replicates, seed)
    mask = np.asarray(s.obs_mask)
    times, dv, output = np.asarray(s.obs_time)[mask], np.asarray(s.dv)[mask], np.asarray(s.obs_output)[mask]
    sim = sims[:, mask]
    rows = []
    for out in np.unique(output):
        sel = output == out
        bins = _bins(times[sel], n_bins)
        for b in np.unique(bins):
            idx = np.flatnonzero(sel)[bins == b]
            row = {"output": int(out), "bin": int(b), "time": float(np.median(times[idx])), "n_obs": idx.size}
            for p in PERCENTILES:
                sim_p = np.percentile(sim[:, idx], p, axis=1)
                row[f"obs_p{p:g}"] = float(np.percentile(dv[idx], p))
                row[f"sim_p{p:g}_median"] = float(np.median(sim_p))
                row[f"sim_p{p:g}_lo"], row[f"sim_p{p:g}_hi"] = (float(x) for x in np.percentile(sim_p, [5, 95]))
            rows.append(row)
    return pd.DataFrame(rows)
