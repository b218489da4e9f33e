"""lenapk._core.fastmath.log against jnp.log: values, edge cases and derivatives."""

import jax
import jax.numpy as jnp
import numpy as np

from lenapk._core import fastmath


def test_log_matches_jnp_log_to_a_few_ulp_over_the_float64_range():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-300, 300, 20000),
            rng.uniform(0.5, 2.0, 20000),  # around 1, where the mantissa switches
            [1.0, 2.0, 0.5, np.sqrt(0.5), np.nextafter(np.sqrt(0.5), 1), 5.22, 150.0, 1e-3, np.finfo(float).tiny],
        ]
    )
    got = np.asarray(jax.jit(fastmath.log)(jnp.asarray(x)))
    want = np.log(x)
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=2.5e-16)


def test_log_edge_cases_follow_jnp_log():
    x = jnp.asarray([0.0, -1.0, jnp.inf, jnp.nan, -jnp.inf])
    got = np.asarray(fastmath.log(x))
    assert got[0] == -np.inf and got[2] == np.inf
    assert np.isnan(got[1]) and np.isnan(got[3]) and np.isnan(got[4])


def test_log_derivative_is_one_over_x_forward_and_reverse():
    x = jnp.asarray([1e-6, 0.3, 1.0, 7.5, 1e8])
    fwd = jax.jvp(fastmath.log, (x,), (jnp.ones_like(x),))[1]
    rev = jax.vmap(jax.grad(fastmath.log))(x)
    np.testing.assert_allclose(fwd, 1.0 / x, rtol=1e-15)
    np.testing.assert_allclose(rev, 1.0 / x, rtol=1e-15)
    second = jax.vmap(jax.grad(jax.grad(fastmath.log)))(x)
    np.testing.assert_allclose(second, -1.0 / x**2, rtol=1e-14)
