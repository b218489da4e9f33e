"""Closed-form PK against scipy's solve_ivp of the PK ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from lenapk import exposure


def _ode_concentrations(doses, ka, k, v, t_eval_h):
    def rhs(t, y):
        return [-ka * y[0], ka * y[0] - k * y[1]]

    y = np.zeros(2)
    out = []
    for d, dose in enumerate(doses):
        y = y.copy()
        y[0] += dose
        ts = [t for t in t_eval_h if d * 24 <= t < (d + 1) * 24]
        sol = solve_ivp(rhs, (d * 24, (d + 1) * 24), y, method="DOP853", rtol=1e-12, atol=1e-14,
                        t_eval=ts + [(d + 1) * 24], dense_output=False)
        out += list(1000 * sol.y[1, :-1] / v)
        y = sol.y[:, -1]
    return np.array(out)


def _closed_form(doses, ka, k, v, t_eval_h):
    pk = jnp.zeros(2)
    out = []
    for d, dose in enumerate(doses):
        pk = pk.at[0].add(dose)
        for t in [t for t in t_eval_h if d * 24 <= t < (d + 1) * 24]:
            out.append(float(exposure.concentration(t - d * 24, pk, ka, k, v)))
        pk = exposure.advance(pk, 24.0, ka, k)
    return np.array(out)


@pytest.mark.parametrize("ka", [3.0, 12.0 / 68.8, 12.0 / 68.8 * (1 + 1e-9), 0.5])
def test_closed_form_matches_ode_over_many_doses(ka):
    k, v = 12.0 / 68.8, 68.8
    doses = [10.0] * 20 + [0.0] * 3 + [25.0] * 7
    t_eval = list(np.arange(0, 30 * 24, 1.7))
    ref = _ode_concentrations(doses, ka, k, v, t_eval)
    got = _closed_form(doses, ka, k, v, t_eval)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)


def test_exprel_smooth_through_zero():
    xs = jnp.array([-1e-3, -1e-7, 0.0, 1e-7, 1e-3])
    ref = np.array([np.expm1(x) / x if x != 0 else 1.0 for x in np.asarray(xs)])
    np.testing.assert_allclose(np.asarray(exposure.exprel(xs)), ref, rtol=1e-12)
    grads = jax.vmap(jax.grad(exposure.exprel))(xs)
    assert np.all(np.isfinite(np.asarray(grads)))
    np.testing.assert_allclose(float(grads[2]), 0.5, rtol=1e-9)


def test_gradient_finite_at_ka_equal_k():
    k, v = 0.2, 50.0
    f = lambda ka: exposure.concentration(5.0, jnp.array([10.0, 0.0]), ka, k, v)  # noqa: E731
    g = jax.grad(f)(0.2)
    fd = (f(0.2 + 1e-6) - f(0.2 - 1e-6)) / 2e-6
    assert np.isfinite(float(g)) and abs(float(g) - float(fd)) < 1e-5 * abs(float(fd))


def test_exposure_proportional_to_dose():
    ka, k, v = 3.0, 0.17, 68.8
    t = jnp.linspace(0.1, 24, 20)
    c5 = exposure.concentration(t, jnp.array([5.0, 0.0]), ka, k, v)
    c25 = exposure.concentration(t, jnp.array([25.0, 0.0]), ka, k, v)
    np.testing.assert_allclose(np.asarray(c25), 5 * np.asarray(c5), rtol=1e-13)


def test_covariates_follow_hughes():
    from lenapk.parameters import ParameterSet

    p = ParameterSet({"ka": 3.0, "cl": 12.0, "v": 68.8, "ffm": 55.0, "crcl": 45.0})
    ka, k, v = exposure.pk_constants(p)
    assert float(v) == pytest.approx(68.8)
    assert float(k) == pytest.approx(12.0 * 0.5**0.224 / 68.8)
