r"""Smooth relaxations of threshold tests: the one place they are defined.

A threshold test is a log-scale *margin* ``m``, positive when the event holds (``x < c`` has
``m = log c - log x``); "and" is the minimum of margins, "or" the maximum, "at any visit" the
smooth maximum :func:`smooth_max` ``T logsumexp(m / T)``, and the probability of the event is
``sigmoid(m / T)`` (:func:`indicator`).  ``T`` is a width on the log scale: T = 0.05 means the
indicator goes from 27% to 73% within +/-5% of the threshold.  ``T = 0`` gives the clinical
(hard) count.  As T -> 0 the smooth value converges to the hard one for every patient not
exactly at a threshold: it differs by at most ``exp(-|m| / T)``, and the smooth maximum over V
visits exceeds the maximum by at most ``T log V``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from scipy.special import log_ndtr as scipy_log_ndtr

#: How many times sharper than the threshold sigmoid the smooth maximum over visits is, where
#: smooth counts are fitted or optimised: its upward bias ``(T / sharpness) log V`` over V
#: visits is then a quarter of the plain one (at T = 0.05 and 30 visits about 4% on the log
#: scale instead of 17%), so a relaxed incidence tracks the clinical count it stands for.
VISIT_SHARPNESS = 4.0


def safe_log(x):
    """log(x), with x floored at 1e-300 so that a zero count gives a finite margin."""
    return jnp.log(jnp.maximum(x, 1e-300))


def margin_below(x, threshold):
    """Log margin of ``x < threshold`` (positive when it holds)."""
    return jnp.log(threshold) - safe_log(x)


def indicator(margin, temperature: float):
    """``sigmoid(margin / T)``, or the hard indicator ``margin > 0`` at ``T = 0``."""
    return jax.nn.sigmoid(margin / temperature) if temperature else (margin > 0) * 1.0


def smooth_max(margin, temperature: float, axis: int = -1):
    """``T logsumexp(margin / T)`` along ``axis`` (the maximum at ``T = 0``)."""
    return (
        temperature * jax.nn.logsumexp(margin / temperature, axis=axis) if temperature else jnp.max(margin, axis=axis)
    )


def below(x, threshold, temperature: float = 0.0):
    """Indicator of ``x < threshold`` (smooth for ``T > 0``)."""
    return indicator(margin_below(x, threshold), temperature)


def any_below(x, threshold, temperature: float = 0.0, *, axis: int = -1, sharpness: float = 1.0):
    """Whether any value along ``axis`` is below ``threshold``: ``sigmoid(M / T)`` with ``M`` the
    smooth maximum of the margins at width ``T / sharpness``.  A sharper maximum keeps its
    upward bias (at most ``(T / sharpness) log(visits)``) small, so a relaxed incidence tracks the
    hard one.  ``temperature`` may be a traced array (then it must be > 0)."""
    if isinstance(temperature, (int, float)) and temperature == 0:
        return jnp.any(jnp.asarray(x) < threshold, axis=axis) * 1.0
    m = margin_below(x, threshold)
    return jax.nn.sigmoid(jax.nn.logsumexp(m / (temperature / sharpness), axis=axis) / sharpness)


def _log_none_below(x, threshold, noise_sd: float, axis: int, host: bool):
    """``sum_v log Phi((log x_v - log threshold) / noise_sd)``: in JAX, or with ``host`` in numpy
    and scipy (host-side tables: no dispatch or compilation per array shape)."""
    if host:
        x = np.maximum(np.asarray(x, dtype=np.float64), 1e-300)
        return np.sum(scipy_log_ndtr((np.log(x) - np.log(threshold)) / noise_sd), axis=axis)
    z = (safe_log(x) - jnp.log(threshold)) / noise_sd
    return jnp.sum(log_ndtr(z), axis=axis)


def noisy_none_below(x, threshold, noise_sd: float, axis: int = -1, *, host: bool = False):
    """Probability that no *measured* value along ``axis`` is below ``threshold``, when a value
    ``x_v`` is measured as ``x_v exp(e_v)`` with independent ``e_v ~ N(0, noise_sd^2)`` (lab
    noise): ``prod_v Phi((log x_v - log threshold) / noise_sd)``, summed on the log scale.  It is
    smooth in ``x``, so it needs no temperature.  ``host``: numpy in and out."""
    xp = np if host else jnp
    return xp.exp(_log_none_below(x, threshold, noise_sd, axis, host))


def noisy_any_below(x, threshold, noise_sd: float, axis: int = -1, *, host: bool = False):
    """``1 -`` :func:`noisy_none_below`, as ``-expm1`` of its logarithm (exact for tiny
    probabilities)."""
    xp = np if host else jnp
    return -xp.expm1(_log_none_below(x, threshold, noise_sd, axis, host))
