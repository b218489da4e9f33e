"""The step controller's error norm (lenapk._core._error_norm): values against numpy, and a
patient in a batch meeting its own test (each patient's RMS, the worst patient setting the step)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lenapk
from lenapk._core import ObservableSpec, OneCompartment, ParameterSpec, PKConstants, SolverSettings, solve_days_jit
from lenapk._core._error_norm import patient_max_norm, patient_rms_norm


def test_norms_against_numpy():
    """States on axis 0 (split over two pytree leaves), patients after: the largest per-patient
    root mean square, and the largest absolute value."""
    x = np.random.default_rng(3).normal(size=(19, 5)) * np.linspace(0.1, 3.0, 5)
    tree = {"a": jnp.asarray(x[:12]), "b": jnp.asarray(x[12:])}
    np.testing.assert_allclose(patient_rms_norm(tree), np.sqrt(np.mean(x**2, axis=0)).max(), rtol=1e-14)
    np.testing.assert_allclose(patient_rms_norm(jnp.asarray(x[:, 2])), np.sqrt(np.mean(x[:, 2] ** 2)), rtol=1e-14)
    assert float(patient_max_norm(tree)) == np.abs(x).max()


def test_no_states_gives_zero():
    empty = jnp.zeros((0, 3))
    assert float(patient_rms_norm(empty)) == 0.0 and float(patient_max_norm(empty)) == 0.0


def test_rms_norm_at_zero_and_nan():
    """Zero error: norm 0 with a finite gradient; a NaN anywhere gives NaN (the step is rejected)."""
    zero = jnp.zeros((4, 3))
    assert float(patient_rms_norm(zero)) == 0.0
    assert np.all(np.isfinite(jax.grad(patient_rms_norm)(zero)))
    assert np.isnan(float(patient_rms_norm(zero.at[2, 1].set(jnp.nan))))


def test_unknown_norm_refused():
    with pytest.raises(ValueError, match=r"settings.error_norm must be one of \('rms', 'max'\), got 'l2'"):
        SolverSettings(error_norm="l2")


class Chain(lenapk.AbstractModel):
    """Test model: inhibited production feeding a two-compartment transit chain, all states 1 at
    baseline and exactly at rest without drug (every derivative 0)."""

    state_names: ClassVar = ("response", "transit", "marker")
    parameter_specs: ClassVar = (
        ParameterSpec("kout", 0.5, "1/day", "turnover rate", "test"),
        ParameterSpec("ktr", 2.0, "1/day", "transit rate", "test"),
        ParameterSpec("ic50", 1.0, "ng/mL", "concentration of half inhibition", "test"),
    )
    observable_specs: ClassVar = (ObservableSpec("marker", "-", "end of the chain"),)
    pk: ClassVar = OneCompartment()
    populations: ClassVar = {"toy": {}}
    time_unit: ClassVar = "day"

    def pk_constants(self, p):
        one = jnp.ones_like(p["kout"])
        return PKConstants(ka=1.5 * one, k=0.2 * one, v=50.0 * one)

    def initial_state(self, c):
        one = jnp.ones_like(c["kout"])
        return jnp.stack([one, one, one])

    def rhs(self, t, y, conc, c):
        inhibition = conc / (c["ic50"] + conc)
        return jnp.stack(
            [c["kout"] * (1.0 - inhibition) - c["kout"] * y[0], c["ktr"] * (y[0] - y[1]), c["ktr"] * (y[1] - y[2])]
        )

    def observables(self, y, conc, c):
        return {"marker": y[2]}


def test_a_patient_in_a_batch_takes_its_own_steps():
    """A dosed patient next to an undosed one (at rest, error exactly 0) gets the steps it takes
    alone: its trajectory in the batch equals its solve alone, with either norm.  A norm that
    averaged over the whole batch would let the undosed patient halve the dosed one's squared
    error and change its steps.  The two norms give different steps on this three-state model
    (the setting reaches the controller)."""
    model = Chain()
    p = model.default_params()
    pair = lenapk.ParameterSet({k: jnp.full(2, v) for k, v in p.as_floats().items()})
    doses = np.full(6, 100.0)
    marker = {}
    for norm in ("rms", "max"):
        settings = SolverSettings(clock=None, error_norm=norm)
        alone = solve_days_jit(model, p, jnp.asarray(doses), settings=settings).day_obs["marker"]
        both = solve_days_jit(model, pair, jnp.asarray(np.stack([doses, 0.0 * doses])), settings=settings)
        np.testing.assert_array_equal(np.asarray(both.day_obs["marker"][1]), 1.0)
        np.testing.assert_allclose(both.day_obs["marker"][0], alone, rtol=1e-13, err_msg=norm)
        marker[norm] = np.asarray(alone)
    assert np.max(np.abs(marker["rms"] / marker["max"] - 1.0)) > 1e-10
