"""The error norm of the step-size control: per patient, over the states on axis 0.

An adaptive step is accepted when the norm of its scaled error estimate is below 1, each state
``i`` scaled by ``w_i = atol + rtol max(|y0_i|, |y1_i|)`` (diffrax's ``PIDController``).  The
norm is taken over the ``m`` states of each patient (axis 0 of every leaf of the ODE state, the
batch axes after it, the same for every leaf) and then the largest over the patients of a batch,
so every patient of a batch that shares one step passes the test it would pass alone:

    "rms": max over patients of sqrt( (1/m) sum_i (e_i / w_i)^2 )   (weighted RMS)
    "max": max over patients and states of |e_i / w_i|

The weighted RMS norm is CVODE's (SUNDIALS ``N_VWrmsNorm``: libroadrunner, NONMEM's ADVAN14);
LSODA (ODEPACK ``DMNORM``: scipy's LSODA, NONMEM's ADVAN13, mrgsolve, rxode2's default) uses the
max norm.  The max norm is stricter by up to ``sqrt(m)`` (one state carrying the whole error).
The default is the RMS norm; benchmarks/HISTORY.md (eleventh session) compares the two at equal
accuracy of the final states.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ERROR_NORMS = ("rms", "max")


def patient_rms_norm(scaled_error) -> jax.Array:
    """Largest per-patient weighted RMS over the states (axis 0 of every leaf).  The squares are
    added state by state in a fixed order (a reduction's order would depend on XLA's code
    generation, and the step sizes with it).  The square root is taken only of a positive value
    (finite derivatives at zero error); NaN stays NaN, so the controller rejects the step as with
    the max norm.  No states: 0."""
    rows = [row for leaf in jax.tree_util.tree_leaves(scaled_error) for row in jnp.atleast_1d(leaf)]
    if not rows:
        return jnp.zeros(())
    total = jnp.square(rows[0])
    for row in rows[1:]:  # one addition after another: the same sum however XLA vectorises
        total = total + jnp.square(row)
    worst = jnp.max(total / len(rows))
    positive = worst > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, worst, 1.0)), worst)


def patient_max_norm(scaled_error) -> jax.Array:
    """Largest absolute scaled error over all states of all patients (0 for no states)."""
    leaves = [jnp.max(jnp.abs(leaf)) for leaf in jax.tree_util.tree_leaves(scaled_error) if jnp.size(leaf)]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros(())


def error_norm(name: str):
    """The norm function named ``name`` (one of :data:`ERROR_NORMS`)."""
    return {"rms": patient_rms_norm, "max": patient_max_norm}[name]
