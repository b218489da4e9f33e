"""The step controller's error norm (lenapk._core._error_norm): values against numpy, and a
patient in a batch meeting its own test (each patient's RMS, the worst patient setting the step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lenapk
from lenapk._core import SolverSettings, solve_days_jit
from lenapk._core._error_norm import patient_max_norm, patient_rms_norm
from lenapk.models.turnover import TwoCompartmentTurnover


def test_norms_against_numpy():
    """States on axis 0 (split over two pytree leaves), patients after: the largest per-patient
    root mean square, and the largest absolute value."""
    x = np.random.default_rng(3).normal(size=(19, 5)) * np.linspace(0.1, 3.0, 5)
    tree = {"a": jnp.asarray(x[:12]), "b": jnp.asarray(x[12:])}
    np.testing.assert_allclose(patient_rms_norm(tree), np.sqrt(np.mean(x**2, axis=0)).max(), rtol=1e-14)
    np.testing.assert_allclose(patient_rms_norm(jnp.asarray(x[:, 2])), np.sqrt(np.mean(x[:, 2] ** 2)), rtol=1e-14)
    assert float(patient_max_norm(tree)) == np.abs(x).max()


def test_rms_norm_at_zero_and_nan():
    """Zero error: norm 0 with a finite gradient; a NaN anywhere gives NaN (the step is rejected)."""
    zero = jnp.zeros((4, 3))
    assert float(patient_rms_norm(zero)) == 0.0
    assert np.all(np.isfinite(jax.grad(patient_rms_norm)(zero)))
    assert np.isnan(float(patient_rms_norm(zero.at[2, 1].set(jnp.nan))))


def test_unknown_norm_refused():
    with pytest.raises(ValueError, match=r"settings.error_norm must be one of \('rms', 'max'\), got 'l2'"):
        SolverSettings(error_norm="l2")


@pytest.mark.parametrize("norm", ["rms", "max"])
def test_a_patient_in_a_batch_takes_its_own_steps(norm):
    """A dosed patient next to an undosed one (at its steady state, error exactly 0) gets the
    steps it takes alone: its trajectory in the batch equals its solve alone.  A norm that
    averaged over the whole batch would let the undosed patient halve the dosed one's squared
    error and change its steps."""
    model = TwoCompartmentTurnover()
    p = model.default_params()
    settings = SolverSettings(clock=None, error_norm=norm)
    doses = np.full(6, 100.0)
    alone = solve_days_jit(model, p, jnp.asarray(doses), settings=settings)
    pair = lenapk.ParameterSet({k: jnp.full(2, v) for k, v in p.as_floats().items()})
    both = solve_days_jit(model, pair, jnp.asarray(np.stack([doses, 0.0 * doses])), settings=settings)
    np.testing.assert_array_equal(np.asarray(both.day_obs["biomarker"][1]), float(p["r0"]))
    np.testing.assert_allclose(both.day_obs["biomarker"][0], alone.day_obs["biomarker"], rtol=1e-13)
