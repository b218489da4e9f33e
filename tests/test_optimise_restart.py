"""The calibration's optimiser restarts a stale quasi-Newton memory when its line search fails,
on an ill-conditioned quadratic with a known minimum."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lenapk.calibration._objective import Objective
from lenapk.calibration._optimise import _Run, minimise

SCALES = np.array([1.0, 100.0])  # f = x^2 + 100 y^2, minimum 0 at the origin


class _Quadratic:
    """What :func:`minimise` reads of an objective, for f(x) = sum SCALES x^2 in a wide box."""

    lower, upper = np.full(2, -10.0), np.full(2, 10.0)
    has_rules, frozen, temperature = False, {}, 0.0
    binding, projected = Objective.binding, Objective.projected

    def value_and_grad(self, x):
        x = np.asarray(x, dtype=float)
        return float(np.sum(SCALES * x**2)), 2 * SCALES * x


def _stale_after_first_step() -> optax.GradientTransformation:
    """Steepest descent from a fresh state; afterwards the gradient plus a component 10^4 times
    its length along the steep axis: a stale memory's direction, along which the Armijo search
    (12 halvings) finds no decrease, or which is not downhill at all."""

    def init(params):
        return jnp.zeros((), dtype=jnp.int32)

    def update(g, count, params=None):
        stale = -g + jnp.array([0.0, 1e4]) * jnp.linalg.norm(g)
        return jnp.where(count == 0, -g, stale), count + 1

    return optax.GradientTransformation(init, update)


def test_a_failed_line_search_from_a_stale_memory_restarts_from_the_gradient():
    obj = _Quadratic()
    x0 = np.array([1.0, 0.5])
    run = _Run(obj, x0.copy(), *obj.value_and_grad(x0), [], 10**9, 0.0)
    bar = SimpleNamespace(update=lambda n: None, set_postfix=lambda **kw: None)
    taken, converged, message = minimise(
        run, _stale_after_first_step(), line_search=True, steps=400, gtol=1e-6, ftol=0.0, max_step=1.0, bar=bar
    )
    assert converged, message
    np.testing.assert_allclose(run.x, [0.0, 0.0], atol=1e-6)
    assert run.f == pytest.approx(0.0, abs=1e-11)
    assert taken > 2 and math.isfinite(run.f)
