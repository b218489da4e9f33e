"""A float64 natural logarithm that XLA's CPU backend can vectorise.

XLA CPU evaluates float64 ``log`` one element at a time, several times slower than ``exp``
(per-element costs on ``benchmarks/HISTORY.md``), and the logarithms of the right-hand side
(Friberg feedback and B-cell help) were then the costliest operations of a batched cohort solve.
:func:`log` computes the same function from ``frexp`` and an atanh series in straight-line
arithmetic, which XLA vectorises:

    x = m 2^e,  m in [sqrt(1/2), sqrt(2)),  s = (m - 1) / (m + 1)
    log x = e ln 2 + 2 atanh(s) = e ln 2 + 2 s (1 + s^2/3 + s^4/5 + ... + s^20/21)

|s| < 0.172, so the truncation error is below s^22 / 23 < 2e-18 relative to ``2 s``: the result
agrees with ``jnp.log`` to a few ulp (``tests/test_fastmath.py`` checks 4e-16 relative over
1e-300..1e300).  The derivative is ``1/x`` (a custom JVP), so forward and reverse
differentiation see the exact derivative of log.  0 gives ``-inf``, negative numbers and NaN give
NaN and ``+inf`` gives ``+inf``, as ``jnp.log`` does, so a failing solve is still detected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_LN2 = 0.6931471805599453
_SQRT_HALF = 0.7071067811865476
_ODD = (19, 17, 15, 13, 11, 9, 7, 5, 3)


@jax.custom_jvp
def log(x):
    """Natural logarithm of float64 ``x`` (elementwise), equal to ``jnp.log`` to a few ulp."""
    x = jnp.asarray(x)
    mant, e = jnp.frexp(x)  # x = mant 2^e, mant in [0.5, 1) for finite x > 0
    small = mant < _SQRT_HALF
    mant = jnp.where(small, mant * 2.0, mant)
    e = jnp.where(small, e - 1, e).astype(x.dtype)
    s = (mant - 1.0) / (mant + 1.0)
    s2 = s * s
    poly = 1.0 / 21.0
    for k in _ODD:
        poly = poly * s2 + 1.0 / k
    poly = poly * s2 + 1.0
    out = 2.0 * s * poly + e * _LN2
    # the edge cases of jnp.log: log 0 = -inf, log(+inf) = +inf, log(x < 0) = log(NaN) = NaN
    out = jnp.where(x == 0.0, -jnp.inf, out)
    out = jnp.where(x == jnp.inf, jnp.inf, out)
    return jnp.where(x < 0.0, jnp.nan, out)


@log.defjvp
def _log_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    return log(x), x_dot / x
